"""StepProcessor: chunking gives exactly the offline result; settings, bad input, body weight,
cross-over steps, single-plate walking (COP butterfly on real COP data)."""

from __future__ import annotations

import numpy as np
import pytest

from labsuite.drivers.sim.gait import ParticipantSettings, simulate_offline
from labsuite.errors import ConfigError, DeviceError
from labsuite.plates import lab_to_plate
from labsuite.realtime.processor import (
    PlateGeometry,
    ProcessorSettings,
    StepProcessor,
    process_arrays,
)
from labsuite.steps import STEP_DTYPE, steps_to_rows

LAB_SPLIT = (PlateGeometry.lab_aligned("left"), PlateGeometry.lab_aligned("right"))


def _plate_geometry(belt, y0):
    # a realistic belt: 1.6 m x 0.25 m, C3D z-down corner order, sensor origin 40 mm below
    c = np.array([[1.6, y0 + 0.25, 0.0], [1.6, y0, 0.0], [0.0, y0, 0.0], [0.0, y0 + 0.25, 0.0]])
    return PlateGeometry.from_arrays(belt, c, (0.0, 0.0, 0.04))


@pytest.fixture(scope="module")
def split_run():
    ps = ParticipantSettings(mode="run", strike="rearfoot", seed=7)
    rec = simulate_offline(ps, 8.0)
    geoms = {"left": _plate_geometry("left", 0.0), "right": _plate_geometry("right", -0.25)}
    plates = {}
    for belt, g in geoms.items():
        grf = rec.grf_n[belt]
        cop = np.where(grf[:, 2:3] > 1.0, rec.cop_m[belt], np.nan)
        # the simulator's lab frame puts the feet at +-7 cm; shift COP onto each belt
        cop = cop + np.array([0.8, 0.125 if belt == "left" else -0.125])
        ch = lab_to_plate(grf, cop, rec.tz_nm[belt], np.asarray(g.corners_m), g.origin_m)
        plates[belt] = (rec.t_plate_s, ch)
    imus = {side: (rec.t_imu_s, rec.imu[side]) for side in ("left", "right")}
    settings = ProcessorSettings(rate_hz=1000.0, plates=tuple(geoms.values()), layout="split",
                                 mode="run", body_mass_kg=ps.mass_kg, imu_sides=("left", "right"),
                                 belt_speed_m_s=3.0)
    return settings, plates, imus, rec


def _feed_in_chunks(settings, plates, imus, chunk):
    proc = StepProcessor(settings)
    streams = [("plate", b, *v) for b, v in plates.items()] + [("imu", s, *v) for s, v in imus.items()]
    n = max(len(s[2]) for s in streams)
    out = []
    for start in range(0, n, chunk):
        for kind, name, ts, data in streams:
            if start < len(ts):
                feed = proc.feed_plate if kind == "plate" else proc.feed_imu
                out.append(feed(name, ts[start:start + chunk], data[start:start + chunk]))
    out.append(proc.flush())
    return np.concatenate(out)


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_chunks_give_exactly_the_offline_result(split_run, chunk):
    settings, plates, imus, _ = split_run
    offline = process_arrays(settings, plates, imus)
    assert len(offline) >= 18
    chunked = _feed_in_chunks(settings, plates, imus, chunk)
    assert chunked.dtype == STEP_DTYPE
    np.testing.assert_array_equal(steps_to_rows(chunked), steps_to_rows(offline))


def test_offline_steps_are_complete_and_sane(split_run):
    settings, plates, imus, rec = split_run
    steps = process_arrays(settings, plates, imus)
    true = np.array([s.strike_s for s in rec.gait_steps() if s.toe_off_s < 7.95])
    assert len(steps) == len(true)
    assert np.max(np.abs(steps["strike_s"] - true)) < 0.005
    assert set(np.unique(steps["foot"])) == {0.0, 1.0}
    assert np.all(steps["crossover"] == 0)
    assert np.all(np.isfinite(steps["tibial_peak_g"]))
    assert np.all(np.diff(steps["strike_s"]) > 0)  # released in order
    # step length from belt speed and step time
    ok = np.isfinite(steps["step_s"])
    np.testing.assert_allclose(steps["step_length_m"][ok], 3.0 * steps["step_s"][ok])
    # symmetric simulated runner: symmetry indices small once both feet have a window
    assert np.nanmax(np.abs(steps["si_contact_pct"][10:])) < 10


def test_single_plate_chunks_equal_offline_on_real_running(shared_data):
    ezc3d = pytest.importorskip("ezc3d")
    from labsuite.realtime.files import load_c3d

    data = load_c3d(shared_data / "rbds" / "RBDS001runT35.c3d")
    settings = ProcessorSettings(rate_hz=data.rate_hz, plates=data.plates, layout="single",
                                 body_mass_kg=62.0)
    assert ezc3d is not None
    offline = process_arrays(settings, data.streams)
    chunked = _feed_in_chunks(settings, data.streams, {}, 7)
    assert len(offline) > 80
    np.testing.assert_array_equal(steps_to_rows(chunked), steps_to_rows(offline))


def test_butterfly_on_real_single_plate_walking_cop(shared_data):
    raw = np.loadtxt(shared_data / "cop-walking" / "ExampleCoP.csv", delimiter=",")
    rate = 200.0
    t = np.arange(len(raw)) / rate
    cop = np.column_stack([raw[:, 1], -raw[:, 0]])  # AP forward; file ML is + right, ours + left
    grf = np.column_stack([np.zeros(len(t)), np.zeros(len(t)), np.full(len(t), 700.0)])
    settings = ProcessorSettings(rate_hz=rate, plates=(PlateGeometry.lab_aligned("single"),),
                                 layout="single", mode="walk", lowpass_hz=10.0, body_weight_n=700.0)
    data = np.column_stack([grf, cop])
    steps = process_arrays(settings, {"single": (t, data)}, lab_frame=True)
    duration = t[-1] - t[0]
    # about 2.0 steps/s over 123 s, feet alternating
    assert 1.8 * duration < len(steps) < 2.2 * duration
    feet = steps["foot"]
    assert np.mean(np.diff(feet) != 0) > 0.97
    cadence = steps["cadence_spm"][10:]
    assert 108 < np.nanmedian(cadence) < 132
    contact = steps["contact_s"]
    step_s = steps["step_s"][np.isfinite(steps["step_s"])]
    # walking: each contact lasts longer than a step (double support)
    assert np.median(contact) > np.median(step_s)
    chunked = _feed_in_chunks(settings, {"single": (t, lab_to_plate(grf, cop, np.zeros(len(t)),
                                                                     np.asarray(settings.plates[0].corners_m),
                                                                     (0, 0, 0)))}, {}, 7)
    np.testing.assert_array_equal(steps_to_rows(chunked), steps_to_rows(steps))


def test_crossover_steps_are_flagged_and_left_out():
    rate = 1000.0
    t = np.arange(int(4 * rate)) / rate
    fz = {"left": np.zeros(len(t)), "right": np.zeros(len(t))}
    strikes = [0.2, 0.55, 0.9, 1.25, 1.6, 1.95, 2.3, 2.65, 3.0]
    for i, s in enumerate(strikes):
        u = (t - s) / 0.25
        bump = np.where((u > 0) & (u < 1), 1700 * np.sin(np.pi * np.clip(u, 0, 1)), 0.0)
        if i == 4:  # this foot lands across both belts
            fz["left"] += 0.5 * bump
            fz["right"] += 0.5 * bump
        else:
            fz["left" if i % 2 == 0 else "right"] += bump
    plates = {b: (t, np.column_stack([np.zeros((len(t), 2)), f, np.full((len(t), 2), np.nan)]))
              for b, f in fz.items()}
    settings = ProcessorSettings(rate_hz=rate, plates=LAB_SPLIT, body_weight_n=700.0)
    steps = process_arrays(settings, plates, lab_frame=True)
    assert len(steps) == len(strikes) + 1  # the cross-over shows on both belts
    flagged = steps[steps["crossover"] == 1]
    assert len(flagged) == 2
    np.testing.assert_allclose(flagged["strike_s"], 1.6, atol=0.005)
    assert np.all(np.isnan(flagged["peak_vgrf_bw"]))
    assert np.all(np.isnan(flagged["step_s"]))
    normal = steps[steps["crossover"] == 0]
    assert np.all(np.isfinite(normal["peak_vgrf_bw"]))


def test_body_weight_from_quiet_standing():
    ps = ParticipantSettings(mode="run", speed_m_s=0.0, seed=3, mass_kg=81.0)
    rec = simulate_offline(ps, 3.0)
    settings = ProcessorSettings(rate_hz=1000.0, plates=LAB_SPLIT)
    proc = StepProcessor(settings)
    assert proc.body_weight_n is None
    with pytest.raises(ConfigError, match="body weight unknown"):
        proc.feed_plate("left", np.zeros(1), np.zeros((1, 6)))
    standing = {}
    for belt in ("left", "right"):
        standing[belt] = lab_to_plate(rec.grf_n[belt], rec.cop_m[belt], rec.tz_nm[belt],
                                      np.asarray(settings.plate(belt).corners_m), (0, 0, 0))
    weight = proc.measure_body_weight(standing)
    assert weight == pytest.approx(81.0 * 9.80665, rel=0.01)
    assert proc.body_weight_n == weight
    with pytest.raises(ConfigError, match="standing"):
        proc.measure_body_weight({"left": np.zeros((100, 6)), "right": np.zeros((100, 6))})


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"rate_hz": 0}, "rate_hz"),
    ({"lowpass_hz": 600}, "lowpass_hz"),
    ({"contact_off_n": 60}, "contact_off_n"),
    ({"layout": "triple"}, "layout"),
    ({"mode": "hop"}, "mode"),
    ({"plates": (PlateGeometry.lab_aligned("single"),)}, "plates"),
    ({"cadence_window_steps": 0}, "cadence_window_steps"),
    ({"body_mass_kg": -3}, "body_mass_kg"),
    ({"imu_sides": ("middle",)}, "imu_sides"),
    ({"filter_order": 11}, "filter_order"),
    ({"onset_power": 7}, "onset_power"),
])
def test_settings_errors_name_the_field(kwargs, field):
    base = {"rate_hz": 1000.0, "plates": LAB_SPLIT}
    base.update(kwargs)
    with pytest.raises(ConfigError, match=field):
        ProcessorSettings(**base)


def test_bad_chunks_get_clear_errors():
    proc = StepProcessor(ProcessorSettings(rate_hz=1000.0, plates=LAB_SPLIT, body_weight_n=700.0,
                                           imu_sides=("left",)))
    with pytest.raises(ConfigError, match="belt 'middle'"):
        proc.feed_plate("middle", np.zeros(2), np.zeros((2, 6)))
    with pytest.raises(ConfigError, match=r"expected shape \(3, 6\)"):
        proc.feed_plate("left", np.zeros(3), np.zeros((3, 5)))
    # a non-finite sample is flagged (issue 12), not refused: the chunk is consumed
    bad = np.zeros((4, 6))
    bad[2, 4] = np.nan
    assert len(proc.feed_plate("left", np.arange(4) / 1000.0, bad)) == 0
    proc.flush()
    assert [(r.belt, r.first_sample, r.last_sample) for r in proc.bad_runs] == [("left", 2, 2)]
    assert "sample 2 (t = 0.0020 s): force not a finite number" in proc.bad_runs[0].describe()
    proc = StepProcessor(ProcessorSettings(rate_hz=1000.0, plates=LAB_SPLIT, body_weight_n=700.0,
                                           imu_sides=("left",)))
    with pytest.raises(ConfigError, match="IMU side 'right'"):
        proc.feed_imu("right", np.zeros(1), np.zeros((1, 6)))
    with pytest.raises(DeviceError, match="timestamps"):
        proc.feed_imu("left", np.array([0.0, np.inf]), np.zeros((2, 6)))
    # nothing was consumed by the rejected chunks
    assert len(proc.feed_plate("left", np.arange(4) / 1000.0, np.zeros((4, 6)))) == 0


def test_a_dead_belt_stream_does_not_hold_back_the_other_belt(split_run):
    settings, plates, _, _ = split_run
    proc = StepProcessor(settings.__class__(**{**settings.__dict__, "imu_sides": ()}))
    t, ch = plates["left"]
    proc.feed_plate("right", plates["right"][0][:100], plates["right"][1][:100])  # then it dies
    got = proc.feed_plate("left", t[:1500], ch[:1500])
    assert len(got) == 0  # within plate_max_lag_s the right belt may still catch up
    got = proc.feed_plate("left", t[1500:], ch[1500:])
    assert len(got) >= 8 and np.all(got["foot"] == 0)
