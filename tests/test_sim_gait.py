"""The virtual participant: physiology measured on simulate_offline output with plain numpy.

Every check measures the rendered signals independently (thresholds, a Milner VALR written here,
integrals) and compares with published ranges or with the planner's own true events.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.signal import butter, filtfilt

from labsuite.drivers.sim import gait
from labsuite.drivers.sim.gait import (
    PLANNED_STEP_FIELDS,
    GaitPlanner,
    ParticipantSettings,
    PlannedStep,
    prune_records,
    render_imu,
    render_plate,
    simulate_offline,
    steps_to_array,
)
from labsuite.errors import ConfigError, DeviceError

G = 9.80665


# ---- independent measurement helpers ------------------------------------------------------------

def contacts(fz: np.ndarray, t: np.ndarray, threshold_n: float = 50.0, min_gap_s: float = 0.02,
             min_contact_s: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Contact (on, off) times where fz > threshold, gaps < min_gap merged, short blips dropped."""
    on = fz > threshold_n
    d = np.diff(on.astype(np.int8))
    starts = list(np.flatnonzero(d == 1) + 1)
    ends = list(np.flatnonzero(d == -1) + 1)
    if on[0]:
        starts.insert(0, 0)
    if on[-1]:
        ends.append(len(on))
    merged: list[list[int]] = []
    for a, b in zip(starts, ends, strict=True):
        if merged and t[a] - t[merged[-1][1] - 1] < min_gap_s:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    keep = [(a, b) for a, b in merged if t[b - 1] - t[a] >= min_contact_s]
    return np.array([t[a] for a, _ in keep]), np.array([t[b - 1] for _, b in keep])


def milner(tau: np.ndarray, f_bw: np.ndarray, contact_s: float) -> tuple[float, bool, float, float]:
    """(VALR BW/s, impact peak found, impact BW, impact time) for one sampled contact.

    Milner et al. 2006: impact peak = first local maximum within 20 % of stance; VALR = slope of
    the line through the 20 % and 80 % points of it. Without one, 13 % of stance (Blackmore 2016).
    """
    imp = None
    for i in range(1, len(f_bw) - 1):
        if tau[i] > 0.2 * contact_s:
            break
        if f_bw[i] > f_bw[i - 1] and f_bw[i] >= f_bw[i + 1]:
            imp = i
            break
    if imp is not None:
        ref, ref_t = f_bw[imp], tau[imp]
    else:
        ref_t = 0.13 * contact_s
        ref = float(np.interp(ref_t, tau, f_bw))
    times = []
    for level in (0.2 * ref, 0.8 * ref):
        j = int(np.argmax(f_bw >= level))
        times.append(tau[j - 1] + (level - f_bw[j - 1]) * (tau[j] - tau[j - 1]) / (f_bw[j] - f_bw[j - 1]))
    return 0.6 * ref / (times[1] - times[0]), imp is not None, float(ref), float(ref_t)


def per_contact(rec: gait.SimRecording, belt: str, foot: str | None = None):
    """Yield (true step, t, fz) for each true contact of ``foot`` on ``belt``."""
    t = rec.t_plate_s
    fz = rec.grf_n[belt][:, 2]
    for st in rec.gait_steps(foot):
        i0, i1 = np.searchsorted(t, [st.strike_s, st.toe_off_s])
        if i0 == 0 or i1 >= len(t):
            continue
        yield st, t[i0 - 1:i1 + 1], fz[i0 - 1:i1 + 1]


@pytest.fixture(scope="module")
def run_rearfoot() -> gait.SimRecording:
    return simulate_offline(ParticipantSettings(seed=11), 40.0)


@pytest.fixture(scope="module")
def run_clean() -> gait.SimRecording:
    return simulate_offline(ParticipantSettings(seed=12, plate_noise_n=0.0, imu_noise_m_s2=0.0,
                                                gyro_noise_rad_s=0.0), 30.0)


@pytest.fixture(scope="module")
def walk() -> gait.SimRecording:
    return simulate_offline(ParticipantSettings(mode="walk", seed=13), 40.0)


# ---- settings and records --------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"mass_kg": -3}, "mass_kg"),
    ({"mode": "hop"}, "mode"),
    ({"strike": "midfoot"}, "strike"),
    ({"plate_noise_n": float("nan")}, "plate_noise_n"),
    ({"seed": -1}, "seed"),
    ({"speed_m_s": 4.0, "mode": "walk"}, "speed_m_s"),
    ({"preferred_cadence_spm": 100.0}, "preferred_cadence_spm"),
    ({"single_belt": "yes"}, "single_belt"),
    ({"mode": "walk", "strike": "forefoot"}, "strike"),
])
def test_settings_errors_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        ParticipantSettings(**kwargs)


def test_commands_are_validated():
    planner = GaitPlanner(ParticipantSettings(), 0.0)
    with pytest.raises(ConfigError, match="cadence"):
        planner.set_target_cadence(400.0, 1.0)
    with pytest.raises(ConfigError, match="belt speed"):
        planner.set_belt_speed(-1.0, 1.0)
    with pytest.raises(ConfigError, match="at_s"):
        planner.set_belt_speed(2.0, float("inf"))


def test_defaults_follow_mode():
    run, walk_ = ParticipantSettings(), ParticipantSettings(mode="walk")
    assert run.initial_speed_m_s == 3.0 and 160 <= run.preferred_cadence_at(3.0) <= 180
    assert walk_.initial_speed_m_s == 1.3 and 100 <= walk_.preferred_cadence_at(1.3) <= 120
    custom = ParticipantSettings(preferred_cadence_spm=175.0)
    assert custom.preferred_cadence_at(3.0) == pytest.approx(175.0)


def test_planned_step_vector_round_trip():
    steps = simulate_offline(ParticipantSettings(seed=1), 3.0,
                             speed_schedule=[(1.0, 0.0)]).steps
    assert {s.kind for s in steps} == {"step", "stand"}
    for st in steps:
        v = st.to_vector()
        assert v.shape == (len(PLANNED_STEP_FIELDS),) and v.dtype == np.float64
        back = PlannedStep.from_vector(v)
        np.testing.assert_array_equal(back.to_vector(), v)
        assert (back.kind, back.foot, back.index) == (st.kind, st.foot, st.index)
    v = steps[0].to_vector()
    with pytest.raises(DeviceError, match="planned step vector: expected"):
        PlannedStep.from_vector(v[:-1])
    bad = v.copy()
    bad[PLANNED_STEP_FIELDS.index("foot")] = 2.0
    with pytest.raises(DeviceError, match="foot"):
        PlannedStep.from_vector(bad)
    bad = v.copy()
    bad[PLANNED_STEP_FIELDS.index("strike_s")] = np.nan
    with pytest.raises(DeviceError, match="strike_s"):
        PlannedStep.from_vector(bad)


def test_plan_until_returns_each_record_once_whatever_the_chunking():
    s = ParticipantSettings(seed=5)
    live, whole = GaitPlanner(s, 100.0), GaitPlanner(s, 100.0)
    for p in (live, whole):
        p.set_target_cadence(180.0, 110.0)
        p.set_belt_speed(0.0, 120.0)
        p.set_belt_speed(3.5, 125.0)
    got: list[PlannedStep] = []
    t = 100.0
    while t < 140.0:
        new = live.plan_until(t)
        assert all(x.strike_s <= t + s.lookahead_s for x in new)
        got += new
        t += 0.013
    assert live.plan_until(t - 5.0) == []
    ref = whole.plan_until(t - 0.013)
    assert [x.index for x in got] == list(range(len(got)))
    np.testing.assert_array_equal(steps_to_array(got), steps_to_array(ref))
    strikes = [x.strike_s for x in got]
    assert strikes == sorted(strikes)


# ---- running ---------------------------------------------------------------------------------

def test_running_contacts_match_true_events_and_have_flight(run_rearfoot):
    rec = run_rearfoot
    for belt, foot in (("left", "left"), ("right", "right")):
        on, off = contacts(rec.grf_n[belt][:, 2], rec.t_plate_s)
        true = [s for s in rec.gait_steps(foot) if 0.5 < s.strike_s and s.toe_off_s < 39.5]
        assert len(true) > 50
        for st in true:
            k = int(np.argmin(np.abs(on - st.strike_s)))
            # 50 N is crossed a few ms after the true strike and before the true toe-off.
            assert 0.0 <= on[k] - st.strike_s < 0.012
            assert 0.0 <= st.toe_off_s - off[k] < 0.015
            assert 0.2 <= st.contact_s <= 0.3
    # Flight: on one belt's worth of both feet, the body leaves the ground between steps.
    steps = rec.gait_steps()
    flights = [b.strike_s - a.toe_off_s for a, b in itertools.pairwise(steps)]
    assert min(flights) > 0.03
    total = rec.grf_n["left"][:, 2] + rec.grf_n["right"][:, 2]
    assert np.mean(total < 50.0) > 0.15


def test_running_cadence_peaks_and_variability(run_rearfoot):
    rec, w = run_rearfoot, run_rearfoot.settings.weight_n
    on, _ = contacts(rec.grf_n["left"][:, 2] + rec.grf_n["right"][:, 2], rec.t_plate_s)
    cadence = 60.0 / np.diff(on)
    assert 160.0 <= np.median(cadence) <= 180.0
    step_cv = np.std(np.diff(on)) / np.mean(np.diff(on))
    assert 0.005 < step_cv < 0.05
    b, a = butter(2, 50.0 / 500.0)
    peaks = []
    for _, _, fz in per_contact(rec, "left", "left"):
        peaks.append(filtfilt(b, a, fz).max() / w)
    assert 2.3 <= np.median(peaks) <= 2.8
    assert 0.005 < np.std(peaks) / np.mean(peaks) < 0.08
    # Vertical impulse balance: over whole strides the mean vertical force is body weight.
    total = rec.grf_n["left"][:, 2] + rec.grf_n["right"][:, 2]
    m = (rec.t_plate_s > on[2]) & (rec.t_plate_s < on[-2])
    assert np.mean(total[m]) / w == pytest.approx(1.0, abs=0.02)


def test_rearfoot_impact_peak_and_valr_match_milner(run_clean):
    rec, w = run_clean, run_clean.settings.weight_n
    measured, truth, frac, imp_bw = [], [], [], []
    for belt in ("left", "right"):
        for st, t, fz in per_contact(rec, belt, belt):
            # Contact from the noise-free force itself, not from the planner.
            loaded = np.flatnonzero(fz > 1.0)
            t0 = t[loaded[0] - 1]
            contact = t[loaded[-1] + 1] - t0
            valr, has_impact, ref, ref_t = milner(t - t0, fz / w, contact)
            assert has_impact
            measured.append(valr)
            truth.append(st.valr_bw_per_s)
            frac.append(ref_t / contact)
            imp_bw.append(ref)
            assert ref == pytest.approx(st.impact_bw, rel=0.01)
    measured, truth = np.array(measured), np.array(truth)
    np.testing.assert_allclose(measured, truth, rtol=0.04)
    assert 60.0 <= np.median(measured) <= 90.0
    assert 0.10 <= np.median(frac) <= 0.15
    assert 1.4 <= np.median(imp_bw) <= 2.0


def test_forefoot_has_no_impact_peak_and_lower_loading():
    ff = simulate_offline(ParticipantSettings(strike="forefoot", seed=3, plate_noise_n=0.0), 20.0)
    w = ff.settings.weight_n
    found, valrs = [], []
    for st, t, fz in per_contact(ff, "left", "left"):
        loaded = np.flatnonzero(fz > 1.0)
        t0 = t[loaded[0] - 1]
        valr, has_impact, _, _ = milner(t - t0, fz / w, t[loaded[-1] + 1] - t0)
        found.append(has_impact)
        valrs.append(valr)
        assert not st.impact_present
    assert not any(found)
    rf = simulate_offline(ParticipantSettings(seed=3), 20.0)
    rf_valr = np.median([s.valr_bw_per_s for s in rf.gait_steps()])
    assert np.median(valrs) < 0.7 * rf_valr
    peaks = [fz.max() / w for _, _, fz in per_contact(ff, "left", "left")]
    assert 2.3 <= np.median(peaks) <= 2.9


def test_ap_force_brakes_then_propels_with_zero_net_impulse(run_clean):
    rec, w = run_clean, run_clean.settings.weight_n
    fx = rec.grf_n["left"][:, 0]
    dt = 1.0 / rec.plate_rate_hz
    n = 0
    for st in rec.gait_steps("left"):
        i0, i1 = np.searchsorted(rec.t_plate_s, [st.strike_s, st.toe_off_s])
        if i0 == 0 or i1 >= len(fx):
            continue
        x = fx[i0:i1] / w
        brake = x[x < 0].sum() * dt
        prop = x[x > 0].sum() * dt
        assert brake < -0.01 and prop > 0.01
        assert abs(brake + prop) < 0.03 * abs(brake)
        assert np.argmin(x) < np.argmax(x)  # braking peak first
        n += 1
    assert n > 30


def test_cop_rolls_heel_to_toe_while_foot_moves_back(run_clean):
    rec = run_clean
    for belt, sign in (("left", 1.0), ("right", -1.0)):
        fz = rec.grf_n[belt][:, 2]
        cop = rec.cop_m[belt]
        loaded = fz > 50.0
        assert np.all(sign * cop[loaded, 1] > 0.0)  # each foot stays on its own belt
        for st in rec.gait_steps(belt):
            i0, i1 = np.searchsorted(rec.t_plate_s, [st.strike_s, st.toe_off_s])
            if i0 == 0 or i1 >= len(fz):
                continue
            m = np.arange(i0, i1)[loaded[i0:i1]]
            if len(m) < 50:
                continue
            x = cop[m, 0]
            assert x[0] - x[-1] > 0.4  # the belt carries the foot backwards
            # In the foot's own frame (undo the belt travel) the COP goes from heel to toe.
            along = x + st.speed_m_s * (rec.t_plate_s[m] - st.strike_s) - st.foot_x_m
            assert along[0] < 0.35 * st.foot_length_m
            assert along[-1] > 0.75 * st.foot_length_m
            assert np.all(np.diff(along) > -1e-9)


def test_single_belt_is_the_sum_of_both_feet():
    s = ParticipantSettings(single_belt=True, seed=4, plate_noise_n=0.0)
    rec = simulate_offline(s, 6.0)
    rows = steps_to_array(rec.steps)
    t = rec.t_plate_s
    grf_l, cop_l, tz_l = render_plate(rows, t, "left", s)
    grf_r, cop_r, tz_r = render_plate(rows, t, "right", s)
    np.testing.assert_allclose(rec.grf_n["single"], grf_l + grf_r, atol=1e-9)

    def moment_about_origin(grf, cop, tz):
        # Forces applied at the COP on the surface z = 0 plus the free moment.
        mx = cop[:, 1] * grf[:, 2]
        my = -cop[:, 0] * grf[:, 2]
        mz = cop[:, 0] * grf[:, 1] - cop[:, 1] * grf[:, 0] + tz
        return np.column_stack([mx, my, mz])

    np.testing.assert_allclose(
        moment_about_origin(rec.grf_n["single"], rec.cop_m["single"], rec.tz_nm["single"]),
        moment_about_origin(grf_l, cop_l, tz_l) + moment_about_origin(grf_r, cop_r, tz_r),
        atol=1e-6)


def test_plate_noise_sd_and_independence(run_rearfoot):
    rec, s = run_rearfoot, run_rearfoot.settings
    rows = steps_to_array(rec.steps)
    clean, _, _ = render_plate(rows, rec.t_plate_s, "left", s, noise=False)
    flight = np.all(clean == 0.0, axis=1)
    noise_l = rec.grf_n["left"][flight]
    assert flight.sum() > 5000
    np.testing.assert_allclose(noise_l.std(axis=0), s.plate_noise_n, rtol=0.06)
    np.testing.assert_allclose(noise_l.mean(axis=0), 0.0, atol=0.5)
    noise_r = rec.grf_n["right"][flight, 2] - render_plate(rows, rec.t_plate_s, "right", s,
                                                            noise=False)[0][flight, 2]
    assert abs(np.corrcoef(noise_l[:, 2], noise_r)[0, 1]) < 0.05
    assert abs(np.corrcoef(noise_l[1:, 2], noise_l[:-1, 2])[0, 1]) < 0.05  # white


# ---- walking ---------------------------------------------------------------------------------

def test_walking_double_support_and_m_shape(walk):
    rec, w = walk, walk.settings.weight_n
    on_l, off_l = contacts(rec.grf_n["left"][:, 2], rec.t_plate_s)
    on_r, _ = contacts(rec.grf_n["right"][:, 2], rec.t_plate_s)
    strikes = np.sort(np.concatenate([on_l, on_r]))
    assert 100.0 <= np.median(60.0 / np.diff(strikes)) <= 120.0
    both = (rec.grf_n["left"][:, 2] > 50.0) & (rec.grf_n["right"][:, 2] > 50.0)
    m = rec.t_plate_s > 1.0
    assert 0.15 < both[m].mean() < 0.4  # double support ~20-30 % of the gait cycle
    none = (rec.grf_n["left"][:, 2] < 50.0) & (rec.grf_n["right"][:, 2] < 50.0)
    assert not none[m].any()  # no flight phase
    for st in rec.gait_steps("left"):
        if not 0.5 < st.strike_s < st.toe_off_s < rec.t_plate_s[-1] - 0.1:
            continue
        k = int(np.argmin(np.abs(on_l - st.strike_s)))
        assert abs(on_l[k] - st.strike_s) < 0.03 and abs(off_l[k] - st.toe_off_s) < 0.03
    b, a = butter(2, 20.0 / 500.0)
    n = 0
    for _, _, fz in per_contact(rec, "left", "left"):
        f = filtfilt(b, a, fz) / w
        k = len(f)
        p1, p2 = f[: k // 2].max(), f[k // 2:].max()
        valley = f[int(0.4 * k):int(0.6 * k)].min()
        assert 1.0 <= p1 <= 1.3 and 1.0 <= p2 <= 1.3
        assert valley < min(p1, p2) - 0.2
        n += 1
    assert n > 15


def test_walking_single_belt_never_unloads():
    rec = simulate_offline(ParticipantSettings(mode="walk", single_belt=True, seed=2), 15.0)
    fz = rec.grf_n["single"][:, 2]
    m = rec.t_plate_s > 1.0
    assert fz[m].min() > 0.4 * rec.settings.weight_n
    # Butterfly: the combined COP swings between the feet.
    y = rec.cop_m["single"][m, 1]
    assert y.min() < -0.04 and y.max() > 0.04


# ---- IMU -------------------------------------------------------------------------------------

def test_tibial_peak_rises_with_loading_rate():
    # A speed change spreads the loading rates, so their link to tibial shock shows.
    rec = simulate_offline(ParticipantSettings(seed=12, speed_m_s=2.5, imu_noise_m_s2=0.0), 30.0,
                           speed_schedule=[(15.0, 4.0)])
    peaks, truth, valr, fast = [], [], [], []
    for side in ("left", "right"):
        ax = rec.imu[side][:, 0]
        for st in rec.gait_steps(side):
            i0, i1 = np.searchsorted(rec.t_imu_s, [st.strike_s, st.strike_s + 0.08])
            if i0 == 0 or i1 >= len(ax):
                continue
            peaks.append(ax[i0:i1].max() / G)
            truth.append(st.tibial_peak_g)
            valr.append(st.valr_bw_per_s)
            fast.append(st.speed_m_s > 3.0)
    peaks_a, valr_a, fast_a = np.array(peaks), np.array(valr), np.array(fast)
    np.testing.assert_allclose(peaks_a, truth, rtol=0.03)
    assert 4.0 <= np.median(peaks_a[~fast_a]) <= 10.0  # rearfoot runners, 2.5 m/s
    assert np.median(peaks_a[fast_a]) > np.median(peaks_a[~fast_a]) + 1.0
    assert np.corrcoef(peaks_a, valr_a)[0, 1] > 0.5
    assert np.polyfit(valr_a, peaks_a, 1)[0] > 0.03  # g per BW/s
    ff = simulate_offline(ParticipantSettings(strike="forefoot", seed=12, imu_noise_m_s2=0.0), 10.0)
    ff_peaks = [ff.imu["left"][np.searchsorted(ff.t_imu_s, s.strike_s):][:80, 0].max() / G
                for s in ff.gait_steps("left")[1:-2]]
    assert np.median(ff_peaks) < np.median(peaks_a) - 1.0


def test_imu_reads_gravity_when_standing_and_swings_in_gait():
    s = ParticipantSettings(seed=6)
    rec = simulate_offline(s, 12.0, speed_schedule=[(4.0, 0.0)])
    t = rec.t_imu_s
    stand = (t > 6.0) & (t < 12.0)
    for side in ("left", "right"):
        imu = rec.imu[side]
        assert imu[stand, 0].mean() == pytest.approx(G, abs=0.05)
        assert imu[stand, 0].std() == pytest.approx(s.imu_noise_m_s2, rel=0.15)
        assert np.abs(imu[stand, 3:].mean(axis=0)).max() < 0.01
        gait_part = (t > 1.0) & (t < 3.5)
        assert np.ptp(imu[gait_part, 5]) > 5.0  # sagittal shank rotation, rad/s


# ---- metronome response ----------------------------------------------------------------------

def _cadence_trial(ratio: float, seed: int, command_s: float = 30.0, duration_s: float = 100.0):
    s = ParticipantSettings(seed=seed)
    pref = s.preferred_cadence_at(s.initial_speed_m_s)
    rec = simulate_offline(s, duration_s, cadence_schedule=[(command_s, ratio * pref)])
    return rec, pref


def test_cadence_converges_over_tens_of_steps():
    rec, pref = _cadence_trial(1.10, seed=21)
    target = 1.10 * pref
    # Cadence from the rendered force, not from the planner.
    total = rec.grf_n["left"][:, 2] + rec.grf_n["right"][:, 2]
    on, _ = contacts(total, rec.t_plate_s)
    cad = 60.0 / np.diff(on)
    k0 = int(np.searchsorted(on, 30.0))
    before = cad[5:k0].mean()
    assert before == pytest.approx(pref, rel=0.02)
    first5 = cad[k0:k0 + 5].mean()
    assert first5 < before + 0.5 * (target - before)  # not at once
    smooth = np.convolve(cad, np.ones(6) / 6, mode="valid")
    reached = int(np.argmax(smooth[k0:] > before + 0.63 * (target - before)))
    assert 4 <= reached <= 40  # tens of steps
    assert cad[k0 + 60:].mean() == pytest.approx(target, rel=0.015)
    # Same speed, higher cadence: shorter steps.
    speed = rec.settings.initial_speed_m_s
    assert np.mean(speed / cad[k0 + 60:] * 60) / np.mean(speed / cad[5:k0] * 60) == \
        pytest.approx(1 / 1.10, rel=0.02)


@pytest.mark.parametrize(("ratio", "lo", "hi"), [(1.075, 0.12, 0.20), (1.10, 0.15, 0.23)])
def test_valr_falls_as_cadence_rises(ratio, lo, hi):
    rec, _ = _cadence_trial(ratio, seed=31, command_s=20.0, duration_s=80.0)
    w = rec.settings.weight_n
    b, a = butter(4, 100.0 / 500.0)  # 100 Hz low-pass so noise makes no false local maxima
    before, after = [], []
    for belt in ("left", "right"):
        fz = filtfilt(b, a, rec.grf_n[belt][:, 2])
        on, off = contacts(fz, rec.t_plate_s)
        for t_on, t_off in zip(on, off, strict=True):
            i0, i1 = np.searchsorted(rec.t_plate_s, [t_on - 0.01, t_off + 0.01])
            t = rec.t_plate_s[i0:i1]
            f = fz[i0:i1] / w
            start = t[np.argmax(f > 20.0 / w)]
            valr, _, _, _ = milner(t - start, np.where(t < start, 0.0, f), t_off - t_on)
            (before if 3.0 < t_on < 20.0 else after if t_on > 50.0 else []).append(valr)
    drop = 1.0 - np.mean(after) / np.mean(before)
    assert lo <= drop <= hi


# ---- belt stop and start ---------------------------------------------------------------------

def test_belt_stop_gives_quiet_standing_then_gait_resumes():
    s = ParticipantSettings(seed=8)
    rec = simulate_offline(s, 24.0, speed_schedule=[(8.0, 0.0), (16.0, 3.0)])
    t, w = rec.t_plate_s, s.weight_n
    stand = (t > 10.0) & (t < 15.5)  # the last block before 16 s unloads to step off
    fl, fr = rec.grf_n["left"][stand, 2], rec.grf_n["right"][stand, 2]
    assert fl.min() > 0.25 * w and fr.min() > 0.25 * w  # both feet loaded throughout
    assert np.mean(fl + fr) / w == pytest.approx(1.0, abs=0.01)
    assert 0.005 < np.std(fl) / w < 0.1  # weight shifts between the feet
    assert not [st for st in rec.gait_steps() if 8.6 < st.strike_s < 16.0]
    resumed = [st.strike_s for st in rec.gait_steps() if st.strike_s >= 16.0]
    assert resumed and resumed[0] < 17.0
    on, _ = contacts(rec.grf_n["left"][:, 2], t)
    assert np.sum(on > 17.0) >= 8  # strides of ~0.72 s
    assert np.ptp(rec.cop_m["left"][stand, 0]) < 0.05  # standing still, small sway


# ---- rendering contract ----------------------------------------------------------------------

def test_chunked_rendering_equals_whole_and_survives_vectors():
    s = ParticipantSettings(seed=9, single_belt=False)
    rate = 2000.0
    planner = GaitPlanner(s, 50.0)
    planner.set_belt_speed(0.0, 54.0)
    planner.set_belt_speed(3.0, 56.0)
    t = 50.0 + np.arange(int(9.0 * rate)) / rate
    steps: list[PlannedStep] = []
    received: list[np.ndarray] = []  # what a device process gets over LSL
    chunks = {"left": [], "right": []}
    imu_chunks = {"left": [], "right": []}
    rng = np.random.default_rng(0)
    i = 0
    while i < len(t):
        n = int(rng.integers(1, 40))
        tt = t[i:i + n]
        new = planner.plan_until(tt[-1])
        steps += new
        received += [x.to_vector() for x in new]
        # A live renderer keeps only records that can still touch its samples.
        live = prune_records(np.array(received), tt[0])
        assert len(live) <= 8
        received = list(live)
        for belt in ("left", "right"):
            grf, cop, tz = render_plate(live, tt, belt, s)
            chunks[belt].append(np.column_stack([grf, cop, tz]))
            imu_chunks[belt].append(render_imu(live, tt, belt, s))
        i += n
    whole_rows = steps_to_array(steps)
    for belt in ("left", "right"):
        grf, cop, tz = render_plate(whole_rows, t, belt, s)
        np.testing.assert_array_equal(np.vstack(chunks[belt]), np.column_stack([grf, cop, tz]))
        np.testing.assert_array_equal(np.vstack(imu_chunks[belt]), render_imu(steps, t, belt, s))
    assert np.vstack(chunks["left"])[:, 2].max() > 2.0 * s.weight_n


def test_same_seed_same_numbers_other_seed_differs():
    a = simulate_offline(ParticipantSettings(seed=17), 5.0)
    b = simulate_offline(ParticipantSettings(seed=17), 5.0)
    c = simulate_offline(ParticipantSettings(seed=18), 5.0)
    np.testing.assert_array_equal(a.grf_n["left"], b.grf_n["left"])
    np.testing.assert_array_equal(a.imu["right"], b.imu["right"])
    np.testing.assert_array_equal(steps_to_array(a.steps), steps_to_array(b.steps))
    assert not np.array_equal(a.grf_n["left"], c.grf_n["left"])


def test_another_process_renders_the_same_numbers():
    s = ParticipantSettings(seed=23)
    steps = GaitPlanner(s, 1000.0).plan_until(1003.0)
    t = 1000.0 + np.arange(2000) / 1000.0
    grf, _, _ = render_plate(steps, t, "right", s)
    imu = render_imu(steps, t, "left", s)
    code = (
        "import json, sys, numpy as np\n"
        "from labsuite.drivers.sim.gait import *\n"
        "rows = np.array(json.loads(sys.stdin.read()))\n"
        "s = ParticipantSettings(seed=23)\n"
        "t = 1000.0 + np.arange(2000) / 1000.0\n"
        "g, _, _ = render_plate(rows, t, 'right', s)\n"
        "i = render_imu(rows, t, 'left', s)\n"
        "print(json.dumps([g.tolist(), i.tolist()]))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(
        steps_to_array(steps).tolist()), capture_output=True, text=True, env=env, timeout=100,
        check=True)
    g2, i2 = json.loads(out.stdout)
    np.testing.assert_array_equal(np.array(g2), grf)
    np.testing.assert_array_equal(np.array(i2), imu)


def test_2khz_plates_and_bad_render_input():
    s = ParticipantSettings(seed=2)
    rec = simulate_offline(s, 4.0, plate_rate_hz=2000.0)
    assert rec.grf_n["left"].shape == (8000, 3)
    on, off = contacts(rec.grf_n["left"][:, 2], rec.t_plate_s)
    assert 0.2 < np.median(off - on) < 0.3
    with pytest.raises(ConfigError, match="belt"):
        render_plate(rec.steps, rec.t_plate_s, "middle", s)
    with pytest.raises(ConfigError, match="non-decreasing"):
        render_plate(rec.steps, rec.t_plate_s[::-1], "left", s)
    with pytest.raises(ConfigError, match="side"):
        render_imu(rec.steps, rec.t_imu_s, "up", s)
    with pytest.raises(ConfigError, match="shape"):
        render_plate(np.zeros((2, 3)), rec.t_plate_s, "left", s)


# ---- against real runners (RBDS, Fukuchi et al. 2017, CC BY 4.0; read in place) ----------------

def _gait_summary(t: np.ndarray, fz_n: np.ndarray, weight_n: float, rate_hz: float) -> dict:
    """Cadence, contact, peak, VALR and impact peak of a single-plate running trial, 50 Hz low-pass."""
    b, a = butter(4, 50.0 / (rate_hz / 2.0))
    fz = filtfilt(b, a, fz_n)
    on, off = contacts(fz, t)
    on, off = on[1:-1], off[1:-1]
    rows = []
    for t_on, t_off in zip(on, off, strict=True):
        m = (t >= t_on - 0.01) & (t <= t_off + 0.01)
        tt, f = t[m], fz[m] / weight_n
        start = tt[np.argmax(f > 20.0 / weight_n)]
        valr, has_impact, ref, ref_t = milner(tt - start, np.where(tt < start, 0.0, f),
                                              t_off - t_on)
        rows.append((valr, has_impact, ref, ref_t / (t_off - t_on), f.max()))
    r = np.array(rows)
    imp = r[:, 1] == 1
    return {"cadence_spm": np.median(60.0 / np.diff(on)), "contact_s": np.median(off - on),
            "peak_bw": np.median(r[:, 4]), "valr_bw_per_s": np.median(r[:, 0]),
            "impact_share": imp.mean(),
            "impact_frac": np.median(r[imp, 3]) if imp.any() else np.nan}


def test_simulated_rearfoot_runner_resembles_rbds_s8(shared_data):
    data = np.loadtxt(shared_data / "rbds" / "RBDS008runT35forces.txt", skiprows=1)
    t = (data[:, 0] - 1.0) / 300.0
    real = _gait_summary(t, data[:, 2], 69.0 * G, 300.0)  # Fy is vertical in this file
    s = ParticipantSettings(mass_kg=69.0, speed_m_s=3.5, preferred_cadence_spm=162.0, seed=8,
                            single_belt=True)
    rec = simulate_offline(s, 30.0, plate_rate_hz=300.0)
    sim = _gait_summary(rec.t_plate_s, rec.grf_n["single"][:, 2], s.weight_n, 300.0)
    assert sim["cadence_spm"] == pytest.approx(real["cadence_spm"], rel=0.02)
    assert sim["contact_s"] == pytest.approx(real["contact_s"], rel=0.1)
    assert sim["peak_bw"] == pytest.approx(real["peak_bw"], rel=0.1)
    assert sim["valr_bw_per_s"] == pytest.approx(real["valr_bw_per_s"], rel=0.2)
    assert real["impact_share"] > 0.7 and sim["impact_share"] > 0.7
    assert sim["impact_frac"] == pytest.approx(real["impact_frac"], abs=0.05)


def test_simulated_forefoot_runner_resembles_rbds_s1(shared_data):
    ezc3d = pytest.importorskip("ezc3d")
    c3d = ezc3d.c3d(str(shared_data / "rbds" / "RBDS001runT35.c3d"), extract_forceplat_data=True)
    fz = c3d["data"]["platform"][0]["force"][1]  # lab Y is vertical in RBDS
    t = np.arange(fz.size) / 300.0
    real = _gait_summary(t, fz, 62.0 * G, 300.0)
    s = ParticipantSettings(mass_kg=62.0, speed_m_s=3.5, preferred_cadence_spm=171.0,
                            strike="forefoot", seed=1, single_belt=True)
    rec = simulate_offline(s, 30.0, plate_rate_hz=300.0)
    sim = _gait_summary(rec.t_plate_s, rec.grf_n["single"][:, 2], s.weight_n, 300.0)
    assert sim["cadence_spm"] == pytest.approx(real["cadence_spm"], rel=0.02)
    assert sim["contact_s"] == pytest.approx(real["contact_s"], rel=0.1)
    assert sim["peak_bw"] == pytest.approx(real["peak_bw"], rel=0.1)
    assert sim["valr_bw_per_s"] == pytest.approx(real["valr_bw_per_s"], rel=0.25)
    assert real["impact_share"] < 0.1 and sim["impact_share"] < 0.1


@pytest.mark.parametrize(("mode", "top_m_s", "max_bw"), [("run", 3.0, 3.2), ("walk", 1.3, 1.5)])
def test_belt_ramp_from_standing_stays_plausible(mode, top_m_s, max_bw):
    # The treadmill stream reports a ramp in small steps, as the simulated treadmill does.
    ramp = [(2.0 + 0.0667 * i, min(top_m_s, 0.05 * (i + 1))) for i in range(80)]
    s = ParticipantSettings(mode=mode, seed=2, plate_noise_n=0.0)
    rec = simulate_offline(s, 14.0, speed_schedule=[(0.0, 0.0), *ramp])
    total = (rec.grf_n["left"][:, 2] + rec.grf_n["right"][:, 2]) / s.weight_n
    assert total.max() < max_bw
    assert np.all(total[rec.t_plate_s < 1.9] == pytest.approx(1.0))  # standing before the belt
    steps = rec.gait_steps()
    assert steps[0].strike_s < 3.0
    early = np.mean([x.cadence_spm for x in steps[:3]])
    late = np.mean([x.cadence_spm for x in steps if x.strike_s > 10.0])
    assert late > early  # cadence rises with belt speed


def test_crossover_steps_load_both_belts():
    s = ParticipantSettings(seed=14, crossover_fraction=0.2, plate_noise_n=0.0)
    rec = simulate_offline(s, 30.0)
    steps = [st for st in rec.gait_steps() if 0.5 < st.strike_s and st.toe_off_s < 29.9]
    crossed = [st for st in steps if st.other_belt_share > 0.0]
    assert 0.1 < len(crossed) / len(steps) < 0.3
    t = rec.t_plate_s
    for st in steps:
        other = "right" if st.foot == "left" else "left"
        m = (t > st.strike_s + 0.05) & (t < st.toe_off_s - 0.05)
        fz_other = rec.grf_n[other][m, 2]
        if st.other_belt_share > 0.0:
            assert fz_other.max() > 0.2 * s.weight_n  # part of the foot is on the other belt
        elif s.mode == "run":
            assert fz_other.max() == 0.0  # flight of the other foot: that belt is empty
    # Whatever lands where, both belts together carry what one plate under both feet would.
    rows = steps_to_array(rec.steps)
    single, _, _ = render_plate(rows, t, "single", s)
    np.testing.assert_allclose(rec.grf_n["left"] + rec.grf_n["right"], single, atol=1e-9)
    on_own = [rec.cop_m[b][rec.grf_n[b][:, 2] > 50.0, 1] for b in ("left", "right")]
    assert on_own[0].min() > 0.0 and on_own[1].max() < 0.0  # each belt's COP stays on it
