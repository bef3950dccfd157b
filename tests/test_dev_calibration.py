"""Calibration files, tare, known-load checks, and the round trip: a known mass on the emulated plate."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from emulators.serial_plate import G, SerialPlateEmulator, point_load_channels

from labsuite.calibration import (
    PlateCalibrator,
    TareSettings,
    append_verification,
    calibration_to_yaml,
    compute_tare,
    load_calibration,
    parse_calibration,
    verify_known_load,
)
from labsuite.cli import main
from labsuite.errors import CalibrationError, ConfigError
from labsuite.labconfig import load_lab_config

REPO = Path(__file__).resolve().parents[1]
CAL_DIR = REPO / "calibration"


def test_every_example_file_loads():
    files = sorted(CAL_DIR.glob("*.yaml"))
    assert len(files) >= 4
    for f in files:
        cal = load_calibration(f)
        assert cal.matrix.shape in ((6, 6), (6, 8))
        assert cal.to_archive()["text"] == f.read_text()


def test_six_by_eight_matrix_matches_the_published_8_channel_equations():
    cal = load_calibration(CAL_DIR / "example-8ch.yaml")
    a, b = 0.12, 0.2
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 100, (20, 8))
    fx12, fx34, fy14, fy23, fz1, fz2, fz3, fz4 = raw.T
    expected = np.column_stack([
        fx12 + fx34, fy14 + fy23, fz1 + fz2 + fz3 + fz4,
        b * (fz1 + fz2 - fz3 - fz4), a * (-fz1 + fz2 + fz3 - fz4), b * (-fx12 + fx34) + a * (fy14 - fy23)])
    assert np.allclose(cal.apply(raw), expected)


GOOD = (CAL_DIR / "example-right.yaml").read_text()


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda t: t.replace("plate_serial: \"EX-FP-0002\"\n", ""), r"x\.yaml:\d+: plate_serial: required field"),
    (lambda t: t.replace("  - [5.9", "  - [1.0, 5.9", 1), r"matrix: expected 6 rows of 6 or 8 numbers"),
    (lambda t: t.replace("c3d_type: 2", "c3d_type: 2\n  colour: red"), r"geometry\.colour: unknown key"),
    (lambda t: t.replace("force_n: 10.0", "force_n: -1"), r"tolerance\.force_n: .*greater than 0"),
    (lambda t: t.replace("date: 2026-06-15", "date: soon"), r"date: .*'soon'"),
    (lambda t: t.replace("    - [-0.9, -0.25, 0.0]", "    - [0.9, -0.25, 0.0]"), r"corners_m: .*degenerate"),
    (lambda t: t + "date: 2026-01-01\n", r"duplicate key 'date'"),
    (lambda t: t.replace("matrix:", "matrix: [", 1), r"x\.yaml:\d+: invalid calibration file: YAML syntax"),
    (lambda t: t.replace("schema: labsuite-calibration/1", "schema: other/2"), r"schema: Input should be"),
])
def test_bad_files_name_file_line_and_field(edit, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_calibration(edit(GOOD), "x.yaml")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: calibration file not found"):
        load_calibration(tmp_path / "nope.yaml")


def test_age_warning_against_the_lab_limit():
    cal = load_calibration(CAL_DIR / "example-left.yaml")
    assert cal.age_warning(365, today=dt.date(2026, 12, 1)) is None
    text = cal.age_warning(365, today=dt.date(2027, 7, 1))
    assert "381 days old" in text and "limit is 365 days" in text


def test_tare_removes_offsets_and_refuses_a_loaded_plate():
    cal = load_calibration(CAL_DIR / "example-left.yaml")
    rng = np.random.default_rng(1)
    zero = np.array([1500, -800, 4000, 300, -250, 120.0])
    unloaded = zero + rng.normal(0, 20, (500, 6))
    offsets = compute_tare(cal, unloaded)
    assert np.allclose(offsets, zero, atol=5)
    person = np.linalg.solve(cal.matrix, point_load_channels(70, (0.1, 0.12), cal.corners_m, cal.origin_m))
    loaded = unloaded + person
    with pytest.raises(CalibrationError, match="does not look unloaded"):
        compute_tare(cal, loaded)
    # Someone stepping on during the tare period: the force varies.
    half = unloaded.copy()
    half[250:] += person
    with pytest.raises(CalibrationError, match="SD"):
        compute_tare(cal, half)
    # The streaming calibrator tares from the first period, then reports the load.
    calib = PlateCalibrator(cal, rate_hz=1000, tare=TareSettings(duration_s=0.3))
    calib.start_tare()
    calib.process(unloaded[:200])
    assert calib.taring
    calib.process(unloaded[200:])
    assert not calib.taring and calib.tare_error == ""
    out = calib.process(zero + person + rng.normal(0, 20, (100, 6)))
    assert np.mean(out[:, 2]) == pytest.approx(70 * G, abs=1.0)


def test_known_load_check_against_independent_physics():
    cal = load_calibration(CAL_DIR / "example-left.yaml")
    for point in [(0.0, 0.125), (0.6, 0.05), (-0.7, 0.2)]:
        ch = point_load_channels(50.0, point, cal.corners_m, cal.origin_m)[None, :]
        result = verify_known_load(ch, cal, 50.0, point)
        assert result.force_error_n == pytest.approx(0.0, abs=1e-9)
        assert result.cop_error_m == pytest.approx(0.0, abs=1e-9)
        assert result.passed
    # 4 mm off in x and 3 mm in y is a 5 mm COP error; 1 kg too much is a 9.8 N force error.
    ch = point_load_channels(51.0, (0.204, 0.103), cal.corners_m, cal.origin_m)[None, :]
    result = verify_known_load(ch, cal, 50.0, (0.2, 0.1))
    assert result.cop_error_m == pytest.approx(0.005, abs=1e-9)
    assert result.force_error_n == pytest.approx(G, abs=1e-9)
    assert result.passed is True  # 9.8 N <= 10 N and 5 mm <= 5 mm
    ch = point_load_channels(52.0, (0.2, 0.1), cal.corners_m, cal.origin_m)[None, :]
    assert verify_known_load(ch, cal, 50.0, (0.2, 0.1)).passed is False


def test_verification_history_round_trips(tmp_path):
    path = tmp_path / "cal.yaml"
    shutil.copy(CAL_DIR / "example-left.yaml", path)
    cal = load_calibration(path)
    ch = point_load_channels(20.0, (0.0, 0.1), cal.corners_m, cal.origin_m)[None, :]
    result = verify_known_load(ch, cal, 20.0, (0.0, 0.1), today=dt.date(2026, 7, 1), note="weekly check")
    new = append_verification(path, result)
    assert len(new.verifications) == 2
    assert new.verifications[-1]["note"] == "weekly check" and new.verifications[-1]["passed"] is True
    assert np.array_equal(new.matrix, cal.matrix)
    assert parse_calibration(calibration_to_yaml(new), "again.yaml").verifications == new.verifications


def _lab(tmp_path: Path, port: str, cal_file: Path) -> Path:
    lab = tmp_path / "lab.yaml"
    lab.write_text(f"""schema: labsuite-lab/1
lab_id: {tmp_path.name[-20:].replace('_', '-')}
devices:
  - kind: serial_plate
    name: fp-left
    port: {port}
    belt: left
    calibration: {cal_file.name}
    tare_s: 0.5
""")
    return lab


POINTS = [(0.0, 0.125), (0.5, 0.05), (-0.6, 0.2)]


def test_round_trip_known_mass_at_known_points_within_tolerance(tmp_path, monkeypatch, capsys):
    cal_file = tmp_path / "left.yaml"
    shutil.copy(CAL_DIR / "example-left.yaml", cal_file)
    cal = load_calibration(cal_file)
    zero = np.array([1500, -800, 4000, 300, -250, 120])
    with SerialPlateEmulator(tmp_path / "ttyFP", cal.matrix, cal.corners_m, cal.origin_m,
                             zero_counts=zero, noise_counts=40) as emu:
        lab = _lab(tmp_path, emu.port, cal_file)
        # Through the operator's command: tare, "place the mass, press Enter", measure, record.
        def operator_places_mass(prompt: str) -> str:
            assert "Place 50.0 kg at x = 0.3 m, y = 0.1 m" in prompt
            emu.load(50.0, (0.3, 0.1))
            time.sleep(0.2)
            return ""

        monkeypatch.setattr("builtins.input", operator_places_mass)
        code = main(["calibrate", "verify", "--lab", str(lab), "--plate", "fp-left", "--mass-kg", "50",
                     "--at", "0.3", "0.1", "--measure-s", "1.0", "--record", "--note", "round trip"])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "PASS" in out
        recorded = load_calibration(cal_file).verifications[-1]
        assert recorded["passed"] is True and recorded["note"] == "round trip"
        assert recorded["force_error_n"] <= cal.force_tolerance_n
        assert recorded["cop_error_m"] <= cal.cop_tolerance_m
        # Through the API, at several points: each reported within the file's tolerance.
        emu.unload()
        config = load_lab_config(lab)
        drv = config.build_driver("fp-left")
        drv.open()
        try:
            while drv.calibrator.taring:
                drv.read(0.05)
            assert drv.calibrator.tare_error == ""
            for point in POINTS:
                emu.load(50.0, point)
                time.sleep(0.1)
                _read_for(drv, 0.1)
                data = np.concatenate([c.data for c in _read_for(drv, 0.5)])
                result = verify_known_load(data.astype(float), cal, 50.0, point)
                assert result.passed, result
                assert result.force_error_n < 0.5 * cal.force_tolerance_n
                assert result.cop_error_m < 0.5 * cal.cop_tolerance_m
        finally:
            drv.close()


def _read_for(drv, seconds):
    chunks = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        chunks += [c for c in drv.read(0.05) if len(c.timestamps)]
    return chunks


def test_round_trip_detects_a_plate_out_of_calibration(tmp_path, monkeypatch, capsys):
    cal_file = tmp_path / "left.yaml"
    shutil.copy(CAL_DIR / "example-left.yaml", cal_file)
    cal = load_calibration(cal_file)
    drifted = cal.matrix.copy()
    drifted[2] *= 1.03  # the real plate's Fz sensitivity has drifted by 3 %
    with SerialPlateEmulator(tmp_path / "ttyFP", drifted, cal.corners_m, cal.origin_m) as emu:
        lab = _lab(tmp_path, emu.port, cal_file)
        monkeypatch.setattr("builtins.input", lambda prompt: (emu.load(50.0, (0.0, 0.1)),
                                                              time.sleep(0.2))[0] or "")
        code = main(["calibrate", "verify", "--lab", str(lab), "--plate", "fp-left", "--mass-kg", "50",
                     "--measure-s", "0.5"])
    out = capsys.readouterr().out
    assert code == 3, out
    assert "FAIL" in out
    force_error = float(out.split("error ")[1].split(" N")[0])
    assert force_error == pytest.approx(50 * G * (1 - 1 / 1.03), abs=2.0)
    assert len(load_calibration(cal_file).verifications) == 1  # nothing recorded without --record
