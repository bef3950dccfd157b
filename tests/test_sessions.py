"""`labsuite sessions DIR`: the catalogue of participants and sessions, its index and bad files."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import h5py
import pytest

from labsuite.archive import catalogue as cat
from labsuite.cli import main as cli_main
from labsuite.errors import ConfigError

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_sessions.py"
_spec = importlib.util.spec_from_file_location("bench_sessions", _SCRIPT)
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    for pid, n in (("P01", 1), ("P01", 2), ("P02", 1)):
        (root / pid).mkdir(exist_ok=True)
        bench.write_session(root / pid / f"{pid}_s{n}.h5", pid, n, recheck=False)
    bench.write_session(root / "P01" / "P01_r1.h5", "P01", 4, recheck=True)
    return root


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli_main(["sessions", *args])
    return code, out.getvalue(), err.getvalue()


def test_lists_participants_and_sessions_in_every_format(folder):
    code, out, _ = run_cli(str(folder), "--format", "json")
    assert code == 0
    rows = json.loads(out)["sessions"]
    # by participant, then date (files written in this order: s1, s2 of P01, P02's, P01's recheck)
    assert [r["participant"] for r in rows] == ["P01"] * 3 + ["P02"]
    assert sorted(r["file"] for r in rows[:3]) == ["P01/P01_r1.h5", "P01/P01_s1.h5", "P01/P01_s2.h5"]
    assert [r["date_utc"] for r in rows[:3]] == sorted(r["date_utc"] for r in rows[:3])
    by = {r["file"]: r for r in rows}
    s2 = by["P01/P01_s2.h5"]
    assert (s2["kind"], s2["session"], s2["status"], s2["protocol"]) == ("training", 2, "complete", "bench")
    assert s2["baseline_cadence_spm"] == 162.0 and s2["retention_in_band_pct"] == pytest.approx(85.0)
    assert s2["n_steps"] == 200 and s2["duration_s"] == pytest.approx(181.0)
    r1 = by["P01/P01_r1.h5"]
    assert (r1["kind"], r1["session"], r1["recheck"], r1["regression"]) == ("recheck", None, 1, True)
    code, out, _ = run_cli(str(folder), "--participant", "P02", "--format", "csv")
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert [r["file"] for r in parsed] == ["P02/P02_s1.h5"] and list(parsed[0]) == list(cat.COLUMN_NAMES)
    code, out, err = run_cli(str(folder))
    assert code == 0 and "4 sessions of 2 participants" in out and "REGRESSION" in out
    assert "from the index" in err


def test_the_index_is_refreshed_from_the_files(tmp_path):
    bench.write_session(tmp_path / "A1_s1.h5", "A1", 1, recheck=False)
    bench.write_session(tmp_path / "A1_s2.h5", "A1", 2, recheck=False)
    rows, s = cat.catalogue(tmp_path)
    assert (s.files, s.read, s.cached) == (2, 2, 0) and (tmp_path / cat.INDEX_NAME).exists()
    rows2, s = cat.catalogue(tmp_path)
    assert (s.read, s.cached) == (0, 2) and rows2 == rows
    (tmp_path / "A1_s2.h5").unlink()
    bench.write_session(tmp_path / "A1_s2.h5", "A1", 7, recheck=False)  # same name, new content
    rows3, s = cat.catalogue(tmp_path)
    assert (s.read, s.cached) == (1, 1)
    assert rows3[1]["baseline_cadence_spm"] == 167.0 != rows[1]["baseline_cadence_spm"]
    (tmp_path / "A1_s1.h5").unlink()
    rows4, s = cat.catalogue(tmp_path)
    assert s.dropped == 1 and [r["file"] for r in rows4] == ["A1_s2.h5"]
    # a damaged or foreign index is not trusted: everything is read again
    (tmp_path / cat.INDEX_NAME).write_text('{"format": "x", "files": {"A1_s2.h5": {}}}')
    _, s = cat.catalogue(tmp_path)
    assert s.read == 1
    (tmp_path / cat.INDEX_NAME).write_bytes(b"\x00garbage")
    assert cat.catalogue(tmp_path)[1].read == 1
    _, s = cat.catalogue(tmp_path, use_index=False)
    assert s.read == 1


def test_damaged_and_foreign_files_are_listed_as_such(tmp_path):
    good = tmp_path / "B1_s1.h5"
    bench.write_session(good, "B1", 1, recheck=False)
    data = good.read_bytes()
    (tmp_path / "B1_s2.h5").write_bytes(data[: len(data) // 2])  # a copy cut in half
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1, 2, 3]
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    rows, _ = cat.catalogue(tmp_path)
    by = {r["file"]: r for r in rows}
    assert by["B1_s1.h5"]["status"] == "complete"
    assert by["B1_s2.h5"]["status"] in ("damaged", "unreadable") and by["B1_s2.h5"]["problem"]
    assert by["other.h5"]["status"] == "unreadable"
    assert "not a labsuite session file" in by["other.h5"]["problem"]
    assert by["junk.h5"]["status"] == "unreadable" and "junk.h5" in by["junk.h5"]["problem"]
    code, out, _ = run_cli(str(tmp_path))
    assert code == 0 and "unreadable" in out


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        cat.catalogue(tmp_path / "missing")
    with pytest.raises(ConfigError, match="--participant"):
        cat.catalogue(tmp_path, participant="../P01")
    code, _, err = run_cli(str(tmp_path / "missing"))
    assert code != 0 and "no such folder" in err and "Traceback" not in err
