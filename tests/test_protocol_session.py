"""The session role over real LSL on loopback: the test plays processor, force plate and treadmill."""

from __future__ import annotations

import threading
import time

import numpy as np
import pylsl
import pytest

from labsuite.errors import ConfigError
from labsuite.protocol.operator import OperatorConsole, operator_command, parse_operator_command
from labsuite.protocol.schema import parse_protocol
from labsuite.protocol.session import Session, SessionSettings
from labsuite.stages import StageRecord
from labsuite.steps import empty_steps, steps_to_rows
from labsuite.streams import messages as msg
from labsuite.streams.contracts import force_plate_spec, steps_spec

PROTOCOL = """\
schema: labsuite-protocol/1
name: lsl-test
speed_m_s: 2.0
safety: {accel_m_s2: 2.0, no_contact_timeout_s: 5.0}
checkins: {at_start: false, at_stage_boundaries: false}
stages:
  - {name: base, kind: baseline, duration_s: 3, measure_last_steps: 5}
  - {name: up, kind: cadence, duration_s: 60, target_percent: 5, cues: {metronome: {spm: target}}}
  - {name: cool, kind: retention, duration_s: 60}
"""


class FakeLab:
    """At the wire: a step outlet (the processor), a plate outlet, a command inlet (the treadmill)."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self.steps_out = pylsl.StreamOutlet(steps_spec(f"{uid}-steps").to_info())
        corners = np.array([[0.9, 0, 0], [-0.9, 0, 0], [-0.9, 0.5, 0], [0.9, 0.5, 0]])
        self.plate_out = pylsl.StreamOutlet(force_plate_spec(
            f"{uid}-fp", belt="single", corners_m=corners, origin_m=(0, 0, -0.04),
            calibration_id="test", rate_hz=500.0).to_info())
        self.commands: list[tuple[float, dict]] = []
        self.markers: list[tuple[float, dict]] = []
        self.force_on = threading.Event()
        self.force_on.set()
        self.stepping = threading.Event()
        self.stepping.set()
        self.last_force_push = 0.0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._force, daemon=True),
                         threading.Thread(target=self._steps, daemon=True),
                         threading.Thread(target=self._listen, daemon=True)]
        for t in self._threads:
            t.start()

    def _force(self) -> None:
        while not self._stop.wait(0.01):
            if self.force_on.is_set():
                now = pylsl.local_clock()
                chunk = np.zeros((5, 6), dtype=np.float32)
                chunk[:, 2] = 686.0
                self.plate_out.push_chunk(chunk, now)
                self.last_force_push = now

    def _steps(self) -> None:
        n = 0
        while not self._stop.wait(60.0 / 160):
            if not self.stepping.is_set():
                continue
            s = empty_steps(1)
            n += 1
            s["foot"] = n % 2
            s["strike_s"] = pylsl.local_clock() - 0.1
            s["step_s"] = 60.0 / 160
            s["cadence_spm"] = 160.0
            s["valr_bw_per_s"] = 70.0
            s["crossover"] = 0
            self.steps_out.push_chunk(steps_to_rows(s))

    def _listen(self) -> None:
        # one continuous resolver: concurrent one-shot resolves in one process miss streams
        resolver = pylsl.ContinuousResolver()
        inlets = {}
        while not self._stop.wait(0.005):
            for kind in ("commands", "markers"):
                if kind not in inlets:
                    found = [i for i in resolver.results()
                             if i.source_id() == f"labsuite-session-{self.uid}-{kind}"]
                    if found:
                        inlet = pylsl.StreamInlet(found[0], recover=False)
                        try:
                            inlet.open_stream(5.0)
                        except pylsl.util.LostError:  # a stream of a session already closed
                            continue
                        inlets[kind] = inlet
                        continue
                if kind in inlets:
                    try:
                        samples, ts = inlets[kind].pull_chunk(timeout=0.0)
                    except pylsl.util.LostError:  # the session closed its outlets
                        del inlets[kind]
                        continue
                    target = self.commands if kind == "commands" else self.markers
                    target.extend((t, msg.decode(s[0])) for s, t in zip(samples, ts, strict=True))

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def cmds(self, name):
        return [(t, c) for t, c in list(self.commands) if c.get("cmd") == name]

    def events(self, name):
        return [(t, m) for t, m in list(self.markers) if m.get("event") == name]


def wait_for(cond, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.fixture
def rig(uid):
    yield from make_rig(uid, PROTOCOL)


def make_rig(uid, text):
    lab = FakeLab(uid)
    session = Session(parse_protocol(text), SessionSettings(
        lab_id=uid, participant_id="P01", steps_source_id=f"{uid}-steps",
        force_source_ids=(f"{uid}-fp",), auto_start="--auto-start", settle_s=0.5))
    session.open()
    missing = session.wait_ready(60.0)
    assert missing == [], (missing, session.log)
    assert wait_for(lambda: lab.cmds("heartbeat"), 30)
    assert wait_for(lambda: len(lab.markers) >= 0 and session._markers.have_consumers(), 30)
    yield lab, session
    session.close()
    lab.close()


def test_session_runs_stages_publishes_markers_heartbeat_and_pauses_for_lost_force_data(rig):
    lab, session = rig
    session.start()
    assert wait_for(lambda: lab.events("stage_start") and len(lab.events("stage_start")) == 2, 60)
    assert session.machine.baseline_cadence_spm == pytest.approx(160.0, rel=0.01)
    assert wait_for(lambda: len(lab.events("beat")) >= 5, 30)
    beats = np.array([t for t, _ in lab.events("beat")])
    assert np.allclose(np.diff(beats), 60 / 168.0, atol=1e-6)  # timestamps are the beat times
    speed = lab.cmds("speed")[0][1]
    assert speed["right_m_s"] == 2.0 and speed["accel_m_s2"] == 2.0
    # the heartbeat: every 0.1 s on the LSL clock
    hb = np.array([t for t, _ in lab.cmds("heartbeat")])
    assert 0.08 < np.median(np.diff(hb)) < 0.13
    # force data stop: the belt is stopped and the stop logged
    lab.force_on.clear()
    time.sleep(0.05)
    last = lab.last_force_push
    assert wait_for(lambda: lab.cmds("stop"), 30)
    t_stop, stop = lab.cmds("stop")[-1]
    assert stop["reason"] == "force_timeout"
    delay = t_stop - last
    print(f"force watchdog: stop command {delay * 1000:.0f} ms after the last force sample")
    assert 0.4 <= delay < 1.0  # 0.4 s timeout plus a tick; generous for a loaded machine
    # a dead plate pauses the session, it does not end it
    assert wait_for(lambda: lab.events("safety_stop") and lab.events("paused"), 10)
    assert lab.events("paused")[-1][1]["reason"] == "force_timeout"
    assert lab.events("safety_stop")[-1][1]["device"] == "force"
    assert any("force_timeout" in text for _, text in session.log)
    lab.force_on.set()  # the driver is back: the operator is asked, then resumes
    assert wait_for(lambda: lab.events("device_back") and lab.events("operator_decision_required"), 10)
    assert not lab.events("session_end") and not lab.events("resumed")
    session.resume(source="test")
    assert wait_for(lambda: lab.events("resumed"), 10)
    session.device_lost("processor", "the processor process exited")  # as the supervisor reports
    assert wait_for(lambda: any(m.get("device") == "processor" for _, m in lab.events("safety_stop")), 10)
    session.abort(source="test")
    assert wait_for(lambda: lab.events("session_end"), 10)
    assert lab.events("session_end")[-1][1]["reason"] == "aborted"
    recs = [StageRecord.from_marker(m) for _, m in lab.events("stage_end")]
    assert [r.end_reason for r in recs] == ["time", "aborted"]
    assert session.heartbeats > 0
    # closing: one last heartbeat says so, and the treadmill's watchdog stands down
    assert not [c for _, c in lab.cmds("heartbeat") if c.get("end")]
    session.close()
    assert wait_for(lambda: [c for _, c in lab.cmds("heartbeat") if c.get("end") is True], 10)


def test_operator_stream_drives_the_session_and_emergency_stop_is_immediate(rig, uid):
    lab, session = rig
    console = OperatorConsole(uid, source="gui")
    assert console.wait_for_session(30)
    session.start()
    assert wait_for(lambda: lab.events("stage_start"), 30)
    console.pause()
    assert wait_for(lambda: lab.events("paused"), 30)
    assert lab.cmds("stop")
    console.resume()
    assert wait_for(lambda: lab.events("resumed"), 30)
    assert wait_for(lambda: len(lab.events("stage_start")) == 2, 30)
    console.skip()
    assert wait_for(lambda: len(lab.events("stage_start")) == 3, 30)
    assert StageRecord.from_marker(lab.events("stage_end")[-1][1]).end_reason == "skipped"
    console.request_checkin()
    assert wait_for(lambda: lab.events("checkin_request"), 30)
    cid = lab.events("checkin_request")[-1][1]["id"]
    console.pain(1, cid)
    assert wait_for(lambda: lab.events("checkin"), 30)
    assert lab.events("checkin")[-1][1]["pain"] == 1
    ops = [m["action"] for _, m in lab.events("operator")]
    assert ops[:4] == ["pause", "resume", "skip", "checkin"]
    assert all(m["source"] == "gui" for _, m in lab.events("operator"))
    t_sent = pylsl.local_clock()
    console.emergency_stop()
    assert wait_for(lambda: lab.cmds("emergency_stop"), 30)
    t_cmd = lab.cmds("emergency_stop")[0][0]
    print(f"emergency stop over the operator stream: {1000 * (t_cmd - t_sent):.1f} ms")
    assert t_cmd - t_sent < 1.0
    assert wait_for(lambda: lab.events("session_end"), 10)
    assert lab.events("session_end")[-1][1]["reason"] == "emergency_stop"
    console.close()


def test_emergency_stop_from_the_api_goes_out_before_anything_else(rig):
    lab, session = rig
    session.start()
    assert wait_for(lambda: lab.events("stage_start"), 30)
    t = session.emergency_stop(source="test")
    assert wait_for(lambda: lab.cmds("emergency_stop"), 30)
    assert lab.cmds("emergency_stop")[0][0] == pytest.approx(t, abs=1e-6)
    assert len(lab.cmds("emergency_stop")) == 1
    assert session.wait(10)
    assert session.machine.end_reason == "emergency_stop"


@pytest.fixture
def long_baseline_rig(uid):
    yield from make_rig(uid, PROTOCOL.replace("duration_s: 3,", "duration_s: 60,"))


def test_no_contact_watchdog_over_lsl(long_baseline_rig):
    lab, session = long_baseline_rig
    lab.stepping.clear()
    session.start()
    # 1 s ramp + 5 s without a foot contact
    assert wait_for(lambda: lab.events("safety_stop"), 60)
    assert lab.events("safety_stop")[0][1]["reason"] == "no_contact"


def test_operator_commands_are_validated():
    assert parse_operator_command(operator_command("pain", pain=3))["pain"] == 3
    for bad in ('{"op":"dance"}', '{"op":"pain","pain":11}', "[1,2]", '{"op":"pain"}'):
        with pytest.raises(ConfigError, match="operator command"):
            parse_operator_command(bad)
    with pytest.raises(ConfigError):
        operator_command("pain", pain=True)


def test_settings_reject_a_real_name_as_participant():
    with pytest.raises(ConfigError, match="participant id"):
        SessionSettings(lab_id="x", participant_id="Jane Doe", steps_source_id="s")
    with pytest.raises(ConfigError, match="lab_id"):
        SessionSettings(lab_id="../x", participant_id="P1", steps_source_id="s")
