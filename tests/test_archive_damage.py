"""Damaged, hostile and unfinished session files: every reader answers fast and honestly.

Real files from the real writer (tests/session_files.py), damaged the ways files get damaged:
cut short by a copy (50 %, 90 %), bytes flipped, groups missing, a newer format, a writer killed
with SIGKILL, and one still being written. Then `labsuite recover` and what the copy gives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from session_files import make_session

from labsuite.archive.reader import DamagedFileError, open_session
from labsuite.archive.recover import recover
from labsuite.archive.writer import SessionWriter
from labsuite.errors import ArchiveError
from labsuite.steps import STEP_DTYPE
from labsuite.streams.contracts import imu_spec


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return make_session(tmp_path_factory.mktemp("damage") / "S.h5")


def _labsuite(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "labsuite", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def _cut(src, dst, fraction):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_a_cut_file_is_damaged_never_complete_and_every_reader_answers(original, tmp_path, fraction):
    cut = _cut(original, tmp_path / "cut.h5", fraction)
    res = _labsuite("inspect", cut)
    assert res.returncode == 3, res.stderr
    assert "DAMAGED" in res.stdout and "complete (closed cleanly)" not in res.stdout
    assert "are missing" in res.stdout
    summary = json.loads(_labsuite("inspect", "--json", cut).stdout)
    assert summary["status"] == "damaged" and not summary["complete"]
    with open_session(original) as s:
        full = {sid: sd.n_samples for sid, sd in s.streams.items()}
        full_ts = {sid: sd.timestamps_raw for sid, sd in s.streams.items()}
    counts = {st["source_id"]: st["samples"] for st in summary["streams"]}
    assert all(counts[sid] <= n for sid, n in full.items()) and sum(counts.values()) < sum(full.values())
    assert all(st["duration_s"] >= 0 for st in summary["streams"])
    with open_session(cut, allow_damaged=True) as s:  # what is read is a true prefix, no zero rows
        for sid, sd in s.streams.items():
            assert np.array_equal(sd.timestamps_raw, full_ts[sid][: sd.n_samples])
    for args in (("report", cut, "--out", tmp_path / "r.html"), ("export", cut, "--csv", tmp_path / "csv"),
                 ("export", cut, "--xdf", tmp_path / "x.xdf"), ("replay", cut, "--speed", 100),
                 ("report", "--programme", tmp_path)):
        res = _labsuite(*args)
        assert res.returncode == 1 and "Traceback" not in res.stderr, (args, res.stderr)
        assert "damaged" in res.stderr and "labsuite recover" in res.stderr
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "x.xdf").exists()


def test_a_closed_file_opens_plain_read_only_a_live_one_swmr(original, tmp_path, uid):
    with open_session(original) as s:
        assert not s._file.swmr_mode and s.status == "complete" and not s.probe.open_for_write
    w = SessionWriter(tmp_path / "live.h5", participant_id="P1")
    h = w.add_stream(imu_spec(uid, location="x", side="left", rate_hz=100.0))
    w.append(h, np.arange(10) / 100.0, np.zeros((10, 6)))
    time.sleep(1.0)
    try:
        with open_session(tmp_path / "live.h5") as s:
            assert s._file.swmr_mode and s.live and s.status == "live" and not s.complete
    finally:
        w.close()
    with open_session(tmp_path / "live.h5") as s:
        assert not s._file.swmr_mode and s.status == "complete" and s.streams[uid].n_samples == 10


_KILLED_WRITER = """
import sys, time, numpy as np
from labsuite.archive.writer import SessionWriter
from labsuite.streams.contracts import imu_spec
w = SessionWriter(sys.argv[1], participant_id="P1")
h = w.add_stream(imu_spec(sys.argv[2], location="x", side="left", rate_hz=1000.0))
i = 0
while True:
    w.append(h, 100.0 + (i + np.arange(100)) / 1000.0, np.ones((100, 6)))
    i += 100
    if i == 2000:
        print("written", flush=True)
    time.sleep(0.02)
"""


def test_a_killed_writer_leaves_a_cut_short_file_not_a_live_one(tmp_path, uid):
    path = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path), uid], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "written"
        time.sleep(1.0)
        with open_session(path) as s:
            assert s.status == "live"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    res = _labsuite("inspect", path)
    assert res.returncode == 0 and "INCOMPLETE" in res.stdout and "crash" in res.stdout
    with open_session(path) as s:
        assert s.status == "cut short" and s.streams[uid].n_samples >= 2000 and s._file.swmr_mode


def test_newer_format_is_refused_with_the_upgrade_message(original, tmp_path):
    p = tmp_path / "v99.h5"
    p.write_bytes(original.read_bytes())
    with h5py.File(p, "r+") as f:
        f.attrs["format_version"] = 99
        f.attrs["labsuite_version"] = "9.1.0"
    for cmd in ("inspect", "export", "replay", "report"):
        res = _labsuite(cmd, p, *(("--csv", tmp_path / "c") if cmd == "export" else ()))
        assert res.returncode == 1 and "Traceback" not in res.stderr
        assert "written by labsuite 9.1.0 in session format 99" in res.stderr and "upgrade" in res.stderr


def test_missing_groups_are_named_and_the_rest_is_read(original, tmp_path):
    p = tmp_path / "nogroups.h5"
    p.write_bytes(original.read_bytes())
    with h5py.File(p, "r+") as f:
        del f["steps"]
        del f["streams/fuzz-fp-right/time_series"]
    res = _labsuite("inspect", p)
    assert res.returncode == 3 and "Traceback" not in res.stderr + res.stdout
    assert "steps: the required group is missing" in res.stdout
    assert "streams/fuzz-fp-right: cannot be read" in res.stdout and "fuzz-fp-left" in res.stdout
    with h5py.File(p, "r+") as f:
        for g in list(f):
            del f[g]
    res = _labsuite("inspect", p)
    assert res.returncode == 3 and "streams: the required group is missing" in res.stdout


def test_broken_counts_and_timestamps_keep_the_consistent_prefix(original, tmp_path):
    p = tmp_path / "broken.h5"
    p.write_bytes(original.read_bytes())
    with h5py.File(p, "r+") as f:
        # as in a format-1 file (no checksums): the structure checks alone must find these
        f.attrs["format_version"] = 1
        for g in f["streams"].values():
            if "checksums" in g:
                del g["checksums"]
        f["streams/fuzz-fp-left/committed"][0] = 10**12
        f["streams/fuzz-imu-left/time_stamps"][7000] = np.nan
        f["streams/fuzz-imu-right/time_stamps"][9000] = 1.0
    with pytest.raises(DamagedFileError, match="labsuite recover"):
        open_session(p)
    with open_session(p, allow_damaged=True) as s:
        assert s.status == "damaged" and not s.complete
        text = "\n".join(s.problems)
        assert "'committed' says 1000000000000 rows but the datasets hold 20000" in text
        assert "timestamp of row 7000 is not a finite number" in text
        assert "timestamp of row 9000 goes back in time" in text
        assert s.streams["fuzz-imu-left"].n_samples == 7000
        assert s.streams["fuzz-imu-right"].n_samples == 9000
        assert s.streams["fuzz-fp-left"].n_samples == 20000


def test_changed_sample_values_and_attributes_are_caught_by_the_checksums(original, tmp_path):
    p = tmp_path / "changed.h5"
    p.write_bytes(original.read_bytes())
    with h5py.File(p, "r+") as f:
        x = f["streams/fuzz-fp-right/time_series"][15000]
        f["streams/fuzz-fp-right/time_series"][15000] = x + 0.5  # one value, 0.5 N
        f["markers/text_data"][0:1] = [ord("X")] if len(f["markers/text_data"]) else []
        f.attrs["mass_kg"] = 71.0
    with open_session(p, allow_damaged=True) as s:
        text = "\n".join(s.problems)
        assert s.status == "damaged"
        assert "rows 14336..15359 do not match their checksum" in text  # blocks of 1024 rows
        assert s.streams["fuzz-fp-right"].n_samples == 14336 and s.streams["fuzz-fp-left"].n_samples == 20000
        assert "root attributes: they do not match their SHA-256" in text
    with open_session(original) as s:
        assert s.status == "complete" and not s.notes  # format 2: nothing to say


def test_flipped_bytes_never_hang_or_crash_a_reader(original, tmp_path):
    rng = np.random.default_rng(5)
    data = bytearray(original.read_bytes())
    for pos in rng.choice(len(data), 200, replace=False):
        data[pos] ^= 0xFF
    p = tmp_path / "flipped.h5"
    p.write_bytes(bytes(data))
    t = time.perf_counter()
    res = _labsuite("inspect", p)
    assert res.returncode in (0, 1, 3) and "Traceback" not in res.stderr + res.stdout
    assert time.perf_counter() - t < 60  # the bound itself is measured by scripts/fuzz_inputs.py


def test_steps_written_before_new_columns_read_as_nan(original, tmp_path):
    p = tmp_path / "old_steps.h5"
    p.write_bytes(original.read_bytes())
    with h5py.File(p, "r+") as f:
        rows = f["steps/table"][()]
        keep = [n for n in rows.dtype.names if n not in ("strike_index_pct", "strike_pattern", "invalid")]
        old = np.empty(len(rows), dtype=[(n, "f8") for n in keep])
        for n in keep:
            old[n] = rows[n]
        del f["steps/table"]
        f["steps"].create_dataset("table", data=old, maxshape=(None,), chunks=(256,))
        del f["steps/checksums"]  # as a format-1 file, which had neither checksums nor the columns
        f.attrs["format_version"] = 1
    with open_session(p) as s:
        assert s.steps.dtype == STEP_DTYPE and s.status == "complete"
        assert any("format 1" in n for n in s.notes)
        assert np.isnan(s.steps["strike_index_pct"]).all() and np.isnan(s.steps["invalid"]).all()
        assert np.array_equal(s.steps["strike_s"], rows["strike_s"])


def test_recover_copies_every_consistent_row_and_report_and_exports_work(original, tmp_path):
    cut = _cut(original, tmp_path / "cut.h5", 0.6)
    fixed = tmp_path / "fixed.h5"
    res = _labsuite("recover", cut, "--out", fixed)
    assert res.returncode == 0, res.stderr
    assert "kept: stream fuzz-fp-left" in res.stdout and "lost:" in res.stdout
    with open_session(cut, allow_damaged=True) as damaged, open_session(fixed) as s:
        assert s.status == "complete" and not s.problems
        assert s.attrs["recovered_from"] == str(cut) and s.attrs["participant_id"] == "FUZZ1"
        assert s.attrs["start_time_utc"] == damaged.attrs["start_time_utc"]
        assert any("labsuite recover" in n for n in s.notes)
        for sid, sd in damaged.streams.items():
            got = s.streams[sid]
            assert np.array_equal(got.timestamps_raw, sd.timestamps_raw)
            assert np.array_equal(np.asarray(got.data), np.asarray(sd.data))
            assert np.array_equal(got.clock_offsets, sd.clock_offsets)
        assert len(s.steps) == len(damaged.steps) and len(s.stages) == len(damaged.stages)
        assert [e["kind"] for e in s.events] == [e["kind"] for e in damaged.events]
    assert _labsuite("report", fixed, "--out", tmp_path / "r.html").returncode == 0
    from labsuite.report import load_session_report

    warnings = load_session_report(fixed, curves=False).warnings()
    assert any("labsuite recover" in w and "had lost" in w for w in warnings)
    res = _labsuite("export", fixed, "--c3d", tmp_path / "f.c3d", "--xdf", tmp_path / "f.xdf")
    assert res.returncode == 0, res.stderr
    res = _labsuite("recover", cut, "--out", fixed)
    assert res.returncode == 1 and "never overwrites" in res.stderr


def test_recover_of_an_intact_file_is_a_full_copy(original, tmp_path):
    rep = recover(original, tmp_path / "copy.h5")
    assert not rep.lost
    with open_session(original) as a, open_session(tmp_path / "copy.h5") as b:
        for sid, sd in a.streams.items():
            assert b.streams[sid].n_samples == sd.n_samples
        for name in STEP_DTYPE.names:
            assert np.array_equal(a.steps[name], b.steps[name], equal_nan=True)


def test_not_a_file_and_not_hdf5(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"\x00" * 100)
    with pytest.raises(ArchiveError, match="not an HDF5 file"):
        open_session(tmp_path / "junk.h5")
    with pytest.raises(ArchiveError, match="not a file"):
        open_session(tmp_path)
