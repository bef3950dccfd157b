"""A calibration dated in the future is flagged (a typo or a wrong clock), by labs and `calibrate show`."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

from labsuite.calibration import load_calibration, parse_calibration

CAL_DIR = Path(__file__).resolve().parents[1] / "calibration"


def test_future_date_is_flagged_whatever_the_age_limit():
    cal = load_calibration(CAL_DIR / "example-left.yaml")
    assert cal.future_warning(today=cal.date) is None
    text = cal.age_warning(365, today=cal.date - dt.timedelta(days=10))
    assert text is not None and "10 days in the future" in text and "example-left.yaml" in text
    assert cal.future_warning(today=cal.date - dt.timedelta(days=1)) is not None


def test_calibrate_show_warns_about_a_future_date(tmp_path):
    text = (CAL_DIR / "example-left.yaml").read_text(encoding="utf-8")
    future = (dt.date.today() + dt.timedelta(days=400)).isoformat()
    cal = parse_calibration(text, "x")
    bad = tmp_path / "future.yaml"
    bad.write_text(text.replace(f"date: {cal.date.isoformat()}", f"date: {future}", 1), encoding="utf-8")
    res = subprocess.run([sys.executable, "-m", "labsuite", "calibrate", "show", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "warning:" in res.stdout and "in the future" in res.stdout and future in res.stdout
