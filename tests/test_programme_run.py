"""A 4-session simulated programme end to end: real processes over LSL, real files, one shared run.

Session 1 sets the programme baseline and, retained, advances the step; session 2's targets follow
session 1's baseline although the runner already comes in faster; its retention fails (no learning),
so session 3 holds; session 3 runs with simulated fatigue and its loading drifts (sessions 1-2 do
not); a recheck 28 simulated days later has lost the gain and is flagged. Then `labsuite sessions`
lists the four files and `labsuite report --programme` shows progression, the recheck and drift.
"""

from __future__ import annotations

import io
import json
import math
import uuid
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from labsuite.archive.reader import open_session
from labsuite.cli import main as cli_main
from labsuite.lab.run import RunOptions, run_protocol
from labsuite.protocol import progression as prog
from labsuite.protocol.schema import parse_protocol
from labsuite.report import drift_rows, load_session_report

# Known open (issue 16 must-show): on a quiet machine the first session still ends on a
# no_contact safety stop ("no foot contact for 3.02 s while the belt moves") in its second stage;
# kept running, so the day it passes shows as XPASS, and its failure stays visible as XFAIL.
pytestmark = [pytest.mark.slow,
              pytest.mark.xfail(reason="issue 16: the simulated programme's first session ends on "
                                "no_contact (open)", strict=False)]

PROTOCOL = """\
schema: labsuite-protocol/1
name: e2e-programme
speed_m_s: 3.0
auto_start: true  # an unattended study: the belt starts without the operator's Start
# a generous force watchdog (as in test_protocol_run.py): this test is about the programme, and a
# loaded 2-core machine starves the simulated drivers for more than the default 0.4 s now and then
safety: {accel_m_s2: 1.5, force_timeout_s: 3.0}
checkins: {at_start: false, at_stage_boundaries: false}
simulation:
  mode: run
  strike: rearfoot
  preferred_cadence_spm: 160
  body_mass_kg: 65
  learning: {per_step: 0.03, kept_between_sessions: 1.0, half_life_days: 3}
programme:
  name: e2e programme
  sessions:
    - {label: "1"}
    - {label: "2"}
    - {label: "3: longer, tired", duration_s: {train: 36}}
  progression: {steps_percent: [5, 7.5, 10], advance_in_band_percent: 80}
  rechecks: {after_days: [28], duration_s: 12, band_percent: 3, max_gain_lost_percent: 50,
             max_valr_rise_percent: 10}
stages:
  # the weigh-in also gives the virtual participant time to find the belt's stream before it moves
  - {name: stand, kind: quiet_standing, duration_s: 3}
  - {name: base, kind: baseline, duration_s: 10, measure_last_steps: 15}
  - name: train
    kind: cadence
    duration_s: 20
    target_percent: progression
    of: programme_baseline
    band_percent: 3
    cues: {metronome: {spm: target}}
  - {name: keep, kind: retention, duration_s: 12, target_percent: progression, of: programme_baseline,
     band_percent: 3}
"""

# per session: what the virtual participant does differently (RunOptions.sim_overrides)
NO_LEARNING = {"learning_per_step": 0.0}
TIRED = {"fatigue_impact_pct_per_min": 50.0}


def markers(path: Path) -> list[dict]:
    with open_session(path) as f:
        return [json.loads(t) for t in f.markers["text"]]


def event(path: Path, name: str) -> dict:
    found = [m for m in markers(path) if m.get("event") == name]
    assert found, f"{path.name} has no {name} marker"
    return found[0]


def planned_cadence(path: Path, t0: float, t1: float) -> float:
    """Independent cadence: the simulator's own planned strikes (either foot) in [t0, t1)."""
    with open_session(path) as f:
        gait = next(s for s in f.streams.values() if s.spec.kind == "sim_gait")
        labels = list(gait.spec.labels)
        strikes = gait.data[:, labels.index("strike_s")]
        kind = gait.data[:, labels.index("kind")]
    s = np.sort(strikes[(kind == 0) & (strikes >= t0) & (strikes < t1)])
    return 60.0 / float(np.mean(np.diff(s)))


def in_band_pct(path: Path, stage: str) -> float:
    """Independent retention score: share of the stage's recorded steps with rolling cadence in band."""
    with open_session(path) as f:
        st = next(s for s in f.stages if s.name == stage)
        steps = f.steps[(f.steps["strike_s"] >= st.start_s) & (f.steps["strike_s"] < st.end_s)]
    cad = steps["cadence_spm"][np.isfinite(steps["cadence_spm"])]
    return 100.0 * float(np.mean((cad >= st.band_low_spm) & (cad <= st.band_high_spm)))


@pytest.fixture(scope="module")
def programme(tmp_path_factory):
    folder = tmp_path_factory.mktemp("programme")
    proto = folder / "e2e.yaml"
    proto.write_text(PROTOCOL)
    out = folder / "sessions"
    runs = []
    for session, overrides, days in ((1, {}, None), (2, NO_LEARNING, 1.0), (3, TIRED, 1.0),
                                     (None, {}, 28.0)):
        options = RunOptions(protocol_path=proto, participant_id="P21", simulate=True, out_dir=out,
                             programme_session=session, recheck=session is None,
                             lab_id=f"prog-{uuid.uuid4().hex[:10]}", connect_timeout_s=60.0,
                             sim_overrides=overrides, sim_days_later=days, sound=False)
        result = run_protocol(options)
        assert result.end_reason == "completed", "\n".join(f"{t:.2f} {x}" for t, x in result.log)
        runs.append(result)
    return {"folder": out, "runs": runs, "files": [r.session_file for r in runs]}


def test_targets_follow_the_first_baseline_and_progression_follows_the_rules(programme):
    f1, f2, f3, _ = programme["files"]
    base1 = event(f1, "baseline")
    stages1 = {s.name: s for s in open_session(f1).stages}
    truth1 = planned_cadence(f1, stages1["base"].end_s - 6.0, stages1["base"].end_s)
    # session 1 sets the programme baseline: the first step of its own baseline
    d1 = event(f1, "programme")
    assert (d1["action"], d1["step"], d1["baseline_cadence_spm"]) == ("first", 1, None)
    assert stages1["train"].target_cadence_spm == pytest.approx(base1["cadence_spm"] * 1.05, rel=1e-9)
    # session 2: the runner comes in faster (the habit kept), yet the target is of session 1's baseline
    base2 = event(f2, "baseline")
    assert base2["cadence_spm"] > base1["cadence_spm"] + 3.0
    d2 = event(f2, "programme")
    assert d2["baseline_cadence_spm"] == pytest.approx(base1["cadence_spm"], rel=1e-9)
    stages2 = {s.name: s for s in open_session(f2).stages}
    step2 = 1 + d2["step_percent"] / 100
    assert stages2["train"].target_cadence_spm == pytest.approx(truth1 * step2, abs=1.0)
    assert stages2["train"].target_cadence_spm == pytest.approx(base1["cadence_spm"] * step2, rel=1e-9)
    # the rules, recomputed from the files: session 1 kept its cadence (advance), session 2 did not
    rules = parse_protocol(PROTOCOL, "e2e.yaml").programme.progression
    for before, after, step_index, expected in ((f1, f2, 0, "advance"), (f2, f3, 1, "hold")):
        keep = next(s for s in open_session(before).stages if s.name == "keep")
        summary = json.loads(keep.summary_json)
        decided = prog.decide(rules, sessions_done=1, step_index=step_index,
                              last=prog.Outcome(retention_in_band_pct=100 * summary["in_band_fraction"]))
        recorded = event(after, "programme")
        assert (recorded["action"], recorded["step"]) == (decided.action, decided.step_index + 1)
        assert recorded["action"] == expected, recorded["reason"]
        independent = in_band_pct(before, "keep")
        assert (independent >= 80) == (expected == "advance"), (independent, recorded["reason"])
    assert event(f3, "programme")["step_percent"] == 7.5
    state = json.loads((programme["folder"] / "P21.programme.json").read_text())
    assert [h["action"] for h in state["history"]] == ["first", "advance", "hold", "recheck"]
    assert state["baseline"]["cadence_spm"] == pytest.approx(base1["cadence_spm"])
    assert state["sessions_done"] == 3 and state["rechecks_done"] == 1


def test_recheck_after_a_loss_of_retention_is_flagged(programme):
    f3, f4 = programme["files"][2], programme["files"][3]
    keep3 = next(s for s in open_session(f3).stages if s.name == "keep")
    with open_session(f4) as f:
        assert [s.name for s in f.stages] == ["stand", "recheck"]
        assert f.stages[1].target_cadence_spm == pytest.approx(keep3.target_cadence_spm)
    d = event(f4, "programme")
    assert d["kind"] == "recheck" and d["recheck"] == 1
    rc = event(f4, "recheck")
    assert rc["regression"] is True and rc["gain_lost_pct"] > 50, rc["reason"]
    # independently: the runner is back near the programme baseline, far from the retrained target
    st = open_session(f4).stages[1]
    truth = planned_cadence(f4, 0.5 * (st.start_s + st.end_s), st.end_s)
    base = d["baseline_cadence_spm"]
    lost = 100 * (1 - (truth - base) / (rc["retrained_target_spm"] - base))
    assert lost > 50 and rc["gain_lost_pct"] == pytest.approx(lost, abs=15)


def test_fatigue_drift_is_found_with_fatigue_on_and_not_off(programme):
    f1, f2, f3, _ = programme["files"]
    flags = {}
    for f in (f1, f2, f3):
        with open_session(f) as s:
            rows = drift_rows(s.stages, s.steps)
        flags[f] = {r["metric"]: r for r in rows if r["stage"] == "train"}
    tired = flags[f3]["valr"]
    assert tired["drift"] and tired["slope_ci_low"] > 0 and tired["change"] > 5, tired
    for f in (f1, f2):
        assert not flags[f]["valr"]["drift"], flags[f]["valr"]
    rep = load_session_report(f3, curves=False)
    assert any(d["drift"] and d["metric"] == "valr" and d["stage"] == "train" for d in rep.drift)
    assert next(r for r in rep.rows if r["stage"] == "train")["valr_drift"] is True


def test_sessions_lists_and_programme_report_shows_progression_rechecks_and_drift(programme, tmp_path):
    folder = programme["folder"]
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli_main(["sessions", str(folder), "--format", "json"]) == 0
    listed = json.loads(buf.getvalue())["sessions"]
    assert [(r["participant"], r["kind"], r["session"], r["status"]) for r in listed] == [
        ("P21", "training", 1, "complete"), ("P21", "training", 2, "complete"),
        ("P21", "training", 3, "complete"), ("P21", "recheck", None, "complete")]
    assert [r["action"] for r in listed] == ["first", "advance", "hold", "recheck"]
    assert listed[3]["regression"] is True and listed[0]["regression"] is None
    assert listed[1]["file"] == programme["files"][1].name
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli_main(["sessions", str(folder), "--participant", "P99"]) == 0
    assert "0 sessions of 0 participants" in buf.getvalue()
    page = tmp_path / "programme.html"
    assert cli_main(["report", "--programme", str(folder), "--out", str(page)]) == 0
    html = page.read_text()
    for needed in ("REGRESSION at recheck 1", "Progression", "advance", "hold", "Rechecks",
                   "Form under fatigue", "DRIFT", "train:valr"):
        assert needed in html, needed
    assert html.index("REGRESSION at recheck 1") < html.index("<h2>Sessions</h2>")  # flags first
    csv_out = tmp_path / "programme.csv"
    assert cli_main(["report", "--programme", str(folder), "--csv", "--out", str(csv_out)]) == 0
    lines = csv_out.read_text().splitlines()
    assert len(lines) == 5 and "regression" in lines[0]
    assert math.isfinite(float(lines[2].split(",")[lines[0].split(",").index(
        "programme_baseline_cadence_spm")]))
