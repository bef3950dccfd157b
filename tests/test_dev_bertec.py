"""Bertec treadmill: byte-exact packets, every command checked by a TCP emulator, faults, watchdog, CLI.

Also: feedback checked against the model (junk is never believed or echoed, a run of bad frames is
a device fault that stops the belt), and the model's hard ceilings.
"""

from __future__ import annotations

import struct
import threading
import time

import numpy as np
import pylsl
import pytest
from driver_contract import check_driver_contract
from emulators.bertec import BertecEmulator
from lsl_helpers import HeartbeatSender, plain_inlet

from labsuite.cli import main
from labsuite.drivers.base import DriverRunner
from labsuite.drivers.bertec import (
    BertecSettings,
    BertecTreadmill,
    decode_feedback,
    encode_command,
    parse_host_port,
)
from labsuite.drivers.treadmill import (
    BAD_FRAMES_FOR_FAULT,
    BERTEC_TREADMILL,
    FAULT_CLEAR_S,
    BeltState,
    TreadmillSettings,
    events_source_id,
)
from labsuite.errors import ConfigError, DeviceError
from labsuite.streams.contracts import commands_spec
from labsuite.streams.messages import command, decode

# Written out by hand from the layout in issue 7 (not produced by the encoder under test).
FIXTURES = [
    # right, left, accel, incline -> packet
    ((1.0, 1.0, 0.5, 0.0),
     "00" "03e803e803e803e8" "01f401f401f401f4" "0000"
     "fc17fc17fc17fc17" "fe0bfe0bfe0bfe0b" "ffff" + "00" * 27),
    ((1.25, 0.8, 1.0, 3.5),
     "00" "04e2032004e20320" "03e803e803e803e8" "015e"
     "fb1dfcdffb1dfcdf" "fc17fc17fc17fc17" "fea1" + "00" * 27),
    # Stopped belts with a requested acceleration of 0: sent as 1 mm/s^2, never 0. Negative incline.
    ((0.0, 0.0, 0.0, -1.5),
     "00" "0000000000000000" "0001000100010001" "ff6a"
     "ffffffffffffffff" "fffefffefffefffe" "0095" + "00" * 27),
]


@pytest.mark.parametrize(("args", "hexpacket"), FIXTURES)
def test_command_packets_are_byte_exact(args, hexpacket):
    packet = encode_command(*args)
    assert len(packet) == 64
    assert packet.hex() == hexpacket


def test_feedback_decoding_and_malformed_packets():
    good = bytes.fromhex("00" "04e2" "0320" "04e2" "0320" "015e") + bytes(21)
    state = decode_feedback(good)
    assert (state.right_m_s, state.left_m_s, state.incline_deg) == (1.25, 0.8, 3.5)
    with pytest.raises(DeviceError, match="expected 32 bytes, got 31"):
        decode_feedback(good[:31])
    with pytest.raises(DeviceError, match=r"byte 0 \(format\): expected 0, got 9"):
        decode_feedback(b"\x09" + good[1:])
    with pytest.raises(DeviceError, match=r"bytes 1\.\.2"):
        decode_feedback(b"\x00\x75\x30" + good[3:])


def test_encoder_rejects_values_outside_the_protocol():
    with pytest.raises(ConfigError, match="right_m_s"):
        encode_command(40.0, 1.0, 0.5, 0.0)
    with pytest.raises(ConfigError, match="incline_deg"):
        encode_command(1.0, 1.0, 0.5, float("nan"))
    assert parse_host_port("10.0.0.5:4000") == ("10.0.0.5", 4000)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_host_port("host:abc")


def _driver(emu: BertecEmulator, uid: str, **limits) -> BertecTreadmill:
    settings = TreadmillSettings(source_id=uid, name=f"bertec-{uid}", manufacturer="Bertec",
                                 max_speed_m_s=limits.pop("max_speed_m_s", 3.0), **limits)
    return BertecTreadmill(BertecSettings(host="127.0.0.1", port=emu.port, treadmill=settings))


def test_driver_contract_against_emulator(uid):
    with BertecEmulator(incline_deg=2.0) as emu:
        result = check_driver_contract(lambda: _driver(emu, uid))
        assert np.allclose(result.samples[0][:, 2], 2.0)
        assert emu.violations == []


def test_no_command_changes_the_incline_it_read(uid):
    with BertecEmulator(incline_deg=3.5) as emu:
        drv = _driver(emu, uid, max_speed_m_s=2.0)
        drv.open()
        try:
            drv.handle_command({"cmd": "speed", "right_m_s": 1.2, "left_m_s": 1.1, "accel_m_s2": 0.8})
            drv.handle_command({"cmd": "speed", "right_m_s": 9.0})  # clamped to 2.0
            drv.handle_command({"cmd": "speed", "right_m_s": 1.0, "accel_m_s2": 50.0})  # accel clamped
            drv.handle_command({"cmd": "speed", "right_m_s": 1.0, "accel_m_s2": 0.0})  # never 0
            drv.handle_command({"cmd": "stop"})
            drv.handle_command({"cmd": "emergency_stop"})
            drv.handle_command({"cmd": "heartbeat"})
            drv.on_idle(pylsl.local_clock() + 1.0)  # watchdog stop
            drv.handle_command({"cmd": "speed", "right_m_s": "fast"})  # rejected, nothing sent
            _wait_for(lambda: len(emu.commands) == 7)
            assert emu.violations == []
            assert [c.incline_cdeg for c in emu.commands] == [350] * 7
            speeds = [c.speeds_mm_s for c in emu.commands]
            accels = [c.accels_mm_s2[0] for c in emu.commands]
            assert speeds == [(1200, 1100, 1200, 1100), (2000,) * 4, (1000,) * 4, (1000,) * 4,
                              (0,) * 4, (0,) * 4, (0,) * 4]
            assert accels == [800, 500, 2000, 50, 1000, 3000, 1000]
            assert drv.health.extra["commands_rejected"] == 1
            assert drv.health.extra["watchdog_stops"] == 1
            # Only an incline command changes the incline; later commands keep the new one.
            drv.handle_command({"cmd": "heartbeat"})
            drv.handle_command({"cmd": "incline", "incline_deg": 5.0})
            _wait_for(lambda: emu.state()[2] == 5.0)
            drv.poll_state(0.1)
            _wait_for(lambda: drv.poll_state(0.05).incline_deg == 5.0)
            drv.handle_command({"cmd": "speed", "right_m_s": 0.5})
            _wait_for(lambda: len(emu.commands) == 9)
            assert [c.incline_cdeg for c in emu.commands[7:]] == [500, 500]
            assert emu.violations == []
        finally:
            drv.close()


def _wait_for(cond, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _run(drv, **kw):
    runner = DriverRunner(drv, reconnect_delay_s=0.2, **kw)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return runner, thread


def test_malformed_feedback_counted_and_disconnect_recovered(uid):
    with BertecEmulator(incline_deg=1.0) as emu:
        drv = _driver(emu, uid)
        events = []
        runner, thread = _run(drv, on_event=lambda k, t: events.append(k))
        got = []
        push = runner._push
        runner._push = lambda spec, chunk: (chunk.stream == 0 and got.append(chunk), push(spec, chunk))
        try:
            _wait_for(lambda: drv.health.frames_ok > 20)
            emu.inject("bad_format")
            emu.inject("bad_speed")
            _wait_for(lambda: drv.health.frames_bad >= 2)
            emu.inject("partial_then_drop")
            _wait_for(lambda: drv.health.reconnects >= 1 and emu.connections >= 2)
            emu.inject("drop")
            _wait_for(lambda: drv.health.reconnects >= 2 and emu.connections >= 3)
            ok_before = drv.health.frames_ok
            _wait_for(lambda: drv.health.frames_ok > ok_before + 20)
            assert drv.health.frames_bad == 3  # two malformed + the partial packet at the drop
            assert "device_lost" in events
            # The stream kept flowing through it all, with monotonic timestamps.
            ts = np.concatenate([c.timestamps for c in got])
            assert len(ts) > 10 and np.all(np.diff(ts) > 0)
        finally:
            runner.stop()
            thread.join(timeout=15)
        assert not thread.is_alive()
        assert emu.violations == []


def test_heartbeat_loss_stops_the_belt_ramped(uid):
    cmd_id = f"{uid}-commands"
    outlet = pylsl.StreamOutlet(commands_spec(cmd_id, name=f"cmd-{uid}").to_info())
    with BertecEmulator(incline_deg=0.0) as emu:
        drv = _driver(emu, uid)
        runner, thread = _run(drv, command_source_id=cmd_id)
        try:
            assert outlet.wait_for_consumers(30.0)
            outlet.push_sample([command("heartbeat", seq=0)])
            outlet.push_sample([command("speed", right_m_s=1.5, left_m_s=1.5, accel_m_s2=2.0)])
            seq = 1
            deadline = time.monotonic() + 10
            while emu.state()[0] < 1.5:
                assert time.monotonic() < deadline, "belt never reached 1.5 m/s"
                outlet.push_sample([command("heartbeat", seq=seq)])
                seq += 1
                time.sleep(0.1)
            t_silent = time.monotonic()
            _wait_for(lambda: emu.commands[-1].speeds_mm_s == (0, 0, 0, 0))
            assert time.monotonic() - t_silent < 3.0
            assert emu.commands[-1].accels_mm_s2[0] == 1000  # the ramped stop, not the emergency one
            assert drv.health.extra["watchdog_stops"] == 1
            # Ramped: the belt is still moving shortly after the stop was sent, then stops.
            assert emu.state()[0] > 0.5
            _wait_for(lambda: emu.state()[0] == 0.0)
        finally:
            runner.stop()
            thread.join(timeout=15)
        assert emu.violations == []


def test_hung_controller_is_treated_as_lost_and_reconnected(uid):
    with BertecEmulator() as emu:
        settings = TreadmillSettings(source_id=uid, name=f"bertec-{uid}", state_timeout_s=0.5)
        drv = BertecTreadmill(BertecSettings(host="127.0.0.1", port=emu.port, treadmill=settings))
        events = []
        runner, thread = _run(drv, on_event=lambda kind, text: events.append((kind, text)))
        try:
            _wait_for(lambda: drv.health.frames_ok > 20)
            emu.inject("silence")  # connection open, no feedback: a hung controller
            _wait_for(lambda: drv.health.reconnects >= 1)
            ok = drv.health.frames_ok
            _wait_for(lambda: drv.health.frames_ok > ok + 20)
        finally:
            runner.stop()
            thread.join(timeout=15)
        assert ("device_lost", f"treadmill 'bertec-{uid}': no valid state for 0.5 s") in events
        assert emu.violations == []


def test_a_stop_that_could_not_be_sent_is_sent_on_reconnect(uid):
    with BertecEmulator() as emu:
        drv = _driver(emu, uid)
        drv.open()
        drv.handle_command({"cmd": "speed", "right_m_s": 1.0, "accel_m_s2": 2.0})
        _wait_for(lambda: emu.state()[0] == 1.0)
        drv.close()  # the link is gone; the belt keeps running on the controller
        drv.handle_command({"cmd": "emergency_stop"})
        assert [e[1] for e in drv.events][-1] == "send_failed"
        with pytest.raises(DeviceError, match="not delivered"):
            drv.read(0.05)  # the runner learns of the lost device here and reconnects
        drv.open()
        try:
            _wait_for(lambda: emu.commands[-1].speeds_mm_s == (0, 0, 0, 0))
            assert [e[1] for e in drv.events][-1] == "stop_resent"
            _wait_for(lambda: emu.state()[0] == 0.0)
        finally:
            drv.close()
        assert emu.violations == []


def test_open_fails_clearly_when_nothing_listens(uid):
    with BertecEmulator() as emu:
        port = emu.port
    drv = BertecTreadmill(BertecSettings(host="127.0.0.1", port=port, connect_timeout_s=1.0,
                                         treadmill=TreadmillSettings(source_id=uid)))
    with pytest.raises(DeviceError, match="cannot connect"):
        drv.open()
    drv.close()


def test_cli_status_speed_stop(capsys):
    with BertecEmulator(incline_deg=4.0) as emu:
        assert main(["treadmill", "--bertec", emu.address, "status"]) == 0
        assert "incline 4.00 deg" in capsys.readouterr().out
        assert main(["treadmill", "--bertec", emu.address, "speed", "1.2"]) == 0
        assert main(["treadmill", "--bertec", emu.address, "speed", "1.0", "1.4"]) == 0
        assert main(["treadmill", "--bertec", emu.address, "--wait", "0.3", "stop"]) == 0
        out = capsys.readouterr().out
        assert "sent: right 1.200 m/s, left 1.200 m/s" in out
        assert "sent: right 1.400 m/s, left 1.000 m/s" in out
        _wait_for(lambda: len(emu.commands) == 3)
        assert [c.speeds_mm_s[:2] for c in emu.commands] == [(1200, 1200), (1400, 1000), (0, 0)]
        assert all(c.incline_cdeg == 400 for c in emu.commands)
        assert main(["treadmill", "--bertec", emu.address, "speed", "4"]) == 1
        assert "raise --max-speed" in capsys.readouterr().err
        assert emu.violations == []
        port = emu.port
    assert main(["treadmill", "--bertec", f"127.0.0.1:{port}", "status"]) == 1
    assert "cannot connect" in capsys.readouterr().err


# ---- feedback checked against the model ------------------------------------------------------

def _feedback(right_mm_s=0, left_mm_s=0, rear=(0, 0), incline_cdeg=0, fmt=0) -> bytes:
    """A feedback packet laid out by hand (module docstring of drivers/bertec.py)."""
    return bytes([fmt]) + struct.pack(">5h", right_mm_s, left_mm_s, *rear, incline_cdeg) + bytes(21)


def test_every_feedback_field_is_range_checked_against_the_model():
    # The frame the issue saw believed: 8.3 m/s and a 282.75 deg incline.
    with pytest.raises(DeviceError, match=r"bytes 1\.\.2 \(right_m_s\): 8\.300 m/s is outside .*-2\.\.6\.5"):
        decode_feedback(_feedback(8300, 1000, incline_cdeg=28275))
    with pytest.raises(DeviceError, match=r"bytes 9\.\.10 \(incline_deg\): 282\.75 deg is outside"):
        decode_feedback(_feedback(3000, 3000, rear=(3000, 3000), incline_cdeg=28275))
    with pytest.raises(DeviceError, match=r"bytes 3\.\.4 \(left_m_s\): -2\.500 m/s"):
        decode_feedback(_feedback(1000, -2500))
    with pytest.raises(DeviceError, match=r"bytes 7\.\.8 \(left_rear_m_s\)"):
        decode_feedback(_feedback(1000, 1000, rear=(1000, 7000)))
    state = decode_feedback(_feedback(6500, -2000, rear=(6500, -2000), incline_cdeg=-1500))
    assert (state.right_m_s, state.left_m_s, state.incline_deg) == (6.5, -2.0, -15.0)
    # Between frames: at most 10 m/s^2 * dt + 0.3 m/s, 5 deg/s * dt + 0.5 deg.
    before = BeltState(3.0, 3.0, 2.0)
    assert BERTEC_TREADMILL.change_problem(BeltState(3.29, 2.71, 2.49), before, 0.0) is None
    assert BERTEC_TREADMILL.change_problem(BeltState(3.39, 3.0, 2.0), before, 0.01) is None
    name, text = BERTEC_TREADMILL.change_problem(BeltState(3.41, 3.0, 2.0), before, 0.01)
    assert name == "right_m_s" and "3.000 -> 3.410 m/s in 0.010 s" in text
    name, _ = BERTEC_TREADMILL.change_problem(BeltState(3.0, 3.0, 2.6), before, 0.01)
    assert name == "incline_deg"
    assert BERTEC_TREADMILL.change_problem(BeltState(3.0, 3.0, 4.0), before, 0.31) is None


def test_a_junk_controller_is_never_believed_nor_echoed_by_the_cli(capsys):
    # A Bertec-speaking server that sends only random 32-byte packets (format byte 0).
    with BertecEmulator(junk_only=True) as emu:
        for action in (["status"], ["speed", "1"], ["stop"]):
            assert main(["treadmill", "--bertec", emu.address, *action]) == 1
            err = capsys.readouterr().err
            assert "no valid state received" in err and "invalid frames, the last: Bertec feedback" in err
        assert len(emu.junk_sent) > 100
        assert emu.commands == [] and emu.violations == []


def _events(inlet) -> list[dict]:
    chunk, _ = inlet.pull_chunk(timeout=0.0)
    return [decode(row[0]) for row in chunk]


def test_junk_frames_are_never_echoed_and_a_run_of_them_is_a_fault(uid):
    cmd_id = f"{uid}-commands"
    outlet = pylsl.StreamOutlet(commands_spec(cmd_id, name=f"cmd-{uid}").to_info())
    with BertecEmulator(incline_deg=3.0) as emu:
        drv = _driver(emu, uid)
        runner, thread = _run(drv, command_source_id=cmd_id)
        try:
            events = plain_inlet(events_source_id(uid), timeout_s=30)
            assert outlet.wait_for_consumers(30.0)
            with HeartbeatSender(outlet):
                outlet.push_sample([command("speed", right_m_s=1.5, left_m_s=1.5, accel_m_s2=2.0)])
                _wait_for(lambda: emu.state()[0] == 1.5)
                # One short of the documented count: counted, ignored, no fault.
                bad = drv.health.frames_bad
                emu.inject("junk", BAD_FRAMES_FOR_FAULT - 1)
                _wait_for(lambda: drv.health.frames_bad == bad + BAD_FRAMES_FOR_FAULT - 1)
                # Plausible speeds, impossible changes: bad too; isolated, so no fault either.
                for fault, n_bad in (("speed_jump", BAD_FRAMES_FOR_FAULT), ("incline_jump",
                                                                            BAD_FRAMES_FOR_FAULT + 1)):
                    ok = drv.health.frames_ok
                    _wait_for(lambda ok=ok: drv.health.frames_ok > ok + 3)
                    emu.inject(fault)
                    _wait_for(lambda n_bad=n_bad: drv.health.frames_bad == bad + n_bad)
                outlet.push_sample([command("speed", right_m_s=1.6, left_m_s=1.6)])
                _wait_for(lambda: emu.state()[0] == 1.6)
                assert drv.health.extra["feedback_faults"] == 0
                assert emu.connections == 1 and drv.health.reconnects == 0
                # The documented count in a row: a device fault.
                emu.inject("junk", BAD_FRAMES_FOR_FAULT)
                _wait_for(lambda: drv.health.extra["feedback_faults"] == 1)
                assert drv.health.frames_bad == bad + 2 * BAD_FRAMES_FOR_FAULT + 1
                _wait_for(lambda: emu.commands[-1].speeds_mm_s == (0, 0, 0, 0))
                assert emu.commands[-1].accels_mm_s2[0] == 1000  # the ramped stop
                _wait_for(lambda: drv.health.reconnects == 1 and emu.connections == 2)
                # Refused while in fault, accepted after FAULT_CLEAR_S of valid feedback.
                rejected = drv.health.extra["commands_rejected"]
                outlet.push_sample([command("speed", right_m_s=1.0, left_m_s=1.0)])
                _wait_for(lambda: drv.health.extra["commands_rejected"] == rejected + 1)
                _wait_for(lambda: drv.fault is None, timeout_s=FAULT_CLEAR_S + 10)
                outlet.push_sample([command("speed", right_m_s=1.0, left_m_s=1.0)])
                _wait_for(lambda: emu.commands[-1].speeds_mm_s[0] == 1000)
                seen: list[dict] = []
                _wait_for(lambda: (seen.extend(_events(events)),
                                   "treadmill_feedback_restored" in [e["event"] for e in seen])[1])
        finally:
            runner.stop()
            thread.join(timeout=15)
    assert not thread.is_alive()
    # Never echoed: every command carries the incline validly read, none from a junk frame.
    junk_inclines = {struct.unpack(">h", j[9:11])[0] for j in emu.junk_sent} - {300}
    assert [c.incline_cdeg for c in emu.commands] == [300] * len(emu.commands)
    assert not junk_inclines & {c.incline_cdeg for c in emu.commands}
    speeds = [c.speeds_mm_s[0] for c in emu.commands]
    assert speeds.count(0) >= 1 and max(speeds) == 1600
    assert emu.violations == []
    kinds = [e["event"] for e in seen]
    fault = next(e for e in seen if e["event"] == "treadmill_feedback_fault")
    assert fault["safety_stop"] is True and fault["bad_frames"] == BAD_FRAMES_FOR_FAULT
    assert "invalid feedback frames in a row (last: Bertec feedback bytes" in fault["detail"]
    assert kinds.index("treadmill_feedback_fault") < kinds.index("treadmill_stop_resent") \
        < kinds.index("treadmill_command_rejected") < kinds.index("treadmill_feedback_restored")
    assert kinds.count("treadmill_connected") == 1  # the first one was published before we listened


def test_the_sessions_last_heartbeat_stands_the_watchdog_down(uid):
    with BertecEmulator() as emu:
        drv = _driver(emu, uid)
        drv.open()
        try:
            # Belt stopped: the session says goodbye, nothing is sent, no watchdog stop follows.
            drv.handle_command({"cmd": "heartbeat", "seq": 1})
            drv.handle_command({"cmd": "heartbeat", "seq": 2, "end": True})
            drv.on_idle(pylsl.local_clock() + 5.0)
            assert emu.commands == [] and drv.health.extra["watchdog_stops"] == 0
            ended = [json for _, json in drv.take_events() if "session_ended" in json]
            assert len(ended) == 1 and '"safety_stop":false' in ended[0]
            # Belt moving: the goodbye stops it at once (no session is left to watch it).
            drv.handle_command({"cmd": "heartbeat", "seq": 1})
            drv.handle_command({"cmd": "speed", "right_m_s": 1.0, "accel_m_s2": 2.0})
            _wait_for(lambda: drv.poll_state(0.05).right_m_s == 1.0)
            drv.handle_command({"cmd": "heartbeat", "seq": 2, "end": True})
            _wait_for(lambda: emu.commands[-1].speeds_mm_s == (0, 0, 0, 0))
            assert emu.commands[-1].accels_mm_s2[0] == 1000  # ramped
            drv.on_idle(pylsl.local_clock() + 5.0)
            assert drv.health.extra["watchdog_stops"] == 0
            ended = [json for _, json in drv.take_events() if "session_ended" in json]
            assert len(ended) == 1 and '"safety_stop":true' in ended[0]
        finally:
            drv.close()
        assert emu.violations == []
