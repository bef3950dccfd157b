"""The processor on the simulated lab (labsuite.drivers.sim.gait): true strikes and cadence."""

from __future__ import annotations

import numpy as np
import pytest

from labsuite.drivers.sim.gait import ParticipantSettings, render_plate, simulate_offline
from labsuite.realtime.processor import PlateGeometry, ProcessorSettings, process_arrays


def _run(ps, seconds, **kw):
    rec = simulate_offline(ps, seconds, plate_rate_hz=1000.0, imu_rate_hz=1000.0,
                           cadence_schedule=kw.pop("cadence_schedule", ()))
    plates = tuple(PlateGeometry.lab_aligned(b) for b in rec.belts)
    settings = ProcessorSettings(rate_hz=1000.0, plates=plates,
                                 layout="single" if ps.single_belt else "split", mode=ps.mode,
                                 body_mass_kg=ps.mass_kg, imu_sides=("left", "right"), **kw)
    data = {}
    for belt in rec.belts:
        grf = rec.grf_n[belt]
        cop = np.where(grf[:, 2:3] > 1.0, rec.cop_m[belt], np.nan)
        data[belt] = (rec.t_plate_s, np.column_stack([grf, cop]))
    imus = {side: (rec.t_imu_s, rec.imu[side]) for side in ("left", "right")}
    return rec, process_arrays(settings, data, imus, lab_frame=True)


def _match(rec, steps):
    true = [s for s in rec.gait_steps() if s.toe_off_s < rec.t_plate_s[-1] - 0.05]
    assert len(steps) == len(true)
    return true


def _threshold_events(rec, true, strike_n=50.0, toe_n=25.0):
    """The threshold crossings of the simulator's noise-free force (the definition we report)."""
    t = rec.t_plate_s
    out = []
    for s in true:
        belt = rec.belts[0] if len(rec.belts) == 1 else s.foot
        grf, _, _ = render_plate(rec.steps, t, belt, rec.settings, noise=False)
        fz = grf[:, 2]
        inside = (t >= s.strike_s - 0.01) & (t <= s.toe_off_s + 0.01)
        k = np.flatnonzero(inside)
        up = k[np.argmax(fz[k] >= strike_n)]
        down = k[len(k) - 1 - np.argmax(fz[k][::-1] >= toe_n)]
        out.append((np.interp(strike_n, fz[up - 1:up + 1], t[up - 1:up + 1]),
                    np.interp(toe_n, fz[down:down + 2][::-1], t[down:down + 2][::-1])))
    return np.array(out)


@pytest.mark.parametrize("strike", ["rearfoot", "forefoot"])
def test_strikes_within_2_ms_of_true_threshold_events_at_1000_hz(strike):
    ps = ParticipantSettings(mode="run", strike=strike, seed=11)
    rec, steps = _run(ps, 20.0)
    true = _match(rec, steps)
    events = _threshold_events(rec, true)
    err_s = steps["strike_s"] - events[:, 0]
    assert np.max(np.abs(err_s)) < 0.002
    assert np.array_equal(steps["foot"], [0.0 if s.foot == "left" else 1.0 for s in true])
    toe_err = steps["toe_off_s"] - events[:, 1]
    assert np.max(np.abs(toe_err)) < 0.004
    # threshold events come after the simulator's force onset, by the rise time to 50 N
    onset = np.array([s.strike_s for s in true])
    assert np.all(steps["strike_s"] > onset - 0.002)
    # loading rate and tibial shock against the simulator's truth (noise-free template)
    valr_true = np.array([s.valr_bw_per_s for s in true])
    np.testing.assert_allclose(steps["valr_bw_per_s"], valr_true, rtol=0.06)
    method_true = np.array([s.valr_method for s in true], dtype=float)
    assert np.mean(steps["loading_rate_method"] == method_true) > 0.9
    np.testing.assert_allclose(steps["tibial_peak_g"], [s.tibial_peak_g for s in true], atol=0.3)


def test_cadence_within_half_a_step_per_minute_once_converged():
    ps = ParticipantSettings(mode="run", seed=6)
    commanded = 178.0
    rec, steps = _run(ps, 70.0, cadence_schedule=((2.0, commanded),))
    converged = steps["strike_s"] > 45.0  # > 10 adaptation time constants after the command
    assert converged.sum() > 60
    assert np.mean(steps["cadence_spm"][converged]) == pytest.approx(commanded, abs=0.5)
    # each value is exactly the rate of the last N true strikes (no drift, no bias)
    true_strikes = np.array([s.strike_s for s in rec.gait_steps()])
    n = 10
    idx = np.flatnonzero(converged)
    for i in idx[::7]:
        k = int(np.argmin(np.abs(true_strikes - steps["strike_s"][i])))
        ref = 60.0 * n / (true_strikes[k] - true_strikes[k - n])
        assert steps["cadence_spm"][i] == pytest.approx(ref, abs=0.3)


def test_single_belt_walking_butterfly_matches_true_events():
    ps = ParticipantSettings(mode="walk", single_belt=True, seed=4)
    rec, steps = _run(ps, 30.0, lowpass_hz=10.0)
    true = rec.gait_steps()
    strikes = np.array([s.strike_s for s in true])
    found = 0
    for st in steps:
        k = int(np.argmin(np.abs(strikes - st["strike_s"])))
        assert abs(strikes[k] - st["strike_s"]) < 0.01
        assert st["foot"] == (0.0 if true[k].foot == "left" else 1.0)
        found += 1
    assert found >= len(true) - 4  # the first and last contacts are cut by the recording
