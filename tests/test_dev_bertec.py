"""Bertec treadmill: byte-exact packets, every command checked by a TCP emulator, faults, watchdog, CLI."""

from __future__ import annotations

import threading
import time

import numpy as np
import pylsl
import pytest
from driver_contract import check_driver_contract
from emulators.bertec import BertecEmulator

from labsuite.cli import main
from labsuite.drivers.base import DriverRunner
from labsuite.drivers.bertec import (
    BertecSettings,
    BertecTreadmill,
    decode_feedback,
    encode_command,
    parse_host_port,
)
from labsuite.drivers.treadmill import TreadmillSettings
from labsuite.errors import ConfigError, DeviceError
from labsuite.streams.contracts import commands_spec
from labsuite.streams.messages import command

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
        runner._push = lambda spec, chunk: (got.append(chunk), push(spec, chunk))
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
        assert ("device_lost", f"treadmill 'bertec-{uid}': no state for 0.5 s") in events
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
        assert main(["treadmill", "--bertec", emu.address, "speed", "7"]) == 1
        assert "raise --max-speed" in capsys.readouterr().err
        assert emu.violations == []
        port = emu.port
    assert main(["treadmill", "--bertec", f"127.0.0.1:{port}", "status"]) == 1
    assert "cannot connect" in capsys.readouterr().err
