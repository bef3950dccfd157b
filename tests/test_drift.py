"""Drift (form under fatigue) against independent references, and the virtual participant's learning,
fatigue and memory, offline (no LSL)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from scipy import stats

from labsuite.drivers.sim import gait, learning
from labsuite.errors import ConfigError
from labsuite.report import drift
from labsuite.stages import StageRecord
from labsuite.steps import empty_steps


def slow_slope(xs: list[float], ys: list[float], t_crit: float) -> tuple[float, float, float]:
    """A readable twin: the textbook formulas, one value at a time."""
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sxy / sxx
    a = my - b * mx
    sse = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    se = math.sqrt(sse / (n - 2) / sxx)
    return b, b - t_crit * se, b + t_crit * se


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_slope_and_ci_match_scipy_numpy_and_a_slow_twin(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(12, 400))
    x = np.sort(rng.uniform(0, 10, n))
    y = 70 + float(rng.normal(0, 3)) * x + rng.normal(0, 4, n)
    got = drift.ols_slope(x, y)
    ref = stats.linregress(x, y)
    t = stats.t.ppf(0.975, n - 2)
    assert got.slope == pytest.approx(ref.slope, rel=1e-10)
    assert got.slope == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-9)
    assert got.ci_low == pytest.approx(ref.slope - t * ref.stderr, rel=1e-9, abs=1e-12)
    assert got.ci_high == pytest.approx(ref.slope + t * ref.stderr, rel=1e-9, abs=1e-12)
    b, lo, hi = slow_slope(list(map(float, x)), list(map(float, y)), float(t))
    assert (got.slope, got.ci_low, got.ci_high) == pytest.approx((b, lo, hi), rel=1e-9, abs=1e-12)
    # the CI covers the true slope about 95 % of the time (a check on the interval itself)
    r = random.Random(seed)
    hits = 0
    for _ in range(400):
        xx = np.array([r.uniform(0, 5) for _ in range(30)])
        yy = 2.0 * xx + np.array([r.gauss(0, 1) for _ in range(30)])
        s = drift.ols_slope(xx, yy)
        hits += s.ci_low <= 2.0 <= s.ci_high
    assert 0.91 <= hits / 400 <= 0.98


def test_degenerate_inputs_give_nan_not_errors():
    assert math.isnan(drift.ols_slope(np.array([1.0, 2.0]), np.array([3.0, 4.0])).slope)
    assert math.isnan(drift.ols_slope(np.ones(5), np.arange(5.0)).slope)
    flat = drift.ols_slope(np.arange(10.0), np.full(10, 3.0))
    assert flat.slope == 0.0 and flat.ci_low == 0.0 == flat.ci_high


def synthetic_steps(t0: float, n: int, step_s: float, valr_per_min: float, rearfoot_until: float):
    s = empty_steps(n)
    s["strike_s"] = t0 + np.arange(n) * step_s
    s["step_s"] = step_s
    s["crossover"] = 0
    rng = np.random.default_rng(5)
    minutes = (s["strike_s"] - t0) / 60
    s["valr_bw_per_s"] = 60 + valr_per_min * minutes + rng.normal(0, 2, n)
    s["contact_s"] = 0.25
    s["tibial_peak_g"] = np.nan  # no IMU: not measurable
    s["strike_pattern"] = np.where(s["strike_s"] < rearfoot_until, 0.0, 2.0)
    return s


def test_drift_rows_per_stage_and_metric():
    t0 = 100.0
    stage = StageRecord(2, "train", "cadence", t0, t0 + 600, target_cadence_spm=170.0)
    rest = StageRecord(3, "rest", "rest", t0 + 600, t0 + 660)
    steps = synthetic_steps(t0, 1600, 60 / 160, valr_per_min=1.5, rearfoot_until=t0 + 300)
    rows = drift.drift_rows([stage, rest], steps)
    by = {r["metric"]: r for r in rows}
    assert {r["stage"] for r in rows} == {"train"}  # a rest stage has no steps to trend
    assert list(by) == [m.name for m in drift.DRIFT_METRICS]
    v = by["valr"]
    used = steps[steps["strike_s"] >= t0 + drift.SETTLE_S]
    assert v["n_steps"] == len(used)
    ref = stats.linregress((used["strike_s"] - used["strike_s"][0]) / 60, used["valr_bw_per_s"])
    assert v["slope_per_min"] == pytest.approx(ref.slope, rel=1e-9)
    assert v["slope_ci_low"] < 1.5 < v["slope_ci_high"] and v["drift"]  # +13 % over the stage
    first = used["valr_bw_per_s"][used["strike_s"] <= used["strike_s"][0] + 120]
    last = used["valr_bw_per_s"][used["strike_s"] >= used["strike_s"][-1] - 120]
    assert v["first_mean"] == pytest.approx(first.mean()) and v["last_mean"] == pytest.approx(last.mean())
    assert v["change"] == pytest.approx(100 * (last.mean() / first.mean() - 1))
    assert by["cadence"]["slope_per_min"] == pytest.approx(0.0, abs=1e-9) and not by["cadence"]["drift"]
    assert not by["contact"]["drift"]
    assert by["tibial_peak"]["n_steps"] == 0 and math.isnan(by["tibial_peak"]["slope_per_min"])
    share = by["rearfoot_share"]
    assert share["first_mean"] == 100.0 and share["last_mean"] == 0.0 and share["change"] == -100.0
    assert share["drift"] and share["slope_per_min"] < 0
    # a slope whose CI excludes 0 but whose size is below the metric's smallest change is no drift
    small = synthetic_steps(t0, 1600, 60 / 160, valr_per_min=0.5, rearfoot_until=t0 + 1e9)
    sv = next(r for r in drift.drift_rows([stage], small) if r["metric"] == "valr")
    assert sv["slope_ci_low"] > 0 and not sv["drift"]  # +4 % over 10 minutes
    # the session CSV carries them per stage
    table = drift.add_drift_to_stage_rows([{"stage": "train"}, {"stage": "rest"}], rows)
    assert table[0]["valr_slope_per_min"] == v["slope_per_min"] and table[0]["valr_drift"] is True
    assert math.isnan(table[1]["valr_slope_per_min"]) and table[1]["valr_drift"] is None


# ---- the virtual participant ----------------------------------------------------------------------

def plan(settings: gait.ParticipantSettings, until_s: float, metronome=()):
    planner = gait.GaitPlanner(settings, 0.0)
    for at, spm in metronome:
        planner.set_target_cadence(spm, at)
    steps = [s for s in planner.plan_until(until_s) if s.kind == "step"]
    return planner, steps


def cadence(steps, t0, t1):
    s = np.array([x.strike_s for x in steps if t0 <= x.strike_s < t1])
    return 60 / float(np.mean(np.diff(s)))


def test_the_virtual_participant_learns_keeps_and_forgets():
    base = gait.ParticipantSettings(preferred_cadence_spm=160, speed_m_s=3.0, seed=3)
    cue = ((10.0, 176.0), (70.0, None))
    # without learning the runner drops straight back to preferred when the metronome stops
    _, naive = plan(base, 100.0, cue)
    assert cadence(naive, 80, 100) == pytest.approx(160, abs=2)
    learner = gait.ParticipantSettings(preferred_cadence_spm=160, speed_m_s=3.0, seed=3,
                                       learning_per_step=0.01)
    planner, kept = plan(learner, 100.0, cue)
    assert cadence(kept, 50, 70) == pytest.approx(176, abs=2)
    # ~165 cued steps at 1 %: 81 % of the 16 spm offset learned, kept without cues
    assert planner.habit_spm == pytest.approx(16 * (1 - 0.99 ** 165), abs=1.5)
    assert cadence(kept, 80, 100) == pytest.approx(160 + planner.habit_spm, abs=2)
    # the next session starts from the habit, faded by the days since
    carried = learning.carried_habit(planner.habit_spm, 14, kept_between_sessions=0.8, half_life_days=14)
    assert carried == pytest.approx(planner.habit_spm * 0.4)
    _, later = plan(gait.ParticipantSettings(preferred_cadence_spm=160, speed_m_s=3.0, seed=4,
                                             habit_spm=carried), 30.0)
    assert cadence(later, 10, 30) == pytest.approx(160 + carried, abs=2)


def test_the_virtual_participant_tires():
    rested = gait.ParticipantSettings(preferred_cadence_spm=160, speed_m_s=3.0, seed=2)
    tired = gait.ParticipantSettings(preferred_cadence_spm=160, speed_m_s=3.0, seed=2,
                                     fatigue_impact_pct_per_min=5.0, fatigue_cadence_spm_per_min=-2.0)
    # impact 5 %/min steeper: the rise time of the 9th minute is 1/1.475 of the first's (1/1.025)
    steeper = 100 * (1.475 / 1.025 - 1)
    for s, impact, cad_drop in ((rested, 0.0, 0.0), (tired, steeper, 20.0)):
        _, steps = plan(s, 620.0)
        early = [x for x in steps if x.strike_s < 60]
        late = [x for x in steps if 540 <= x.strike_s < 600]
        rise = 100 * (np.mean([x.imp_rise_s for x in early]) / np.mean([x.imp_rise_s for x in late]) - 1)
        valr = 100 * (np.mean([x.valr_bw_per_s for x in late])
                      / np.mean([x.valr_bw_per_s for x in early]) - 1)
        assert rise == pytest.approx(impact, abs=5)
        assert valr == pytest.approx(0.7 * impact, abs=8)  # the true (Milner) VALR of the plan
        assert cadence(steps, 0, 60) - cadence(steps, 540, 600) == pytest.approx(cad_drop, abs=3)


def test_memory_file_is_atomic_and_bad_ones_are_refused(tmp_path):
    path = learning.memory_path(tmp_path, "P03")
    assert path.name == "P03.sim-memory.json"
    with pytest.raises(ConfigError, match="pseudonymous id"):
        learning.memory_path(tmp_path, "../P03")
    assert learning.load_memory(path) is None
    learning.save_memory(path, 6.5)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert learning.load_memory(path).habit_spm == 6.5
    for bad in (b"{", b'{"format": "x"}', json.dumps({"format": learning.FORMAT, "habit_spm": "a",
                                                      "saved_epoch_s": 1}).encode(),
                json.dumps({"format": learning.FORMAT, "habit_spm": 99, "saved_epoch_s": 1}).encode()):
        path.write_bytes(bad)
        with pytest.raises(ConfigError, match="not a simulated participant's memory file") as err:
            learning.load_memory(path)
        assert str(path) in str(err.value)
    with pytest.raises(ConfigError, match="days"):
        learning.carried_habit(5.0, -1, kept_between_sessions=1, half_life_days=3)


def test_drift_on_a_real_treadmill_trial(shared_data):
    """RBDS S8 (Fukuchi et al. 2017): 30 s at a steady 3.5 m/s, rearfoot. No fatigue drift is
    expected in half a minute; the slope is scipy's on the same steps; the strike pattern share is
    that of the processor's own step table."""
    from labsuite.realtime.files import load_text
    from labsuite.realtime.processor import ProcessorSettings, process_arrays

    data = load_text(shared_data / "rbds" / "RBDS008runT35forces.txt", rate_hz=300.0,
                     mapping={"fz": "Fy", "fx": "Fx", "fy": "-Fz", "copx": "COPx", "copy": "-COPz"},
                     length_unit="mm")
    steps = process_arrays(ProcessorSettings(rate_hz=300.0, plates=data.plates, layout="single",
                                             body_mass_kg=69.0), data.streams, lab_frame=True)
    stage = StageRecord(0, "trial", "baseline", float(steps["strike_s"][0]) - 1e-6,
                        float(steps["strike_s"][-1]) + 1.0)
    rows = {r["metric"]: r for r in drift.drift_rows([stage], steps)}
    used = steps[steps["strike_s"] >= stage.start_s + min(drift.SETTLE_S, 0.25 * 31)]
    for metric, field in (("valr", "valr_bw_per_s"), ("contact", "contact_s")):
        y = used[field]
        keep = np.isfinite(y)
        t = used["strike_s"][keep]
        ref = stats.linregress((t - t[0]) / 60, y[keep])
        r = rows[metric]
        assert r["n_steps"] == keep.sum() > 30
        assert r["slope_per_min"] == pytest.approx(ref.slope, rel=1e-9)
        assert not r["drift"], r
    assert rows["cadence"]["first_mean"] == pytest.approx(162, abs=4)  # the data README's cadence
    assert not rows["cadence"]["drift"]
