"""The stage machine without LSL: stages, targets, cues, fading, check-ins, operator and watchdogs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from labsuite.errors import ConfigError
from labsuite.protocol.machine import SessionMachine, cadence_from_steps
from labsuite.protocol.schema import load_protocol, parse_protocol
from labsuite.stages import StageRecord
from labsuite.steps import empty_steps

REPO = Path(__file__).resolve().parents[1]

TICK_S = 0.05


def protocol(stages: str, extra: str = "", auto_start: bool = True) -> object:
    # auto_start: most sessions here are scripted (the operator's Start has tests of its own)
    text = (f"schema: labsuite-protocol/1\nname: t\nspeed_m_s: 3.0\n"
            f"auto_start: {str(auto_start).lower()}\n{extra}\nstages:\n{stages}")
    return parse_protocol(text, "test.yaml")


class Lab:
    """Drive a machine with a virtual participant stepping at ``cadence_spm`` (ticks of 50 ms)."""

    def __init__(self, machine: SessionMachine, cadence_spm: float = 160.0, t0: float = 1000.0) -> None:
        self.m = machine
        self.t = t0
        self.cadence_spm = cadence_spm
        self.valr_of = lambda spm: 80.0 * (160.0 / spm) ** 2
        self.next_strike = t0 + 0.3
        self.foot = 0
        self.actions = list(machine.start(t0))
        self.stepping = True
        self.force = True
        self.force_n = 700.0  # 71.4 kg on the plates
        # the treadmill's measured speed at a time (None: no treadmill samples arrive)
        self.belt = None

    def run(self, seconds: float) -> list:
        out = []
        end = self.t + seconds
        while self.t < end - 1e-9 and not self.m.finished:
            self.t += TICK_S
            steps = empty_steps(0)
            if self.stepping:
                strikes = []
                while self.next_strike <= self.t:
                    strikes.append(self.next_strike)
                    self.next_strike += 60.0 / self.cadence_spm
                steps = empty_steps(len(strikes))
                for i, s in enumerate(strikes):
                    self.foot ^= 1
                    steps[i]["foot"] = self.foot
                    steps[i]["strike_s"] = s
                    steps[i]["step_s"] = 60.0 / self.cadence_spm
                    steps[i]["cadence_spm"] = self.cadence_spm
                    steps[i]["valr_bw_per_s"] = self.valr_of(self.cadence_spm)
                    steps[i]["tibial_peak_g"] = 8.0 * 160.0 / self.cadence_spm
                    steps[i]["crossover"] = 0
            else:
                self.next_strike = self.t + 60.0 / self.cadence_spm
            if self.force:
                out += self.m.note_force(self.t, self.force_n)
            if self.belt is not None:
                v = self.belt(self.t)
                out += self.m.note_belt(np.array([self.t]), np.array([[v, v]]))
            out += self.m.feed(self.t, steps)
        self.actions += out
        return out


def events(actions, name=None):
    return [a.fields for a in actions if a.channel == "marker" and (name is None or a.name == name)]


def commands(actions, name=None):
    return [a.fields for a in actions if a.channel == "command" and (name is None or a.name == name)]


NO_CHECKINS = "checkins: {at_start: false, at_stage_boundaries: false}"

BASE_PLUS = """\
  - {name: stand, kind: quiet_standing, duration_s: 4}
  - {name: base, kind: baseline, duration_s: 20, measure_last_steps: 30}
  - name: up
    kind: cadence
    duration_s: 30
    target_percent: 7.5
    band_percent: 3
    cues: {metronome: {spm: target}, visual_band: true, loading_rate: {max_percent_of_baseline: 80}}
  - {name: keep, kind: retention, duration_s: 10, target_percent: 7.5}
"""


def test_full_session_measures_baseline_sets_targets_and_records_stages():
    m = SessionMachine(parse_protocol(
        f"schema: labsuite-protocol/1\nname: t\nspeed_m_s: 3.0\n{NO_CHECKINS}\nstages:\n{BASE_PLUS}"),
        auto_start="--auto-start")
    lab = Lab(m, cadence_spm=160.0)
    lab.run(4.0 + 20.0 + 0.2)
    assert m.stage.name == "up"
    assert m.baseline_cadence_spm == pytest.approx(160.0, rel=1e-9)
    assert m.target_cadence_spm == pytest.approx(172.0)
    assert m.band_spm == pytest.approx((172.0 - 5.16, 172.0 + 5.16))
    (base,) = events(lab.actions, "baseline")
    assert base["ok"] and base["valr_bw_per_s"] == pytest.approx(80.0)
    (wt,) = events(lab.actions, "body_weight")
    assert wt["mass_kg"] == pytest.approx(700.0 / 9.80665, abs=0.01)
    lab.cadence_spm = 172.0
    lab.run(60)
    assert m.finished and m.end_reason == "completed"
    records = [StageRecord.from_marker(e) for e in events(lab.actions, "stage_end")]
    assert [r.name for r in records] == ["stand", "base", "up", "keep"]
    assert [r.end_reason for r in records] == ["time"] * 4
    assert records[0].start_s == 1000.0
    assert records[1].end_s - records[1].start_s == pytest.approx(20.0, abs=TICK_S + 1e-9)
    up = json.loads(records[2].summary_json)
    assert up["cadence_spm"] == pytest.approx(172.0)
    # VALR falls with cadence in this participant: (160/172)^2 of baseline
    assert up["valr_percent_of_baseline"] == pytest.approx(100 * (160 / 172) ** 2)
    assert up["in_band_fraction"] > 0.9
    # the click as played is part of the stage's record (the shipped defaults)
    assert json.loads(records[2].feedback_json)["metronome"] == {
        "spm": "target", "sound": "woodblock", "volume_db": -6.0, "ear": "both", "tone_hz": 1000.0,
        "flash": False}
    # the belt: ramped start for the baseline, ramped stop at the end
    speeds = commands(lab.actions, "speed")
    assert speeds[0]["right_m_s"] == 3.0 and speeds[0]["accel_m_s2"] == 0.5
    assert commands(lab.actions, "stop")[-1]["decel_m_s2"] == 0.5


def test_metronome_beats_are_evenly_timed_and_counted():
    m = SessionMachine(protocol("  - {name: up, kind: cadence, duration_s: 10, target_spm: 150, "
                                "cues: {metronome: {spm: target}}}\n", NO_CHECKINS))
    lab = Lab(m, cadence_spm=150)
    lab.run(12)
    beats = [a for a in lab.actions if a.name == "beat"]
    times = np.array([a.t_s for a in beats])
    # independent count: beats at t0, t0 + 0.4, ... strictly before the stage ends after 10 s
    assert len(beats) == pytest.approx(10.0 / 0.4, abs=1)
    assert np.allclose(np.diff(times), 0.4)
    assert [b.fields["n"] for b in beats] == list(range(1, len(beats) + 1))
    mets = events(lab.actions, "metronome")
    assert mets[0]["spm"] == 150 and mets[-1]["spm"] is None


def test_timer_beats_are_flagged_and_the_session_start_says_who_beats():
    m = SessionMachine(protocol("  - {name: up, kind: cadence, duration_s: 4, target_spm: 150, "
                                "cues: {metronome: {spm: target}}}\n", NO_CHECKINS))
    lab = Lab(m, cadence_spm=150)
    lab.run(5)
    assert events(lab.actions, "session_start")[0]["beats"] == "timer"
    beats = events(lab.actions, "beat")
    assert beats and all(b["clock"] == "timer" and "dac_lsl_s" not in b for b in beats)
    # without a metronome cue nobody beats
    m = SessionMachine(protocol("  - {name: b, kind: baseline, duration_s: 2, measure_last_steps: 5}\n",
                                NO_CHECKINS))
    lab = Lab(m)
    lab.run(1)
    assert events(lab.actions, "session_start")[0]["beats"] is None


def test_with_the_audio_metronome_the_session_says_tempo_and_click_and_makes_no_beats():
    from labsuite.protocol.machine import METRONOME_ANNOUNCE_S

    m = SessionMachine(protocol(
        "  - {name: a, kind: cadence, duration_s: 5, target_spm: 150, cues: {metronome: "
        "{spm: target, sound: tone, tone_hz: 880, volume_db: -12, ear: alternate, flash: true}}}\n"
        "  - {name: b, kind: cadence, duration_s: 5, target_spm: 165, cues: {metronome: {spm: target}}}\n",
        NO_CHECKINS), beats="audio")
    lab = Lab(m, cadence_spm=150)
    lab.run(11)
    assert events(lab.actions, "session_start")[0]["beats"] == "audio"
    assert not events(lab.actions, "beat")  # the clicks are the beats, from the metronome role
    mets = [(a.t_s - 1000.0, a.fields) for a in lab.actions if a.name == "metronome"]
    changes = [(t, f["spm"]) for t, f in mets if not f["again"]]
    assert [spm for _, spm in changes] == [150.0, None, 165.0, None]
    assert [t for t, _ in changes] == pytest.approx([0.0, 5.0, 5.0, 10.0], abs=2 * TICK_S + 1e-9)
    first = mets[0][1]
    assert (first["sound"], first["tone_hz"], first["volume_db"], first["ear"], first["flash"]) == (
        "tone", 880.0, -12.0, "alternate", True)
    second = next(f for t, f in mets if f["spm"] == 165.0)
    assert (second["sound"], second["ear"], second["flash"]) == ("woodblock", "both", False)
    # said again every second while it plays, with the same state; never while it is off
    again = [(t, f) for t, f in mets if f["again"]]
    times = np.array([t for t, _ in again])
    assert len(again) == pytest.approx(2 * (5 / METRONOME_ANNOUNCE_S - 1), abs=2)
    assert np.all(np.diff(times[times < 5]) == pytest.approx(METRONOME_ANNOUNCE_S, abs=TICK_S + 1e-9))
    for t, f in again:
        assert f["spm"] == (150.0 if t < 5 else 165.0) and f["sound"] == ("tone" if t < 5 else "woodblock")
    with pytest.raises(ConfigError, match="session beats"):
        SessionMachine(protocol("  - {name: b, kind: baseline, duration_s: 2, measure_last_steps: 5}\n",
                                NO_CHECKINS), beats="loud")


def test_in_band_advance_needs_consecutive_steps():
    m = SessionMachine(protocol("  - {name: up, kind: cadence, duration_s: 600, target_spm: 170, "
                                "band_spm: 3, until_in_band_steps: 20, cues: {visual_band: true}}\n",
                                NO_CHECKINS))
    lab = Lab(m, cadence_spm=160)
    lab.run(20)
    assert not m.finished  # out of band: never advances
    lab.cadence_spm = 171
    lab.run(20 * 60 / 171 - 0.5)
    assert not m.finished
    lab.run(2)
    assert m.finished
    (rec,) = [StageRecord.from_marker(e) for e in events(lab.actions, "stage_end")]
    assert rec.end_reason == "in_band"


def test_until_steps_and_time_limit():
    m = SessionMachine(protocol("  - {name: b, kind: baseline, duration_s: 100, measure_last_steps: 10, "
                                "until_steps: 50}\n", NO_CHECKINS))
    lab = Lab(m, cadence_spm=180)
    lab.run(100)
    (rec,) = [StageRecord.from_marker(e) for e in events(lab.actions, "stage_end")]
    assert rec.end_reason == "steps"
    assert json.loads(rec.summary_json)["n_steps"] == 50


def test_fading_switches_cues_on_and_off_within_a_stage():
    m = SessionMachine(protocol("  - {name: up, kind: cadence, duration_s: 40, target_spm: 170, "
                                "cues: {metronome: {spm: target}, visual_band: true, "
                                "fading: {on_fraction: 0.25, period_s: 20}}}\n", NO_CHECKINS))
    lab = Lab(m, cadence_spm=170)
    lab.run(41)
    cues = [(a.t_s - 1000.0, a.fields["feedback_on"]) for a in lab.actions if a.name == "cue"]
    assert [on for _, on in cues] == [True, False, True, False]
    assert [round(t) for t, _ in cues] == [0, 5, 20, 25]
    beats = np.array([a.t_s - 1000.0 for a in lab.actions if a.name == "beat"])
    assert len(beats) > 0
    assert np.all((beats % 20.0) < 5.0 + TICK_S)


def test_programme_session_overrides_duration_and_fading():
    p = load_protocol(REPO / "protocols" / "willy2016_cadence_programme.yaml")
    s6 = p.for_session(6)
    training = next(s for s in s6.stages if s.name == "training")
    assert training.duration_s == 1800 and training.cues.fading.on_fraction == 0.5
    with pytest.raises(ConfigError, match=r"give --session 1\.\.8"):
        p.for_session(None)
    with pytest.raises(ConfigError, match=r"sessions 1\.\.8"):
        p.for_session(9)
    m = SessionMachine(s6, programme_session=6, auto_start="test")
    (start,) = events(m.start(0.0), "session_start")
    assert start["programme_session"] == 6 and start["programme_sessions"] == 8


PAIN = """\
  - {name: a, kind: baseline, duration_s: 10, measure_last_steps: 10}
  - {name: b, kind: cadence, duration_s: 10, target_percent: 5, cues: {visual_band: true}}
"""


@pytest.mark.parametrize(("answers", "end", "paused"), [
    ([0, 1], "completed", False),
    ([1, 2], "completed", False),
    ([1, 5], "pain_stop", False),
    ([0, 2], "pain_stop", False),  # a rise of 2 from the first rating
    ([2, 3], None, True),  # rise of 1 only, but pain >= 3 pauses
])
def test_pain_rules(answers, end, paused):
    m = SessionMachine(protocol(PAIN))
    lab = Lab(m)
    asked = events(lab.actions, "checkin_request")
    assert asked[0]["reason"] == "session_start"
    lab.actions += m.answer_pain(lab.t, answers[0])
    lab.run(10.2)  # end of stage a: check-in asked
    assert events(lab.actions, "checkin_request")[-1]["reason"] == "stage_end"
    lab.actions += m.answer_pain(lab.t, answers[1])
    if paused:
        assert m.paused
        assert events(lab.actions, "operator_decision_required")
        assert commands(lab.actions)[-1]["cmd"] == "stop"
        left = m.stage_time_left_s()
        lab.run(5)
        assert m.stage_time_left_s() == left  # clock frozen while paused
        lab.actions += m.resume(lab.t)
        assert commands(lab.actions)[-1]["cmd"] == "speed"
    lab.run(12)
    if end is not None:
        assert m.end_reason == end
    else:
        assert m.end_reason == "completed"
    checks = events(lab.actions, "checkin")
    assert [c["pain"] for c in checks][:2] == answers


def test_pain_rating_is_validated():
    m = SessionMachine(protocol(PAIN))
    m.start(0.0)
    for bad in (-1, 11, 2.5, True, "3"):
        with pytest.raises(ConfigError, match="pain rating"):
            m.answer_pain(0.0, bad)


def test_operator_skip_abort_and_emergency_stop():
    m = SessionMachine(protocol(PAIN, NO_CHECKINS))
    lab = Lab(m)
    lab.run(2)
    lab.actions += m.skip(lab.t, source="gui")
    assert m.stage.name == "b"
    # baseline skipped before enough steps? 2 s at 160 spm gives 5 steps: measured anyway
    assert math.isfinite(m.baseline_cadence_spm)
    lab.run(1)
    out = m.emergency_stop(lab.t, source="cli")
    assert out[0].channel == "command" and out[0].name == "emergency_stop"
    assert m.finished and m.end_reason == "emergency_stop"
    recs = [StageRecord.from_marker(e) for e in events(out, "stage_end")]
    assert recs[-1].end_reason == "safety_stop"
    ops = events(lab.actions, "operator")
    assert ops[0]["action"] == "skip" and ops[0]["source"] == "gui"

    m2 = SessionMachine(protocol(PAIN, NO_CHECKINS))
    lab2 = Lab(m2)
    lab2.run(3)
    out = m2.abort(lab2.t)
    assert m2.end_reason == "aborted"
    assert [c["cmd"] for c in commands(out)] == ["stop"]


def test_force_watchdog_stops_a_moving_belt_only():
    m = SessionMachine(protocol("  - {name: s, kind: quiet_standing, duration_s: 3}\n"
                                "  - {name: b, kind: baseline, duration_s: 60}\n", NO_CHECKINS))
    lab = Lab(m)
    lab.force = False
    lab.run(2.5)  # belt stopped: missing force data is not a hazard
    assert not m.finished and not m.paused
    lab.force = True
    lab.run(10)
    lab.force = False
    t_lost = lab.t
    out = lab.run(2)
    # a dead plate driver pauses the session (belt stopped at the safety rate), it does not end it
    assert m.paused and not m.finished and list(m.lost_devices) == ["force"]
    (stop,) = [a for a in out if a.channel == "command"]
    assert stop.name == "stop" and stop.fields["reason"] == "force_timeout"
    assert stop.fields["decel_m_s2"] == m.protocol.safety.stop_decel_m_s2
    assert 0.4 < stop.t_s - t_lost <= 0.4 + TICK_S + 1e-9
    assert events(out, "safety_stop")[0]["reason"] == "force_timeout"
    assert events(out, "paused")[0]["reason"] == "force_timeout"


DEVICE = NO_CHECKINS + "\nsafety: {device_resume_timeout_s: 20}"


def _lost_plate(extra: str = DEVICE, **kw: object) -> tuple[SessionMachine, Lab]:
    m = SessionMachine(protocol("  - {name: b, kind: baseline, duration_s: 30}\n", extra), **kw)
    lab = Lab(m)
    lab.run(8)
    lab.force = False
    lab.run(1)
    assert m.paused
    return m, lab


def test_a_lost_device_pauses_until_it_is_back_and_the_operator_resumes():
    m, lab = _lost_plate()
    steps_before = int(m.live()["steps"])
    active = m.live()["time_left_s"]
    lab.run(3)  # paused: no steps counted, the stage clock stands still
    assert m.live()["steps"] == steps_before and m.live()["time_left_s"] == active
    assert m.resume(lab.t, source="cli")[-1].name == "operator"  # refused: force still missing
    assert m.paused
    lab.force = True
    out = lab.run(0.2)
    back = events(out, "device_back")
    assert back and back[0]["device"] == "force" and back[0]["down_s"] > 3
    assert events(out, "operator_decision_required")[0]["reason"] == "device_back"
    assert m.paused  # back, but nobody confirmed yet
    out = m.resume(lab.t, source="cli")
    assert not m.paused and [c["cmd"] for c in commands(out)] == ["speed"]
    lab.run(40)
    assert m.end_reason == "completed"


def test_a_lost_device_ends_the_session_for_safety_when_not_resumed_in_time():
    m, lab = _lost_plate()
    lab.force = True
    lab.run(25)
    assert m.finished and m.end_reason == "safety_stop:device_lost"
    final = [e for e in events(lab.actions, "safety_stop") if e["reason"] == "device_lost"]
    assert final and "20 s" in final[0]["detail"]


def test_auto_resume_after_the_device_is_back_is_recorded_at_the_start():
    m, lab = _lost_plate(auto_resume=True)
    assert events(lab.actions, "session_start")[0]["auto_resume"] is True
    lab.force = True
    out = lab.run(0.5)
    assert events(out, "resumed") and not m.paused
    assert [e["source"] for e in events(out, "operator")] == ["auto_resume"]


def test_a_role_lost_and_back_by_name():
    m = SessionMachine(protocol("  - {name: b, kind: baseline, duration_s: 30}\n", DEVICE))
    lab = Lab(m)
    lab.run(5)
    out = m.device_lost(lab.t, "processor", "the processor process exited")
    assert m.paused and events(out, "safety_stop")[0]["device"] == "processor"
    assert m.device_lost(lab.t, "processor", "again") == []  # once per loss
    out = m.device_back(lab.t + 1, "processor")
    assert events(out, "device_back")[0]["down_s"] == pytest.approx(1.0)


def test_no_contact_watchdog_allows_the_ramp_then_stops():
    m = SessionMachine(protocol("  - {name: b, kind: baseline, duration_s: 60}\n",
                                NO_CHECKINS + "\nsafety: {no_contact_timeout_s: 2.0, accel_m_s2: 1.0}"))
    lab = Lab(m)
    lab.stepping = False
    lab.run(4.9)  # 3 s ramp + 2 s grace
    assert not m.finished
    lab.run(0.3)
    assert m.end_reason == "safety_stop:no_contact"


def test_belt_speed_ramps_at_the_set_acceleration():
    m = SessionMachine(protocol("  - {name: b, kind: baseline, duration_s: 60}\n", NO_CHECKINS))
    m.start(0.0)
    assert m.belt_speed_m_s(0.0) == 0.0
    assert m.belt_speed_m_s(2.0) == pytest.approx(1.0)
    assert m.belt_speed_m_s(10.0) == 3.0


def test_cadence_from_steps_is_60_over_mean_step_time():
    s = empty_steps(4)
    s["step_s"] = [0.35, 0.40, np.nan, 0.45]
    assert cadence_from_steps(s) == pytest.approx(60 / 0.4)


def test_feed_rejects_foreign_arrays():
    m = SessionMachine(protocol(PAIN, NO_CHECKINS))
    m.start(0.0)
    with pytest.raises(ConfigError, match="STEP_DTYPE"):
        m.feed(0.1, np.zeros(3))


def test_tibial_shock_and_loading_rate_targets_are_scored():
    m = SessionMachine(protocol(
        "  - {name: b, kind: baseline, duration_s: 10, measure_last_steps: 20}\n"
        "  - {name: t, kind: cadence, duration_s: 20, cues: {tibial_shock: {max_percent_of_baseline: 95},"
        " loading_rate: {max_percent_of_baseline: 90}}}\n", NO_CHECKINS))
    lab = Lab(m, cadence_spm=160)
    lab.run(10.1)
    cue = events(lab.actions, "cue")[-1]
    assert cue["tibial_max_g"] == pytest.approx(0.95 * 8.0)
    assert cue["valr_max_bw_per_s"] == pytest.approx(0.90 * 80.0)
    lab.run(10)  # still at baseline cadence: above both lines
    lab.cadence_spm = 172  # tibial 8*160/172 = 7.44 g < 7.6; VALR 80*(160/172)^2 = 69.2 < 72
    lab.run(11)
    rec = StageRecord.from_marker(events(lab.actions, "stage_end")[-1])
    s = json.loads(rec.summary_json)
    n_slow = 10 * 160 / 60
    n_fast = 10 * 172 / 60
    assert s["tibial_below_max_fraction"] == pytest.approx(n_fast / (n_slow + n_fast), abs=0.05)
    assert s["valr_below_max_fraction"] == pytest.approx(s["tibial_below_max_fraction"])
    assert math.isnan(rec.target_cadence_spm)


WEIGH_THEN_RUN = """\
  - {name: stand, kind: quiet_standing, duration_s: 4}
  - {name: base, kind: baseline, duration_s: 60, measure_last_steps: 200}
"""


def test_the_belt_waits_for_the_operators_start():
    m = SessionMachine(parse_protocol(f"schema: labsuite-protocol/1\nname: t\nspeed_m_s: 3.0\n"
                                      f"{NO_CHECKINS}\nstages:\n{WEIGH_THEN_RUN}"))
    lab = Lab(m)
    lab.run(10.0)
    assert m.stage.name == "base" and m.awaiting_start and m.paused
    assert commands(lab.actions, "speed") == [] and m.belt_speed_m_s(lab.t) == 0.0
    assert events(lab.actions, "awaiting_start") == [
        {"event": "awaiting_start", "stage": "base", "speed_m_s": 3.0}]
    assert m.live()["time_left_s"] == 60.0  # the stage clock waits too
    lab.actions += m.resume(lab.t, source="cli")  # resume is not Start
    assert m.awaiting_start and commands(lab.actions, "speed") == []
    lab.actions += m.start_belt(lab.t, source="gui")
    assert not m.paused and commands(lab.actions, "speed")[0]["right_m_s"] == 3.0
    (auth,) = events(lab.actions, "start_authorised")
    assert auth == {"event": "start_authorised", "source": "gui", "auto": False, "stage": "base"}
    assert m.view.start_authorised is not None and not m.view.awaiting_start
    lab.run(61.0)
    assert m.end_reason == "completed"


@pytest.mark.parametrize("auto, field", [("--auto-start", ""), (None, "auto_start: true")])
def test_auto_start_lets_a_scripted_study_start_the_belt_and_says_so(auto, field):
    m = SessionMachine(parse_protocol(f"schema: labsuite-protocol/1\nname: t\nspeed_m_s: 3.0\n"
                                      f"{field}\n{NO_CHECKINS}\nstages:\n{WEIGH_THEN_RUN}"),
                       auto_start=auto)
    lab = Lab(m)
    lab.run(4.2)
    assert not m.awaiting_start and commands(lab.actions, "speed")
    (auth,) = events(lab.actions, "start_authorised")
    assert auth == {"event": "start_authorised", "source": auto or "protocol", "auto": True,
                    "stage": "base"}
    assert events(lab.actions, "awaiting_start") == []


@pytest.mark.parametrize("force_n, given_kg, says", [
    (0.0, None, "measured 0.0 kg"),  # empty plates
    (3000.0, None, "measured 305.9 kg"),
    (800.0, 70.0, "more than 10 % from the given 70.0 kg"),  # 81.6 kg
])
def test_an_implausible_weigh_in_stops_before_the_belt_moves(force_n, given_kg, says):
    m = SessionMachine(protocol(WEIGH_THEN_RUN, NO_CHECKINS), expected_mass_kg=given_kg)
    lab = Lab(m)
    lab.force_n = force_n
    lab.run(6.0)
    assert m.end_reason == "safety_stop:implausible_weight"
    assert commands(lab.actions, "speed") == []
    (stop,) = events(lab.actions, "safety_stop")
    assert stop["reason"] == "implausible_weight" and says in stop["detail"]
    assert [r.name for r in m.records] == ["stand"]  # the belt stage never began


def test_a_plausible_weigh_in_within_10_percent_of_the_given_mass_goes_on():
    m = SessionMachine(protocol(WEIGH_THEN_RUN, NO_CHECKINS), expected_mass_kg=66.0)
    lab = Lab(m)
    lab.run(5.0)  # 71.4 kg measured, 8 % above 66 kg
    assert not m.finished and m.stage.name == "base" and commands(lab.actions, "speed")
    assert m.body_mass_kg == pytest.approx(700.0 / 9.80665)


def test_an_uncommanded_belt_stop_pauses_the_stage_and_its_steps_are_left_out_of_the_baseline():
    m = SessionMachine(protocol("  - {name: base, kind: baseline, duration_s: 60, measure_last_steps: 200}\n",
                                NO_CHECKINS), belt_feedback=True)
    lab = Lab(m)
    lab.belt = lambda t: m.belt_speed_m_s(t - 0.3)  # the belt follows the commands, late
    lab.run(20.0)
    assert events(lab.actions, "belt_fault") == []  # the commanded ramp is no fault
    t_fault = lab.t
    # the controller stops the belt by itself; the participant slows down with it
    lab.belt = lambda t: max(0.0, 3.0 - 0.5 * (t - t_fault))
    lab.cadence_spm = 120.0
    out = lab.run(2.0)
    (fault,) = events(out, "belt_fault")
    assert fault["reason"] == "off_speed" and fault["commanded_m_s"] == 3.0
    assert fault["measured_m_s"] < 2.75 and fault["steps_left_out"] >= 1
    assert t_fault - 0.1 <= fault["since_s"] <= t_fault + 0.1
    assert m.paused and m.live()["pause_reason"] == "belt_fault"
    assert events(out, "operator_decision_required")[0]["reason"] == "belt_fault"
    assert [c["cmd"] for c in commands(out)] == ["stop"]
    assert m.view.safety_events[-1][1].event == "belt_fault"
    lab.run(5.0)
    assert len(events(lab.actions, "belt_fault")) == 1  # one fault, one event
    lab.belt = lambda t: m.belt_speed_m_s(t - 0.3)
    lab.cadence_spm = 160.0
    lab.actions += m.resume(lab.t)
    lab.run(45.0)
    assert m.end_reason == "completed" and len(events(lab.actions, "belt_fault")) == 1
    (base,) = events(lab.actions, "baseline")
    # every step at 120 spm was taken while the belt was off its speed: none is in the baseline
    assert base["cadence_spm"] == pytest.approx(160.0, abs=0.01)
    summary = json.loads(m.records[0].summary_json)
    # those taken back at the fault, and those struck later while it lasted
    assert summary["belt_faults"] == 1 and summary["steps_off_speed"] > fault["steps_left_out"]
    assert summary["n_steps"] == base["n_steps"]


def test_the_treadmill_drivers_own_stop_and_a_silent_treadmill_are_belt_faults():
    m = SessionMachine(protocol("  - {name: base, kind: baseline, duration_s: 60}\n", NO_CHECKINS),
                       belt_feedback=True)
    lab = Lab(m)
    lab.belt = lambda t: m.belt_speed_m_s(t - 0.3)
    # a watchdog stop of a belt meant to stand still stops nothing: no fault, no pause
    assert m.note_treadmill_event(lab.t, "treadmill_watchdog_stop", "no heartbeat for 0.51 s") == []
    lab.run(10.0)
    out = m.note_treadmill_event(lab.t, "treadmill_watchdog_stop", "no session heartbeat sent for 0.52 s")
    (fault,) = events(out, "belt_fault")
    assert fault["reason"] == "treadmill_watchdog_stop" and m.paused
    lab.actions += out + m.resume(lab.t)
    lab.run(10.0)
    lab.belt = None  # the driver died: no more belt speeds
    t_quiet = lab.t
    out = lab.run(1.5)
    (fault,) = events(out, "belt_fault")
    assert fault["reason"] == "treadmill_silent" and m.paused
    assert 1.0 < out[0].t_s - t_quiet <= 1.0 + 2 * TICK_S


def test_a_belt_that_runs_while_it_waits_for_start_is_a_fault_and_is_told_to_stop():
    m = SessionMachine(parse_protocol(f"schema: labsuite-protocol/1\nname: t\nspeed_m_s: 3.0\n"
                                      f"{NO_CHECKINS}\nstages:\n{WEIGH_THEN_RUN}"), belt_feedback=True)
    lab = Lab(m)
    lab.belt = lambda t: 0.0
    lab.run(6.0)
    assert m.awaiting_start and events(lab.actions, "belt_fault") == []
    lab.belt = lambda t: 3.0  # somebody started it at the controller
    out = lab.run(1.0)
    (fault,) = events(out, "belt_fault")
    assert fault["commanded_m_s"] == 0.0 and fault["measured_m_s"] == 3.0
    assert [(c["cmd"], c["reason"]) for c in commands(out)] == [("stop", "belt_fault")]
    assert m.awaiting_start  # still only the operator's Start runs it
