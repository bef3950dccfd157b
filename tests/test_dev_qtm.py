"""QTM force plates through qtm-rt against a QTM RT server emulator on loopback."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from driver_contract import check_driver_contract
from emulators.qtm import QTMEmulator
from emulators.serial_plate import G, point_load_channels

from labsuite.calibration import TareSettings, load_calibration, verify_known_load
from labsuite.drivers.base import DriverRunner
from labsuite.drivers.qtm import QTMPlateDriver, QTMPlateSettings
from labsuite.errors import ConfigError, DeviceError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cal():
    return load_calibration(REPO / "calibration" / "example-qtm-identity.yaml")


def _settings(emu, uid, cal, **kw):
    return QTMPlateSettings(host="127.0.0.1", port=emu.port, source_id=uid, belt="right",
                            calibration=cal, plate_id=kw.pop("plate_id", 2), name=f"qtm-{uid}",
                            tare=TareSettings(duration_s=0.3), **kw)


def test_settings_validated(cal):
    with pytest.raises(ConfigError, match="plate_id"):
        QTMPlateSettings(host="h", source_id="s", belt="left", calibration=cal, plate_id=0)
    eight = load_calibration(REPO / "calibration" / "example-8ch.yaml")
    with pytest.raises(ConfigError, match="expected a 6x6 matrix"):
        QTMPlateSettings(host="h", source_id="s", belt="left", calibration=eight)


def test_driver_contract(cal, uid):
    with QTMEmulator() as emu:
        result = check_driver_contract(lambda: QTMPlateDriver(_settings(emu, uid, cal)))
        assert any(c.lower().startswith("streamframes allframes force") for c in emu.commands)
        assert any(c.lower() == "getparameters force" for c in emu.commands)
    assert result.read_back[0].setup["force_platform"]["calibration_id"] == cal.calibration_id


def test_wrong_plate_or_rate_is_a_clear_error(cal, uid):
    with QTMEmulator(plate_ids=(1,)) as emu:
        drv = QTMPlateDriver(_settings(emu, uid, cal, plate_id=3))
        with pytest.raises(DeviceError, match=r"no force plate 3; its plates are \['1'\]"):
            drv.open()
        drv.close()
        drv = QTMPlateDriver(_settings(emu, uid, cal, plate_id=1, rate_hz=2000.0))
        with pytest.raises(DeviceError, match="streams at 1000 Hz but the lab file says rate_hz 2000"):
            drv.open()
        drv.close()
    drv = QTMPlateDriver(_settings(emu, uid, cal, connect_timeout_s=1.0))
    with pytest.raises(DeviceError, match="cannot connect"):
        drv.open()
    drv.close()


def _wait_for(cond, timeout_s=15.0):
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_malformed_frames_skipped_disconnect_recovered_and_known_load(cal, uid):
    with QTMEmulator() as emu:
        drv = QTMPlateDriver(_settings(emu, uid, cal))
        runner = DriverRunner(drv, reconnect_delay_s=0.2)
        got = []
        push = runner._push
        runner._push = lambda spec, chunk: (got.append(chunk), push(spec, chunk))
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        try:
            _wait_for(lambda: drv.health.extra["tare_ok"] == 1.0)
            for k, fault in enumerate(("truncated", "unknown_plate", "nan"), start=1):
                emu.inject(fault)
                _wait_for(lambda k=k: drv.health.frames_bad >= k)
            assert drv.health.frames_bad == 3
            # Each rejected frame left a hole of 10 samples that stays visible in time.
            _wait_for(lambda: drv.health.extra["frames_missing"] >= 30)
            emu.inject("skip")
            _wait_for(lambda: drv.health.extra["frames_missing"] >= 60)
            assert drv.health.extra["frames_missing"] == 60
            emu.inject("drop")
            _wait_for(lambda: drv.health.reconnects >= 1 and emu.connections >= 2)
            ok = drv.health.frames_ok
            _wait_for(lambda: drv.health.frames_ok > ok + 20)
            # A known mass on plate 2 after the reconnect (the tare is kept).
            ch = point_load_channels(40.0, (0.2, -0.1), cal.corners_m, cal.origin_m)
            emu.set_channels(2, ch)
            time.sleep(0.3)
            n = len(got)
            _wait_for(lambda: len(got) > n + 30)
            data = np.concatenate([c.data for c in got[n + 5:]]).astype(float)
        finally:
            runner.stop()
            thread.join(timeout=15)
        assert not thread.is_alive()
    ts = np.concatenate([c.timestamps for c in got])
    assert np.all(np.diff(ts) > 0)
    result = verify_known_load(data, cal, 40.0, (0.2, -0.1))
    assert result.passed, result
    assert result.force_n == pytest.approx(40 * G, abs=1.0)


def test_a_connection_that_timed_out_is_closed_before_the_next_attempt(cal, uid):
    """A QTM that accepts but never answers: the failed attempt must not leave its socket open."""
    with QTMEmulator() as emu:
        emu.inject("mute")
        drv = QTMPlateDriver(_settings(emu, uid, cal, connect_timeout_s=0.5))
        with pytest.raises(DeviceError):
            drv.open()
        drv.close()
        deadline = time.monotonic() + 5.0
        while emu.mute_closed == 0:
            assert time.monotonic() < deadline, "the timed-out connection was left open"
            time.sleep(0.05)
        drv.open()  # the emulator serves the next client: the driver connects
        try:
            deadline = time.monotonic() + 10.0
            while not drv.read(0.1):
                assert time.monotonic() < deadline
        finally:
            drv.close()
