"""``labsuite analyze`` end to end: real C3D and text files, output formats, clear errors."""

from __future__ import annotations

import csv
import io
import json

import ezc3d
import numpy as np
import pytest

from labsuite.cli import main

REQUIRED = ["foot", "strike_s", "toe_off_s", "contact_s", "step_s", "cadence_spm", "peak_vgrf_bw",
            "impact_peak_bw", "valr_bw_per_s", "vilr_bw_per_s", "loading_rate_method",
            "cop_strike_x_m", "cop_strike_y_m", "tibial_peak_g"]
RBDS008_ARGS = ["--rate-hz", "300", "--map", "fz=Fy,fx=Fx,fy=Fz,copx=COPx,copy=COPz",
                "--length-unit", "mm", "--mass-kg", "69"]


def _csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_c3d_to_csv_stdout(shared_data, capsys):
    assert main(["analyze", str(shared_data / "rbds" / "RBDS001runT35.c3d"), "--mass-kg", "62"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split(",")
    assert header[:len(REQUIRED)] == REQUIRED
    rows = _csv(out)
    assert len(rows) > 80
    assert {r["foot"] for r in rows} == {"L", "R"}
    assert {r["loading_rate_method"] for r in rows} == {"stance_13pct"}
    assert all(r["impact_peak_bw"] == "" and r["tibial_peak_g"] == "" for r in rows)
    assert float(rows[0]["strike_s"]) < 1.0  # seconds from the start of the file


def test_text_file_example_from_the_issue(shared_data, tmp_path):
    out = tmp_path / "steps.csv"
    path = shared_data / "rbds" / "RBDS008runT35forces.txt"
    assert main(["analyze", str(path), *RBDS008_ARGS, "--out", str(out)]) == 0
    rows = _csv(out.read_text())
    assert len(rows) > 75
    methods = [r["loading_rate_method"] for r in rows]
    assert methods.count("impact_peak") > 0.7 * len(rows)
    with_peak = [r for r in rows if r["loading_rate_method"] == "impact_peak"]
    assert all(r["impact_peak_bw"] != "" for r in with_peak)


def test_json_and_lowpass_changes_vilr(shared_data, tmp_path):
    path = shared_data / "rbds" / "RBDS008runT35forces.txt"
    vilr = {}
    for lowpass in ("0", "50"):
        out = tmp_path / f"steps{lowpass}.json"
        assert main(["analyze", str(path), *RBDS008_ARGS, "--format", "json", "--lowpass-hz",
                     lowpass, "--out", str(out)]) == 0
        doc = json.loads(out.read_text())
        assert doc["lowpass_hz"] == float(lowpass)
        vilr[lowpass] = np.median([s["vilr_bw_per_s"] for s in doc["steps"]
                                   if s["vilr_bw_per_s"] is not None])
    # the unfiltered force keeps the sharp impact transient: steeper instantaneous slopes
    assert vilr["0"] > vilr["50"]


def test_body_weight_from_mean_force_when_no_mass(shared_data, capsys):
    path = shared_data / "rbds" / "RBDS008runT35forces.txt"
    args = [a for a in RBDS008_ARGS if a not in ("--mass-kg", "69")]
    assert main(["analyze", str(path), *args]) == 0
    err = capsys.readouterr().err
    weight = float(err.split("body weight ")[1].split(" N")[0])
    assert weight == pytest.approx(69 * 9.81, rel=0.05)


@pytest.mark.parametrize(("content", "args", "message"), [
    ("a,b\n1,2\n", ["--rate-hz", "100", "--map", "fz=Fz,copy=b"], "column(s) ['Fz'] not in the header"),
    ("Fz\n1\n", ["--rate-hz", "100", "--map", "fz=Fz"], "map it (copy=COLUMN)"),
    ("Fz,COPy\n" + "1,0\n" * 5 + "x,0\n" + "1,0\n" * 10,
     ["--rate-hz", "100", "--map", "fz=Fz,copy=COPy"], "line 7, column 'Fz': 'x' is not a number"),
    ("Fz,COPy\n1,0\n", ["--rate-hz", "100", "--map", "fz=Fz,copy=COPy"], "only 1 data rows"),
    ("Fz\n1\n", ["--rate-hz", "100", "--map", "fz=Fz,weight=W"], "--map key 'weight'"),
    ("Fz\n1\n", ["--map", "fz=Fz"], "needs --rate-hz and --map"),
])
def test_bad_text_files_get_clear_errors(tmp_path, capsys, content, args, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    assert main(["analyze", str(path), *args, "--mass-kg", "70"]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_bad_c3d_files_get_clear_errors(tmp_path, capsys):
    junk = tmp_path / "junk.c3d"
    junk.write_bytes(b"\x00" * 700)
    assert main(["analyze", str(junk), "--mass-kg", "70"]) == 1
    assert "not a readable C3D file" in capsys.readouterr().err
    # a valid C3D without force platforms
    c = ezc3d.c3d()
    c["parameters"]["POINT"]["RATE"]["value"] = [100]
    c["parameters"]["POINT"]["LABELS"]["value"] = ["m1"]
    c["data"]["points"] = np.zeros((4, 1, 10))
    c["data"]["points"][3] = 1
    nofp = tmp_path / "nofp.c3d"
    c.write(str(nofp))
    assert main(["analyze", str(nofp), "--mass-kg", "70"]) == 1
    assert "FORCE_PLATFORM" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "missing.c3d"), "--mass-kg", "70"]) == 1
    assert "no such file" in capsys.readouterr().err
