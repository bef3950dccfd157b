"""`labsuite inspect` on real session files: rates, gaps, steps per stage, incomplete files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from labsuite.archive.inspect import format_summary, summarize
from labsuite.archive.reader import open_session
from labsuite.archive.writer import SessionWriter
from labsuite.stages import StageRecord
from labsuite.steps import empty_steps
from labsuite.streams.contracts import imu_spec, markers_spec
from labsuite.streams.messages import marker


def _session(path, uid, close=True):
    w = SessionWriter(path, participant_id="P3", mass_kg=61.5, protocol_text="x")
    h = w.add_stream(imu_spec(uid, location="x", side="left", rate_hz=500.0))
    mk = w.add_stream(markers_spec(f"{uid}-mk"))
    t = np.arange(5000) / 500.0  # 10 s at 500 Hz ...
    t = np.concatenate([t[:2000], t[2250:]])  # ... with a 0.5 s hole at 4 s
    w.append(h, 100.0 + t, np.zeros((len(t), 6)))
    stages = [StageRecord(0, "base", "baseline", 100.0, 104.0, end_reason="time"),
              StageRecord(1, "fast", "cadence", 104.0, 110.0, target_cadence_spm=175.0, end_reason="steps")]
    for st in stages:
        w.append(mk, [st.end_s], [[marker("stage_end", **st.to_marker_fields())]])
    steps = empty_steps(10)
    steps["foot"] = np.arange(10) % 2
    steps["strike_s"] = 100.2 + np.arange(10) * 0.8  # 5 in the first stage, 5 in the second
    w.append_steps(steps)
    if close:
        w.close()
    return w


def test_summary_counts_rates_gaps_and_steps_per_stage(tmp_path, uid):
    _session(tmp_path / "s.h5", uid)
    with open_session(tmp_path / "s.h5") as s:
        summary = summarize(s)
    st = next(x for x in summary["streams"] if x["source_id"] == uid)
    assert st["samples"] == 4750 and st["gaps"] == 1
    assert abs(st["gap_total_s"] - 0.502) < 1e-9
    assert abs(st["duration_s"] - 9.998) < 1e-9
    assert abs(st["measured_rate_hz"] - 4749 / 9.998) < 1e-9
    assert [(x["name"], x["steps"]) for x in summary["stages"]] == [("base", 5), ("fast", 5)]
    assert summary["steps"] == {"total": 10, "left": 5, "right": 5}
    assert summary["complete"] and summary["mass_kg"] == 61.5
    text = format_summary(summary)
    assert "complete (closed cleanly)" in text and "fast" in text and "474.99" in text


def test_inspect_cli_reports_an_unclosed_file(tmp_path, uid):
    w = _session(tmp_path / "open.h5", uid, close=False)
    try:
        w.start()
        import time

        time.sleep(1.0)  # let the writer flush
        res = subprocess.run([sys.executable, "-m", "labsuite", "inspect", str(tmp_path / "open.h5")],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        # the writer is running: its lock says so (a crashed writer's file says INCOMPLETE)
        assert "LIVE" in res.stdout and uid in res.stdout
        res = subprocess.run([sys.executable, "-m", "labsuite", "inspect", "--json",
                              str(tmp_path / "open.h5")], capture_output=True, text=True, timeout=60)
        assert json.loads(res.stdout)["streams"][0]["samples"] in (0, 4750)
    finally:
        w.close()


def test_inspect_cli_on_a_missing_file(tmp_path):
    res = subprocess.run([sys.executable, "-m", "labsuite", "inspect", str(tmp_path / "none.h5")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "does not exist" in res.stderr
