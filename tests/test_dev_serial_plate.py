"""Serial force plate (LSFP over a pty): frames, CRC, faults, disconnect/reconnect, tare, contract."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from driver_contract import check_driver_contract
from emulators.serial_plate import SerialPlateEmulator, crc16_ccitt_false

from labsuite.calibration import TareSettings, load_calibration
from labsuite.drivers.base import DriverRunner
from labsuite.drivers.serial_plate import (
    DeviceClock,
    FrameParser,
    SerialPlateDriver,
    SerialPlateSettings,
    crc16_ccitt,
    encode_frame,
)
from labsuite.errors import ConfigError, DeviceError

REPO = Path(__file__).resolve().parents[1]
CAL_LEFT = REPO / "calibration" / "example-left.yaml"
ZERO = np.array([1500, -800, 4000, 300, -250, 120])


@pytest.fixture(scope="module")
def cal():
    return load_calibration(CAL_LEFT)


def test_crc_matches_published_check_value_and_independent_twin():
    # CRC-16/CCITT-FALSE check value for "123456789" is 0x29B1 (CRC catalogue).
    assert crc16_ccitt(b"123456789") == 0x29B1
    assert crc16_ccitt_false(b"123456789") == 0x29B1
    rng = np.random.default_rng(3)
    for _ in range(50):
        data = rng.integers(0, 256, rng.integers(1, 60)).astype(np.uint8).tobytes()
        assert crc16_ccitt(data) == crc16_ccitt_false(data)


def test_frame_layout_is_byte_exact():
    frame = encode_frame(0x1234, np.array([1, -1, 256, 0, 0, 0x7FFFFFFF]))
    assert frame[:6].hex() == "a55a06003412"
    assert frame[6:30].hex() == ("01000000" "ffffffff" "00010000" "00000000" "00000000" "ffffff7f")
    assert int.from_bytes(frame[30:32], "little") == crc16_ccitt_false(frame[2:30])
    assert len(frame) == 32


def test_parser_counts_each_malformed_frame_once_and_resynchronises():
    p = FrameParser(6)
    good = [encode_frame(i, np.arange(6) * i) for i in range(10)]
    bad_crc = good[2][:-1] + bytes([good[2][-1] ^ 0x55])
    bad_n = encode_frame(3, np.arange(8))  # 8 channels where 6 are expected
    stream = (good[0] + good[1] + bad_crc + bad_n + good[4][:13] + good[5] + b"\x01\x02\xa5"
              + good[6] + good[7])
    counters = []
    for i in range(0, len(stream), 7):  # arbitrary chunking across frame boundaries
        c, rows, _ = p.feed(stream[i:i + 7])
        counters += c
    assert counters == [0, 1, 5, 6, 7]
    assert p.frames_bad == 4  # bad CRC, bad channel count, truncated frame, stray bytes
    c, rows, _ = p.feed(good[8][:20])
    assert c == []
    c, rows, _ = p.feed(good[8][20:])
    assert c == [8] and rows == [tuple(np.arange(6) * 8)]


def test_device_clock_is_monotonic_and_follows_the_fastest_arrival():
    clock = DeviceClock()
    ts1 = clock.map(np.arange(10) / 1000, arrival_lsl_s=100.020)  # offset 100.011
    ts2 = clock.map(np.arange(10, 20) / 1000, arrival_lsl_s=100.0305)  # slower: offset kept
    ts3 = clock.map(np.arange(20, 30) / 1000, arrival_lsl_s=100.0395)  # faster: offset 100.0105
    ts = np.concatenate([ts1, ts2, ts3])
    assert np.all(np.diff(ts) > 0)
    assert ts1[-1] == pytest.approx(100.020)
    assert ts2[-1] == pytest.approx(100.030, abs=1e-5)
    assert ts3[-1] == pytest.approx(100.0395)
    # A later block can never be stamped before an earlier one, even if it arrives "too early".
    ts4 = clock.map(np.arange(30, 40) / 1000, arrival_lsl_s=100.030)
    assert ts4[0] > ts3[-1]


def _settings(port, uid, cal, **kw):
    return SerialPlateSettings(port=port, source_id=uid, belt="left", calibration=cal,
                               name=f"plate-{uid}", tare=TareSettings(duration_s=0.5), **kw)


def test_settings_validated(cal):
    with pytest.raises(ConfigError, match="belt"):
        SerialPlateSettings(port="/dev/x", source_id="s", belt="middle", calibration=cal)
    with pytest.raises(ConfigError, match="baudrate: 115200 baud cannot carry"):
        SerialPlateSettings(port="/dev/x", source_id="s", belt="left", calibration=cal, baudrate=115200)


def test_open_missing_port_is_a_clear_device_error(tmp_path, cal, uid):
    drv = SerialPlateDriver(_settings(str(tmp_path / "nothing"), uid, cal))
    with pytest.raises(DeviceError, match="cannot open"):
        drv.open()
    drv.close()


def test_driver_contract_and_metadata(tmp_path, cal, uid):
    with SerialPlateEmulator(tmp_path / "ttyPLATE", cal.matrix, cal.corners_m, cal.origin_m,
                             zero_counts=ZERO) as emu:
        result = check_driver_contract(lambda: SerialPlateDriver(_settings(emu.port, uid, cal)))
    setup = result.read_back[0].setup["force_platform"]
    assert setup["calibration_id"] == cal.calibration_id
    assert result.read_back[0].serial_number == cal.plate_serial
    # The calibration used travels with the stream, so any recorder archives it.
    sent = result.read_back[0].setup["calibration"]
    assert sent["file_text"] == CAL_LEFT.read_text()
    matrix = np.array([float(v) for v in sent["matrix"].split()]).reshape(6, 6)
    assert np.array_equal(matrix, cal.matrix)
    # Tared and unloaded: every channel near zero (noise only) after the tare period.
    fz = result.samples[0][:, 2]
    assert abs(np.mean(fz)) < 1.0


def _run(drv):
    runner = DriverRunner(drv, reconnect_delay_s=0.2)
    got = []
    orig = runner._push

    def spy(spec, chunk):
        got.append(chunk)
        orig(spec, chunk)

    runner._push = spy
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return runner, thread, got


def _wait_for(cond, timeout_s=15.0):
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_faults_counted_skipped_and_disconnect_recovered(tmp_path, cal, uid):
    with SerialPlateEmulator(tmp_path / "ttyPLATE", cal.matrix, cal.corners_m, cal.origin_m,
                             zero_counts=ZERO) as emu:
        drv = SerialPlateDriver(_settings(emu.port, uid, cal))
        runner, thread, got = _run(drv)
        try:
            _wait_for(lambda: drv.calibrator.offsets is not None)
            assert drv.health.extra["tare_ok"] == 1.0
            bad0 = drv.health.frames_bad
            for fault in ("bad_crc", "bad_count", "truncated", "garbage"):
                emu.inject(fault)
                _wait_for(lambda n=bad0: drv.health.frames_bad > n)
                bad0 = drv.health.frames_bad
            assert drv.health.frames_bad == 4
            # The three rejected frames left holes in the counter; garbage between frames did not.
            assert drv.health.extra["frames_missing"] == 3
            emu.inject("skip5")
            _wait_for(lambda: drv.health.extra["frames_missing"] >= 8)
            assert drv.health.extra["frames_missing"] == 8
            ok = drv.health.frames_ok
            emu.inject("unplug")
            _wait_for(lambda: drv.health.reconnects >= 1)
            _wait_for(lambda: drv.health.frames_ok > ok + 500)
            emu.load(60.0, (0.2, 0.1))
            _wait_for(lambda: got and got[-1].data[-1, 2] > 500)
        finally:
            runner.stop()
            thread.join(timeout=15)
        assert not thread.is_alive()
        assert "connection lost" in drv.health.last_error or drv.health.reconnects >= 1
        ts = np.concatenate([c.timestamps for c in got])
        assert np.all(np.diff(ts) > 0)
        # The tare survived the reconnect: the loaded plate reads the mass, not zero.
        assert got[-1].data[-1, 2] == pytest.approx(60.0 * 9.80665, abs=5.0)


def test_tare_refused_on_a_loaded_plate(tmp_path, cal, uid):
    with SerialPlateEmulator(tmp_path / "ttyPLATE", cal.matrix, cal.corners_m, cal.origin_m,
                             zero_counts=ZERO) as emu:
        emu.load(70.0, (0.0, 0.12))
        drv = SerialPlateDriver(_settings(emu.port, uid, cal))
        drv.open()
        try:
            deadline = time.monotonic() + 10
            while drv.calibrator.taring and time.monotonic() < deadline:
                drv.read(0.05)
        finally:
            drv.close()
        assert drv.calibrator.offsets is None
        assert "does not look unloaded" in drv.health.last_error
        assert drv.health.extra["tare_ok"] == 0.0
