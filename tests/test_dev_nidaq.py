"""NI DAQ force plates: settings and the volts -> N path here; the live task only with NI hardware."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from driver_contract import check_driver_contract
from emulators.serial_plate import G, point_load_channels

from labsuite.calibration import TareSettings, load_calibration, verify_known_load
from labsuite.drivers.nidaq import NIDAQPlateDriver, NIDAQPlateSettings
from labsuite.errors import ConfigError, DeviceError

REPO = Path(__file__).resolve().parents[1]
HAVE_NIDAQMX = importlib.util.find_spec("nidaqmx") is not None


@pytest.fixture(scope="module")
def cal8():
    return load_calibration(REPO / "calibration" / "example-8ch.yaml")


def test_settings_validated(cal8):
    with pytest.raises(ConfigError, match="terminal"):
        NIDAQPlateSettings(channels="Dev1/ai0:7", source_id="s", belt="single", calibration=cal8,
                           terminal="floating")
    with pytest.raises(ConfigError, match="min_voltage_v"):
        NIDAQPlateSettings(channels="Dev1/ai0:7", source_id="s", belt="single", calibration=cal8,
                           min_voltage_v=5, max_voltage_v=5)


def test_volts_tared_and_calibrated_with_an_8_channel_matrix(cal8):
    drv = NIDAQPlateDriver(NIDAQPlateSettings(channels="Dev1/ai0:7", source_id="s", belt="single",
                                              calibration=cal8, tare=TareSettings(duration_s=0.1)))
    rng = np.random.default_rng(2)
    offsets = rng.normal(0, 3, 8)
    drv.calibrator.start_tare()
    drv.process_volts(offsets + rng.normal(0, 0.05, (200, 8)))
    assert drv.health.extra["tare_ok"] == 1.0
    channels = point_load_channels(30.0, (0.1, -0.05), cal8.corners_m, cal8.origin_m)
    volts = np.linalg.lstsq(cal8.matrix, channels, rcond=None)[0] + offsets
    out = drv.process_volts(np.tile(volts, (50, 1)))
    result = verify_known_load(out, cal8, 30.0, (0.1, -0.05))
    # Exact but for the tare's own noise (0.05 V per channel averaged over 200 samples).
    assert result.force_n == pytest.approx(30 * G, abs=0.05)
    assert result.cop_error_m == pytest.approx(0.0, abs=1e-4)
    assert np.allclose(drv.calibrator.offsets, offsets, atol=0.02)


@pytest.mark.skipif(HAVE_NIDAQMX, reason="nidaqmx is installed; this checks the message when it is not")
def test_open_without_nidaqmx_says_how_to_install(cal8):
    drv = NIDAQPlateDriver(NIDAQPlateSettings(channels="Dev1/ai0:7", source_id="s", belt="single",
                                              calibration=cal8))
    with pytest.raises(DeviceError, match=r"pip install 'labsuite\[nidaq\]'"):
        drv.open()
    drv.close()


def _first_device() -> str | None:
    if not HAVE_NIDAQMX:
        return None
    import nidaqmx.system

    try:
        devices = list(nidaqmx.system.System.local().devices)
    except (OSError, nidaqmx.errors.DaqError):  # no NI-DAQmx runtime: no hardware to test
        return None
    return devices[0].name if devices else None


@pytest.mark.skipif(not HAVE_NIDAQMX, reason="nidaqmx (the nidaq extra) is not installed")
def test_driver_contract_on_real_hardware(uid):
    device = _first_device()
    if device is None:
        pytest.skip("nidaqmx is installed but no NI DAQ device is present")
    cal = load_calibration(REPO / "calibration" / "example-qtm-identity.yaml")
    check_driver_contract(lambda: NIDAQPlateDriver(NIDAQPlateSettings(
        channels=f"{device}/ai0:5", source_id=uid, belt="right", calibration=cal,
        tare=TareSettings(duration_s=0.5, max_fz_std_n=1e6, max_fz_offset_n=1e6))))
