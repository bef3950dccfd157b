"""The treadmill's heartbeat watchdog with a real session process and a real driver.

A session that is frozen (SIGSTOP) or killed (SIGKILL) stops the belt within the watchdog's
0.5 s of its last heartbeat plus one driver tick. The belt is a Bertec emulator over TCP; times
are the heartbeats' own send times (their LSL time stamps, read by a plain pylsl client) and the
moment the stop command reached the emulator.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pylsl
import pytest
from emulators.bertec import BertecEmulator
from lsl_helpers import plain_inlet

from labsuite import ids
from labsuite.drivers.base import DriverRunner
from labsuite.drivers.bertec import BertecSettings, BertecTreadmill
from labsuite.drivers.treadmill import TreadmillSettings, events_source_id
from labsuite.streams.messages import HEARTBEAT_TIMEOUT_S, decode

pytestmark = pytest.mark.slow

STATE_RATE_HZ = 50.0
TICK_S = 1.0 / STATE_RATE_HZ  # one driver loop turn: the driver reads until its next state tick
WIRE_S = 0.01  # the TCP hop and the emulator's own loop

SESSION = r"""
import sys, time
from labsuite.protocol.schema import parse_protocol
from labsuite.protocol.session import Session, SessionSettings
from labsuite.streams.messages import command

lab = sys.argv[1]
protocol = parse_protocol('''schema: labsuite-protocol/1
name: hb
speed_m_s: 1.0
stages:
  - {name: base, kind: baseline, duration_s: 600}
''')
session = Session(protocol, SessionSettings(lab_id=lab, participant_id="P1", steps_source_id=f"{lab}-steps"))
session.open()  # the heartbeat runs from here on
sys.stdin.readline()  # the test says when the treadmill listens
# set the belt going through the session's own command outlet, as its stage machine would
session._commands.push_sample([command("speed", right_m_s=1.0, left_m_s=1.0, accel_m_s2=2.0)])
print("ready", flush=True)
time.sleep(600)
"""


def _wait_for(cond, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class _Recorder:
    """Every sample of a stream, with its LSL time stamp, from a plain pylsl inlet on a thread."""

    def __init__(self, source_id: str) -> None:
        self.inlet = plain_inlet(source_id, timeout_s=30)
        self.samples: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                chunk, stamps = self.inlet.pull_chunk(timeout=0.05)
            except pylsl.util.LostError:
                return  # the process that published it was killed: everything it sent is here
            self.samples += [(t, decode(row[0])) for t, row in zip(stamps, chunk, strict=True)]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _treadmill(emu: BertecEmulator, uid: str) -> BertecTreadmill:
    return BertecTreadmill(BertecSettings(host="127.0.0.1", port=emu.port, treadmill=TreadmillSettings(
        source_id=uid, name=f"bertec-{uid}", manufacturer="Bertec", state_rate_hz=STATE_RATE_HZ)))


@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGKILL])
def test_a_frozen_or_killed_session_stops_the_belt_within_the_timeout(uid, sig):
    lab = uid.replace("test-", "hb-")
    with BertecEmulator() as emu:
        drv = _treadmill(emu, uid)
        runner = DriverRunner(drv, command_source_id=ids.commands_source_id(lab))
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        session = subprocess.Popen([sys.executable, "-c", SESSION, lab], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        heartbeats = events = None
        try:
            heartbeats = _Recorder(ids.commands_source_id(lab))
            events = _Recorder(events_source_id(uid))
            _wait_for(lambda: drv.health.extra["heartbeats"] > 3, timeout_s=60)
            assert session.stdin is not None and session.stdout is not None
            session.stdin.write("go\n")
            session.stdin.flush()
            assert session.stdout.readline().strip() == "ready"
            _wait_for(lambda: emu.state()[0] == 1.0)
            time.sleep(1.0)
            os.kill(session.pid, sig)
            _wait_for(lambda: emu.commands[-1].speeds_mm_s == (0, 0, 0, 0), timeout_s=10)
            stop = emu.commands[-1]
            time.sleep(0.3)
        finally:
            session.kill()
            session.wait(10)
            for pipe in (session.stdin, session.stdout):
                if pipe is not None:
                    pipe.close()
            runner.stop()
            thread.join(15)
            for rec in (heartbeats, events):
                if rec is not None:
                    rec.stop()
    sent = [t for t, c in heartbeats.samples if c.get("cmd") == "heartbeat"]
    assert len(sent) > 10
    delay = stop.at_s - max(sent)
    assert HEARTBEAT_TIMEOUT_S < delay <= HEARTBEAT_TIMEOUT_S + TICK_S + WIRE_S, delay
    assert stop.accels_mm_s2[0] == 1000  # the ramped stop
    stops = [c for _, c in events.samples if c.get("event") == "treadmill_watchdog_stop"]
    assert len(stops) == 1 and stops[0]["safety_stop"] is True
    assert drv.health.extra["watchdog_stops"] == 1
    assert emu.violations == []
