"""Programmes without LSL: progression rules, recheck verdicts, targets of the programme baseline,
the programme state file (atomic, refused when damaged or foreign) and the setup/record cycle."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_protocol_machine import Lab, events

from labsuite import markers as mk
from labsuite import programme_state as ps
from labsuite.errors import ConfigError
from labsuite.lab import programme
from labsuite.protocol import progression as prog
from labsuite.protocol.machine import SessionMachine
from labsuite.protocol.schema import ProtocolError, load_protocol, parse_protocol

REPO = Path(__file__).resolve().parents[1]

PROG = """\
schema: labsuite-protocol/1
name: staged
speed_m_s: 3.0
auto_start: true  # scripted: the operator's Start has tests of its own
checkins: {at_start: false, at_stage_boundaries: false}
programme:
  name: p
  sessions: [{label: "1"}, {label: "2"}, {label: "3"}]
  progression: {steps_percent: [5, 7.5, 10], advance_in_band_percent: 80}
  rechecks: {after_days: [7, 28], duration_s: 20, max_gain_lost_percent: 50, max_valr_rise_percent: 10}
stages:
  - {name: stand, kind: quiet_standing, duration_s: 2}
  - {name: base, kind: baseline, duration_s: 10, measure_last_steps: 10}
  - name: train
    kind: cadence
    duration_s: 10
    target_percent: progression
    of: programme_baseline
    cues: {metronome: {spm: target}}
  - {name: keep, kind: retention, duration_s: 10, target_percent: progression, of: programme_baseline}
"""


def rules():
    return parse_protocol(PROG, "p.yaml").programme


# ---- the rules ---------------------------------------------------------------------------------

def test_progression_rules():
    p = rules().progression
    first = prog.decide(p, sessions_done=0, step_index=None, last=None)
    assert (first.action, first.step_index, first.step_percent) == ("first", 0, 5.0)
    good = prog.Outcome(retention_in_band_pct=85.0)
    adv = prog.decide(p, sessions_done=1, step_index=0, last=good, last_number=1)
    assert (adv.action, adv.step_index, adv.step_percent) == ("advance", 1, 7.5)
    assert "85 %" in adv.reason and ">= 80 %" in adv.reason and "session 1" in adv.reason
    # exactly at the criterion advances; just under holds
    assert prog.decide(p, sessions_done=1, step_index=0,
                       last=prog.Outcome(retention_in_band_pct=80.0)).action == "advance"
    hold = prog.decide(p, sessions_done=1, step_index=1, last=prog.Outcome(retention_in_band_pct=79.9))
    assert (hold.action, hold.step_index) == ("hold", 1)
    top = prog.decide(p, sessions_done=3, step_index=2, last=good)
    assert (top.action, top.step_index) == ("hold", 2) and "last step" in top.reason
    pain = prog.Outcome(retention_in_band_pct=95.0, pain_rule_fired=True, pain_detail="pain 5 -> stop")
    back = prog.decide(p, sessions_done=2, step_index=2, last=pain)
    assert (back.action, back.step_index, back.step_percent) == ("step_back", 1, 7.5)
    assert "pain 5 -> stop" in back.reason
    assert prog.decide(p, sessions_done=1, step_index=0, last=pain).action == "hold"  # not below 1
    none = prog.decide(p, sessions_done=1, step_index=0, last=prog.Outcome())
    assert none.action == "hold" and "no scored retention" in none.reason
    held = prog.decide(p.model_copy(update={"on_pain": "hold"}), sessions_done=2, step_index=2,
                       last=pain)
    assert (held.action, held.step_index) == ("hold", 2)
    assert prog.decide(None, sessions_done=3, step_index=None, last=good).action == "fixed"


def test_recheck_verdict():
    rc = rules().rechecks
    plan = prog.RecheckPlan(number=1, rules=rc, retrained_target_spm=172.0, retrained_valr_bw_per_s=60.0)
    kept = prog.recheck_verdict(plan, 160.0, 169.0, 62.0)  # kept 9 of 12 spm; VALR +3.3 %
    assert kept.gain_lost_pct == pytest.approx(25.0) and kept.valr_rise_pct == pytest.approx(100 / 30)
    assert not kept.regression
    lost = prog.recheck_verdict(plan, 160.0, 165.0, 62.0)  # kept 5 of 12: lost 58 %
    assert lost.regression and "lost 58 %" in lost.reason
    loaded = prog.recheck_verdict(plan, 160.0, 171.0, 67.0)  # VALR +11.7 %
    assert loaded.regression and "VALR +12 %" in loaded.reason
    unknown = prog.recheck_verdict(plan, 160.0, 171.0, math.nan)
    assert not unknown.regression and "not measurable" in unknown.reason


def test_schema_of_and_progression_are_validated():
    text = PROG.replace("target_percent: progression\n    of: programme_baseline\n",
                        "target_spm: 170\n    of: programme_baseline\n")
    with pytest.raises(ProtocolError, match="'of' says what target_percent is relative to"):
        parse_protocol(text, "p.yaml")
    with pytest.raises(ProtocolError, match=r"needs programme\.progression"):
        parse_protocol(PROG.replace("  progression: {steps_percent: [5, 7.5, 10], "
                                    "advance_in_band_percent: 80}\n", ""), "p.yaml")
    with pytest.raises(ProtocolError, match=r"of: 'session_baseline'|of"):
        parse_protocol(PROG.replace("of: programme_baseline", "of: first_baseline"), "p.yaml")
    with pytest.raises(ProtocolError, match="not in order"):
        parse_protocol(PROG.replace("after_days: [7, 28]", "after_days: [28, 7]"), "p.yaml")
    # a % target of the programme baseline needs no baseline stage in the file
    no_base = PROG.replace("  - {name: base, kind: baseline, duration_s: 10, measure_last_steps: 10}\n", "")
    parse_protocol(no_base, "p.yaml")
    with pytest.raises(ProtocolError, match="needs a baseline stage before it"):
        parse_protocol(no_base.replace("of: programme_baseline", "of: session_baseline"), "p.yaml")
    for name in ("willy2016_cadence_programme", "heiderscheit2011_step_rate"):
        p = load_protocol(REPO / "protocols" / f"{name}.yaml")
        assert {getattr(s, "of", None) for s in p.stages if getattr(s, "target_percent", None)
                is not None} == {"programme_baseline"}, name


# ---- the machine with a programme context ---------------------------------------------------------

def run_machine(protocol, context, cadence=160.0, seconds=40.0):
    m = SessionMachine(protocol, programme_session=2, participant="P01", context=context)
    lab = Lab(m, cadence_spm=cadence)
    lab.run(seconds)
    return m, lab


def test_targets_follow_the_programme_baseline_not_the_session_baseline():
    p = parse_protocol(PROG, "p.yaml").for_session(2)
    base = prog.Baseline(cadence_spm=150.0, valr_bw_per_s=70.0)
    decision = prog.Decision("advance", 1, 7.5, "test")
    ctx = prog.ProgrammeContext(kind="training", decision=decision, baseline=base, sessions_done=1)
    m, lab = run_machine(p, ctx, cadence=165.0)  # this session's own baseline is 165
    assert m.finished and m.end_reason == "completed"
    d = events(lab.actions, "programme")[0]
    assert (d["action"], d["step"], d["step_percent"], d["baseline_cadence_spm"]) == (
        "advance", 2, 7.5, 150.0)
    train = next(r for r in m.records if r.name == "train")
    assert train.target_cadence_spm == pytest.approx(150.0 * 1.075)
    assert m.baseline_cadence_spm == pytest.approx(165.0, abs=0.5)
    # the first session: no programme baseline yet, so its own is used
    first = prog.ProgrammeContext(kind="training", decision=prog.Decision("first", 0, 5.0, "t"),
                                  baseline=None, sessions_done=0)
    m1, _ = run_machine(p, first, cadence=165.0)
    assert next(r for r in m1.records if r.name == "train").target_cadence_spm == pytest.approx(
        m1.baseline_cadence_spm * 1.05)
    b = m1.view.baseline
    assert b is not None and b.ok and b.strike_pattern is None and math.isnan(b.contact_s)
    # progression without a step, and a programme baseline that is neither known nor measured here
    with pytest.raises(ConfigError, match="progression"):
        SessionMachine(p, context=None)
    no_base = parse_protocol(PROG.replace(
        "  - {name: base, kind: baseline, duration_s: 10, measure_last_steps: 10}\n", ""), "p.yaml")
    with pytest.raises(ConfigError, match="not measured yet"):
        SessionMachine(no_base.for_session(1), context=first)


def test_recheck_session_flags_a_regression():
    from labsuite.protocol.schema import recheck_protocol

    file = parse_protocol(PROG, "p.yaml")
    p = recheck_protocol(file, target_spm=172.0)
    assert [s.name for s in p.stages] == ["stand", "recheck"]
    assert p.stages[1].kind == "retention" and p.stages[1].target_spm == 172.0
    plan = prog.RecheckPlan(number=1, rules=file.programme.rechecks, retrained_target_spm=172.0,
                            retrained_valr_bw_per_s=60.0)
    ctx = prog.ProgrammeContext(kind="recheck", decision=prog.Decision("recheck", 2, math.nan, "r"),
                                baseline=prog.Baseline(cadence_spm=160.0), sessions_done=3, recheck=plan)
    m, lab = run_machine(p, ctx, cadence=163.0, seconds=30.0)  # kept 3 of 12 spm
    r = events(lab.actions, "recheck")
    assert len(r) == 1 and r[0]["regression"] is True
    assert r[0]["gain_lost_pct"] == pytest.approx(75.0, abs=3.0)
    assert isinstance(m.view.recheck, mk.RecheckResult) and m.view.recheck.regression
    for a in lab.actions:  # the programme's markers decode to themselves
        if a.name in ("programme", "recheck"):
            back = mk.decode(a.text, strict=True)
            assert type(back) is type(a.marker) and back.encode() == a.text and not back.problems
    # the machine's lab loads 80 * (160 / spm)^2 BW/s: 70 BW/s at 171 spm, +17 % vs 60: flagged
    _m2, lab2 = run_machine(p, ctx, cadence=171.0, seconds=30.0)
    r2 = events(lab2.actions, "recheck")[0]
    assert r2["gain_lost_pct"] == pytest.approx(8.3, abs=3.0)
    assert r2["valr_rise_pct"] == pytest.approx(100 * (80 * (160 / 171) ** 2 / 60 - 1), abs=1.0)
    assert r2["regression"] is True and "VALR" in r2["reason"] and "cadence gain" not in r2["reason"]
    ok = prog.ProgrammeContext(kind="recheck", decision=ctx.decision, baseline=ctx.baseline,
                               sessions_done=3, recheck=prog.RecheckPlan(
                                   number=1, rules=plan.rules, retrained_target_spm=172.0,
                                   retrained_valr_bw_per_s=68.0))
    _m3, lab3 = run_machine(p, ok, cadence=171.0, seconds=30.0)
    assert events(lab3.actions, "recheck")[0]["regression"] is False
    with pytest.raises(ConfigError, match="plans no rechecks"):
        recheck_protocol(parse_protocol(PROG.replace(
            "  rechecks: {after_days: [7, 28], duration_s: 20, max_gain_lost_percent: 50, "
            "max_valr_rise_percent: 10}\n", ""), "p.yaml"), target_spm=170.0)


# ---- the state file ------------------------------------------------------------------------------

def test_state_file_round_trip_is_atomic_and_plain(tmp_path):
    path = ps.state_path(tmp_path, "P01")
    assert path == tmp_path / "P01.programme.json"
    s = ps.new_state("P01", "staged")
    s = ps.updated(s, sessions_done=1, step_index=0,
                   baseline={"cadence_spm": 160.0, "valr_bw_per_s": None, "strike_pattern": "rearfoot"})
    ps.save_state(path, s)
    assert [p.name for p in tmp_path.iterdir()] == ["P01.programme.json"]  # no temp file left
    data = json.loads(path.read_text())
    assert data["format"] == "labsuite-programme-state/1" and data["baseline"]["cadence_spm"] == 160.0
    back = ps.load_state(path, participant_id="P01", protocol="staged")
    assert back == s
    assert ps.load_state(tmp_path / "nobody.programme.json") is None


@pytest.mark.parametrize("participant", ["../P01", "P01/x", ".hidden", "-x", "", "a" * 33])
def test_state_path_only_from_a_valid_participant_id(tmp_path, participant):
    with pytest.raises(ConfigError, match="pseudonymous id"):
        ps.state_path(tmp_path, participant)


@pytest.mark.parametrize("content, message", [
    (b'{"format": "labsuite-programme-state/1", "participant": "P01"', "not valid JSON"),
    (b'\xff\xfe{}', "not UTF-8"),
    (b'{"format": "other-tool/3", "x": 1}', "not a labsuite programme state file"),
    (b'[1, 2]', "not a labsuite programme state file"),
    (b'{"format": "labsuite-programme-state/1", "participant": "P01", "protocol": "staged", '
     b'"created_utc": "", "updated_utc": "", "sessions_done": -1}', "field sessions_done"),
    (b'{"format": "labsuite-programme-state/1", "participant": "P01", "protocol": "staged", '
     b'"created_utc": "", "updated_utc": "", "extra": 1}', "field extra"),
    (b'{"format": "labsuite-programme-state/1", "participant": "P02", "protocol": "staged", '
     b'"created_utc": "", "updated_utc": ""}', "belongs to participant 'P02'"),
    (b'{"format": "labsuite-programme-state/1", "participant": "P01", "protocol": "other", '
     b'"created_utc": "", "updated_utc": ""}', "is for protocol 'other'"),
    (b" " * (ps.MAX_BYTES + 1), "larger than"),
])
def test_damaged_or_foreign_state_is_refused(tmp_path, content, message):
    path = tmp_path / "P01.programme.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as err:
        ps.load_state(path, participant_id="P01", protocol="staged")
    assert str(path) in str(err.value)


# ---- setup and record: the cycle between sessions ------------------------------------------------

def test_setup_and_record_carry_the_programme(tmp_path):
    file = parse_protocol(PROG, "p.yaml")
    s1 = programme.setup(file, participant_id="P01", folder=tmp_path, session=1, recheck=False)
    assert s1 is not None and s1.context.decision.action == "first"
    with pytest.raises(ConfigError, match="no finished training session"):
        programme.setup(file, participant_id="P01", folder=tmp_path, session=None, recheck=True)
    m, _ = run_machine(s1.protocol, s1.context, cadence=160.0)
    st = programme.record(s1, records=m.records, view=m.view, end_reason=m.end_reason,
                          session_file=tmp_path / "P01_s1.h5")
    assert st.sessions_done == 1 and st.baseline.cadence_spm == pytest.approx(160.0, abs=0.5)
    # the Lab keeps 160 spm, below the +5 % band: retention 0 % in band, so session 2 holds
    assert st.last_training.in_band_pct == 0.0
    s2 = programme.setup(file, participant_id="P01", folder=tmp_path, session=2, recheck=False)
    assert (s2.context.decision.action, s2.context.decision.step_index) == ("hold", 0)
    m2, _ = run_machine(s2.protocol, s2.context, cadence=168.0)  # 160 * 1.05: all in band
    programme.record(s2, records=m2.records, view=m2.view, end_reason=m2.end_reason,
                     session_file=tmp_path / "P01_s2.h5")
    s3 = programme.setup(file, participant_id="P01", folder=tmp_path, session=3, recheck=False)
    assert (s3.context.decision.action, s3.context.decision.step_percent) == ("advance", 7.5)
    assert s3.context.baseline.cadence_spm == pytest.approx(160.0, abs=0.5)  # still session 1's
    rc = programme.setup(file, participant_id="P01", folder=tmp_path, session=None, recheck=True)
    assert rc.context.kind == "recheck" and rc.context.recheck.retrained_target_spm == pytest.approx(
        st.baseline.cadence_spm * 1.05)
    state = json.loads((tmp_path / "P01.programme.json").read_text())
    assert [h["action"] for h in state["history"]] == ["first", "hold"]
    with pytest.raises(ConfigError, match="is for protocol 'staged'"):
        programme.setup(file.model_copy(update={"name": "other"}), participant_id="P01",
                        folder=tmp_path, session=1, recheck=False)


# ---- a stage that ends or pauses on drift ----------------------------------------------------------

DRIFTING = """\
  - {name: base, kind: baseline, duration_s: 10, measure_last_steps: 10}
  - name: train
    kind: cadence
    duration_s: 120
    target_spm: 160
    cues: {metronome: {spm: target}}
    drift: {metric: valr, max_change_percent: 10, window_s: 20, action: ACTION}
  - {name: keep, kind: retention, duration_s: 10}
"""


@pytest.mark.parametrize("action", ["end", "pause"])
def test_a_stage_ends_or_pauses_on_drift(action):
    from test_protocol_machine import NO_CHECKINS, protocol

    m = SessionMachine(protocol(DRIFTING.replace("ACTION", action), NO_CHECKINS))
    lab = Lab(m, cadence_spm=160.0)
    lab.run(10.0)  # baseline
    t_train = lab.t
    # VALR climbs 0.5 %/s from the start of training: after 10 s settle and two 20 s windows the
    # last window's mean is 20 s later than the first's: +10 %, the limit, then more
    lab.valr_of = lambda spm: 80.0 * (1 + 0.005 * max(0.0, lab.t - t_train))
    lab.run(60.0)
    d = events(lab.actions, "drift")
    assert len(d) == 1 and d[0]["metric"] == "valr" and d[0]["action"] == action
    drift_action = next(a for a in lab.actions if a.name == "drift")
    back = mk.decode(drift_action.text, strict=True)
    assert type(back) is mk.Drift and back.encode() == drift_action.text and not back.problems
    assert d[0]["change_pct"] >= 10.0 and d[0]["limit_pct"] == 10.0
    fired = next(a.t_s for a in lab.actions if a.name == "drift")
    assert 50.0 <= fired - t_train <= 56.0  # 10 + 2 x 20 s, then the first crossing of +10 %
    if action == "end":
        train = next(r for r in m.records if r.name == "train")
        assert train.end_reason == "drift" and m.stage.name == "keep"
    else:
        assert m.paused and m.stage.name == "train"
        assert events(lab.actions, "operator_decision_required")[-1]["reason"] == "drift"
        lab.actions += m.resume(lab.t)
        lab.run(5.0)
        assert not m.paused and len(events(lab.actions, "drift")) == 1  # once per stage


def test_steady_loading_never_fires_the_drift_rule():
    from test_protocol_machine import NO_CHECKINS, protocol

    m = SessionMachine(protocol(DRIFTING.replace("ACTION", "end"), NO_CHECKINS))
    lab = Lab(m, cadence_spm=160.0)
    lab.run(150.0)
    assert events(lab.actions, "drift") == [] and m.finished, m.records
    assert [r.end_reason for r in m.records] == ["time", "time", "time"]
    with pytest.raises(ProtocolError, match="two windows"):
        protocol(DRIFTING.replace("ACTION", "end").replace("window_s: 20", "window_s: 60"), NO_CHECKINS)


def test_run_options_for_programmes_are_checked(tmp_path):
    from labsuite.lab.run import RunOptions, prepare_session

    proto = tmp_path / "p.yaml"
    proto.write_text(PROG)
    with pytest.raises(ConfigError, match=r"--session N .* or --recheck, not both"):
        RunOptions(protocol_path=proto, participant_id="P01", simulate=True, programme_session=2,
                   recheck=True)
    with pytest.raises(ConfigError, match="--sim-days-later is for the simulated participant"):
        RunOptions(protocol_path=proto, participant_id="P01", lab_file=tmp_path / "lab.yaml",
                   sim_days_later=3.0)
    with pytest.raises(ConfigError, match="--sim-days-later: expected 0-3650"):
        RunOptions(protocol_path=proto, participant_id="P01", simulate=True, sim_days_later=-1.0)
    # nothing is started or written: the decision comes from the (missing) state file
    _, setup = prepare_session(RunOptions(protocol_path=proto, participant_id="P01",
                                                 simulate=True, out_dir=tmp_path / "out",
                                                 programme_session=1))
    assert setup is not None and setup.context.decision.action == "first"
    assert not (tmp_path / "out").exists()
    # a damaged state file stops the run before anything starts, naming the file
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "P01.programme.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"P01\.programme\.json: programme state file is not valid JSON"):
        prepare_session(RunOptions(protocol_path=proto, participant_id="P01", simulate=True,
                                   out_dir=tmp_path / "out", programme_session=2))
