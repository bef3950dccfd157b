"""x-IMU3 over a pty: both message encodings, faults, unplug/replug, axes, contract."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from driver_contract import check_driver_contract
from emulators.ximu3 import XIMU3Emulator, ascii_inertial, binary_inertial

from labsuite.drivers.base import DriverRunner
from labsuite.drivers.ximu3 import XIMU3Driver, XIMU3Settings, decode_inertial, parse_axes, unstuff
from labsuite.errors import ConfigError, DeviceError

G = 9.80665


def test_binary_message_is_byte_exact_and_stuffed():
    # Timestamp 10 us contains 0x0A, which must travel as 0xDB 0xDC; accel x = 1.0 g = 0x3F800000.
    msg = binary_inertial(10, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    assert msg.hex() == ("c9" "dbdc00000000000000" + "00" * 12 + "0000803f" + "00" * 8 + "0a")
    ts, values = decode_inertial(msg[:-1])
    assert ts == 10 and values.tolist() == [0, 0, 0, 1, 0, 0]
    assert unstuff(b"\xdb\xdd\xdb\xdc") == b"\xdb\x0a"
    with pytest.raises(DeviceError, match=r"byte 2: expected 0xDC or 0xDD .* got 0x1"):
        unstuff(b"\xc9\xdb\x01")


def test_ascii_message_and_malformed_ones():
    ts, values = decode_inertial(ascii_inertial(2500, (1.5, -2.0, 0.25), (0.98, 0.01, -0.2))[:-1])
    assert ts == 2500 and np.allclose(values, [1.5, -2.0, 0.25, 0.98, 0.01, -0.2])
    with pytest.raises(DeviceError, match="expected 8 comma-separated fields, got 4"):
        decode_inertial(b"I,123,1.0,2.0\r")
    with pytest.raises(DeviceError, match="integer timestamp"):
        decode_inertial(b"I,x,1,2,3,4,5,6")
    assert decode_inertial(b"M,100,0.1,0.2,0.3") is None


def test_axes_mapping():
    rot = parse_axes("-z,y,x")
    assert np.array_equal(rot @ np.array([1.0, 2.0, 3.0]), [-3.0, 2.0, 1.0])
    with pytest.raises(ConfigError, match="exactly once"):
        parse_axes("x,x,z")
    with pytest.raises(ConfigError, match="'w' is not one of"):
        parse_axes("x,y,w")


@pytest.mark.parametrize("binary", [True, False])
def test_driver_contract(tmp_path, uid, binary):
    with XIMU3Emulator(tmp_path / "ttyIMU", binary=binary) as emu:
        emu.set_motion((90.0, 0.0, -45.0), (1.0, 0.5, 0.0))
        result = check_driver_contract(lambda: XIMU3Driver(XIMU3Settings(
            port=emu.port, source_id=uid, side="left", name=f"imu-{uid}")))
        assert emu.pings >= 1
    spec = result.read_back[0]
    assert spec.setup["sensor"]["location"] == "left distal tibia"
    mean = result.samples[0].mean(axis=0)
    assert np.allclose(mean, [G, 0.5 * G, 0, np.pi / 2, 0, -np.pi / 4], atol=1e-3)


def _wait_for(cond, timeout_s=15.0):
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_faults_and_unplug(tmp_path, uid):
    with XIMU3Emulator(tmp_path / "ttyIMU") as emu:
        drv = XIMU3Driver(XIMU3Settings(port=emu.port, source_id=uid, side="right", axes="-x,y,-z"))
        runner = DriverRunner(drv, reconnect_delay_s=0.2)
        got = []
        push = runner._push
        runner._push = lambda spec, chunk: (got.append(chunk), push(spec, chunk))
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        try:
            _wait_for(lambda: drv.health.frames_ok > 100)
            assert drv.device_info.get("serialNumber") == "EMU-0001"
            for k, fault in enumerate(("bad_escape", "short_binary"), start=1):
                emu.inject(fault)
                _wait_for(lambda k=k: drv.health.frames_bad >= k)
            emu.binary = False
            emu.inject("bad_ascii")
            _wait_for(lambda: drv.health.frames_bad >= 3)
            emu.inject("other")
            _wait_for(lambda: drv.health.extra["other_messages"] >= 1)
            emu.inject("skip4")
            _wait_for(lambda: drv.health.extra["frames_missing"] >= 7)
            assert drv.health.frames_bad == 3
            # Three rejected messages and four lost ones, each a hole in the sensor's clock.
            assert drv.health.extra["frames_missing"] == 7
            emu.inject("unplug")
            _wait_for(lambda: drv.health.reconnects >= 1)
            ok = drv.health.frames_ok
            _wait_for(lambda: drv.health.frames_ok > ok + 100)
        finally:
            runner.stop()
            thread.join(timeout=15)
        assert not thread.is_alive()
    ts = np.concatenate([c.timestamps for c in got])
    assert np.all(np.diff(ts) > 0)
    # Axes: sensor x (1 g) becomes tibia -x.
    assert got[-1].data[-1, 0] == pytest.approx(-G, abs=1e-3)
