"""Benchmark ``labsuite sessions``: list a folder of many small session files, cold and from the index.

Writes N session files (default 300: 30 participants x 10 sessions, each a 2 s force-plate stream,
markers of a programme session with stages, a baseline, a decision and for every fifth a recheck, and
200 steps) with the real SessionWriter into a temporary folder, then times, in one run: the first
listing (every file read through the archive reader, the index written), a second listing (all rows
from the index), a listing after one file changed (one file read again), and the same with
``use_index=False``. Prints each time, per file, and the ratio of cold to warm.

Run:  python scripts/bench_sessions.py [--files 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_session(path: Path, participant: str, number: int, recheck: bool) -> None:
    """One small but complete programme session file."""
    from labsuite import markers as mk
    from labsuite.archive.writer import SessionWriter
    from labsuite.stages import StageRecord
    from labsuite.steps import empty_steps
    from labsuite.streams.contracts import force_plate_spec

    w = SessionWriter(path, participant_id=participant, mass_kg=70.0, protocol_text="name: bench\n",
                      session_number=None if recheck else number, expected_duration_s=60.0)
    h = w.add_stream(force_plate_spec(f"bench-fp-{participant}", belt="left",
                                      corners_m=np.array([[0.9, 0, 0], [-0.9, 0, 0], [-0.9, 0.25, 0],
                                                          [0.9, 0.25, 0]]),
                                      origin_m=(0.0, 0.0, -0.04), calibration_id="bench", rate_hz=1000.0))
    t0 = 1000.0
    t = t0 + np.arange(2000) / 1000.0
    w.append(h, t, np.tile([0.0, 0.0, 700.0, 0.0, 0.0, 0.0], (len(t), 1)))
    events: list[tuple[float, mk.Marker]] = [
        (t0, mk.SessionStart(protocol="bench", participant=participant, stages=2)),
        (t0, mk.ProgrammeDecision(kind="recheck" if recheck else "training",
                                  action="recheck" if recheck else "advance", step=2,
                                  step_percent=7.5, reason="bench")),
        (t0 + 60, mk.Baseline(ok=True, n_steps=60, cadence_spm=160.0 + number, valr_bw_per_s=70.0)),
    ]
    for t_s, m in events:
        w.append_marker(t_s, m.encode())
    for i, (name, kind, a, b) in enumerate((("baseline", "baseline", 0, 60), ("keep", "retention", 60, 180))):
        summary = {"n_steps": 100, "cadence_spm": 170.0, "valr_bw_per_s": 60.0, "in_band_fraction": 0.85}
        rec = StageRecord(i, name, kind, t0 + a, t0 + b, end_reason="time", summary_json=json.dumps(summary))
        w.append_marker(t0 + b, mk.StageEnd(record=rec).encode())
        w.append_stage(rec)
    if recheck:
        w.append_marker(t0 + 180, mk.RecheckResult(number=1, regression=number % 2 == 0,
                                                   reason="bench").encode())
    w.append_marker(t0 + 181, mk.SessionEnd(reason="completed", stages_run=2).encode())
    steps = empty_steps(200)
    steps["strike_s"] = t0 + np.arange(200) * 0.36
    w.append_steps(steps)
    w.close()


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t, out


def main() -> int:
    from labsuite.archive.catalogue import INDEX_NAME, catalogue

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--keep", type=Path, default=None, help="write the files here and keep them")
    args = ap.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t_write = time.perf_counter()
        for k in range(args.files):
            pid = f"P{k // 10 + 1:03d}"
            (folder / pid).mkdir(exist_ok=True)
            write_session(folder / pid / f"{pid}_s{k % 10 + 1}.h5", pid, k % 10 + 1, recheck=k % 5 == 4)
        t_write = time.perf_counter() - t_write
        size = sum(p.stat().st_size for p in folder.rglob("*.h5"))
        print(f"wrote {args.files} session files ({size / args.files / 1024:.0f} KiB each) in "
              f"{t_write:.1f} s into {folder}")
        cold, (rows, s1) = timed(catalogue, folder)
        warm, (rows2, s2) = timed(catalogue, folder)
        changed = next(folder.rglob("*.h5"))
        changed.unlink()  # the writer never overwrites: a new file of the same name
        write_session(changed, changed.parent.name, 1, recheck=False)
        one, (_, s3) = timed(catalogue, folder)
        noidx, (_, s4) = timed(catalogue, folder, use_index=False)
        assert rows == rows2 and len(rows) == args.files, "the index gave other rows than the files"
        n = args.files
        print(f"cold (every file read, index written): {cold:7.3f} s  ({1000 * cold / n:.1f} ms/file,"
              f" read {s1.read})")
        print(f"warm (rows from {INDEX_NAME}):   {warm:7.3f} s  ({1000 * warm / n:.2f} ms/file,"
              f" read {s2.read}, cached {s2.cached})")
        print(f"one file changed:                      {one:7.3f} s  (read {s3.read}, cached {s3.cached})")
        print(f"--no-index (every file read again):    {noidx:7.3f} s  (read {s4.read})")
        index_kib = (folder / INDEX_NAME).stat().st_size / 1024
        print(f"cold / warm = {cold / warm:.0f}x; index {index_kib:.0f} KiB")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
