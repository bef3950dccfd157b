"""LiveRunner over real LSL on loopback: plate and IMU outlets in, labsuite-steps out."""

from __future__ import annotations

import time

import numpy as np
import pylsl
import pytest

from labsuite.drivers.sim.gait import ParticipantSettings, simulate_offline
from labsuite.errors import ConfigError
from labsuite.lab.live import LiveRunner
from labsuite.plates import lab_to_plate
from labsuite.realtime.processor import PlateGeometry, ProcessorSettings, process_arrays
from labsuite.steps import STEP_FIELD_NAMES, rows_to_steps
from labsuite.streams.contracts import force_plate_spec, imu_spec


def _corners(y0):
    return np.array([[1.6, y0 + 0.25, 0.0], [1.6, y0, 0.0], [0.0, y0, 0.0], [0.0, y0 + 0.25, 0.0]])


def test_live_runner_publishes_the_offline_steps(uid):
    ps = ParticipantSettings(mode="run", seed=21)
    rec = simulate_offline(ps, 6.0)
    origin = (0.0, 0.0, 0.04)
    plates, specs = {}, {}
    for belt, y0 in (("left", 0.0), ("right", -0.25)):
        grf = rec.grf_n[belt]
        shift = np.array([0.8, 0.125 if belt == "left" else -0.125])  # onto each belt
        cop = np.where(grf[:, 2:3] > 1.0, rec.cop_m[belt], np.nan) + shift
        ch = lab_to_plate(grf, cop, rec.tz_nm[belt], _corners(y0), origin)
        plates[belt] = ch.astype(np.float32).astype(np.float64)  # the stream is float32
        specs[belt] = force_plate_spec(f"{uid}-fp-{belt}", belt=belt, corners_m=_corners(y0),
                                       origin_m=origin, calibration_id="test", rate_hz=1000.0,
                                       name=f"fp-{belt}-{uid}")
    # one IMU keeps the number of outlets low: LSL ports are shared by everything on this machine
    imus = {"left": rec.imu["left"].astype(np.float32).astype(np.float64)}
    imu_specs = {side: imu_spec(f"{uid}-imu-{side}", location=f"{side} tibia", side=side,
                                name=f"imu-{side}-{uid}") for side in imus}
    template = ProcessorSettings(rate_hz=500.0, plates=(PlateGeometry.lab_aligned("left"),
                                                      PlateGeometry.lab_aligned("right")),
                                 body_mass_kg=ps.mass_kg, imu_sides=("left",))
    outlets = {k: pylsl.StreamOutlet(s.to_info()) for k, s in specs.items()}
    imu_outlets = {k: pylsl.StreamOutlet(s.to_info()) for k, s in imu_specs.items()}
    runner = LiveRunner(template, {b: s.source_id for b, s in specs.items()},
                        imus={k: s.source_id for k, s in imu_specs.items()},
                        steps_source_id=f"{uid}-steps", steps_name=f"steps-{uid}")
    runner.start()
    try:
        assert runner.wait_started(60.0), [str(r.query) for r in runner.readers if not r.wait_connected(0)]
        assert runner.processor is not None
        assert runner.processor.settings.rate_hz == 1000.0
        found = pylsl.resolve_byprop("source_id", f"{uid}-steps", timeout=60.0)
        assert found
        # recover=False: a vanished outlet raises instead of blocking the pull inside liblsl
        inlet = pylsl.StreamInlet(found[0], recover=False)
        inlet.open_stream(timeout=10.0)
        for r in runner.readers[2:]:
            assert r.wait_connected(60.0)
        time.sleep(0.5)  # let the inlets of the runner subscribe before data flows
        base = pylsl.local_clock()
        t = rec.t_plate_s
        for start in range(0, len(t), 20):
            # real-time pace, as devices send: the processor gives up waiting for an IMU that
            # lags the plates by more than imu_max_lag_s of data time
            delay = base + t[start] - pylsl.local_clock()
            if delay > 0:
                time.sleep(delay)
            sl = slice(start, start + 20)
            stamps = (base + t[sl]).tolist()
            for belt, outlet in outlets.items():
                outlet.push_chunk(plates[belt][sl].tolist(), stamps)
            for side, outlet in imu_outlets.items():
                outlet.push_chunk(imus[side][sl].tolist(), stamps)
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            belts = runner.processor._belts.values()
            # corrected times differ from ours by the measured clock offset (microseconds)
            if all(b.last_t >= base + t[-1] - 0.01 for b in belts):
                break
            time.sleep(0.1)
        time.sleep(0.5)  # IMU chunks may trail the plates by a moment
        n_live = runner.stats().steps
        published = []
        deadline = time.monotonic() + 30.0
        while len(published) < n_live and time.monotonic() < deadline:
            samples, _ = inlet.pull_chunk(timeout=0.2)
            published.extend(samples)
        inlet.close_stream()
        runner.stop()  # releases the steps still waiting at the end of the data
        queued = []
        while not runner.steps_queue.empty():
            queued.append(runner.steps_queue.get_nowait())
    finally:
        runner.stop()
    queued = np.concatenate(queued)
    settings = ProcessorSettings(rate_hz=1000.0, plates=runner.processor.settings.plates,
                                 body_mass_kg=ps.mass_kg, imu_sides=("left",))
    offline = process_arrays(settings, {b: (base + t, plates[b]) for b in plates},
                             {s: (base + rec.t_imu_s, imus[s]) for s in imus})
    assert len(offline) >= 14
    assert len(queued) == len(offline)
    assert runner.stats().steps == len(offline) and runner.stats().rejected_chunks == 0
    # the readers correct timestamps by the measured clock offset (about 0 on one machine)
    for name in ("strike_s", "toe_off_s"):
        np.testing.assert_allclose(queued[name], offline[name], atol=1e-3, rtol=0)
    for name in ("peak_vgrf_bw", "foot", "loading_rate_method", "tibial_peak_g"):
        np.testing.assert_allclose(queued[name], offline[name], rtol=1e-3)
    assert np.isfinite(queued["tibial_peak_g"][queued["foot"] == 0]).all()
    lsl_steps = rows_to_steps(np.asarray(published))
    assert len(lsl_steps) == n_live > len(offline) - 4  # only the last ones wait for the stop
    queued = queued[:n_live]
    np.testing.assert_array_equal(lsl_steps["foot"], queued["foot"])
    np.testing.assert_allclose(lsl_steps["strike_s"], queued["strike_s"], rtol=0, atol=1e-9)
    assert inlet.info().channel_count() == len(STEP_FIELD_NAMES)


def test_run_until_returns_when_asked_to_stop(uid):
    import threading

    template = ProcessorSettings(rate_hz=1000.0, plates=(PlateGeometry.lab_aligned("single"),),
                                 layout="single", body_mass_kg=70.0)
    runner = LiveRunner(template, {"single": f"{uid}-absent"}, steps_source_id=f"{uid}-steps")
    runner.start()
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    rest = runner.run_until(stop, status_s=0.1)
    assert len(rest) == 0
    assert not runner.stats().started  # the plate stream never appeared


def test_live_runner_checks_its_configuration():
    template = ProcessorSettings(rate_hz=1000.0, plates=(PlateGeometry.lab_aligned("left"),
                                                         PlateGeometry.lab_aligned("right")),
                                 body_mass_kg=70.0)
    with pytest.raises(ConfigError, match="plates"):
        LiveRunner(template, {"left": "a"}, steps_source_id="x")
    with pytest.raises(ConfigError, match="imu_sides"):
        LiveRunner(template, {"left": "a", "right": "b"}, imus={"left": "c"}, steps_source_id="x")
    no_weight = ProcessorSettings(rate_hz=1000.0, plates=template.plates)
    with pytest.raises(ConfigError, match="body_mass_kg"):
        LiveRunner(no_weight, {"left": "a", "right": "b"}, steps_source_id="x")
