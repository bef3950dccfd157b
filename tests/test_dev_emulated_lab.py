"""The real-device path end to end: ``labsuite run --lab LAB.yaml`` over wire-protocol emulators.

A Bertec treadmill (TCP), a serial LSFP plate (pty), a QTM plate (TCP, qtm-rt) and two x-IMU3s
(pty) measure one emulated runner (``tests/emulators/lab.py``) who runs at the belt speed the
treadmill emulator reports and follows the session's metronome. The run must find the steps, set
the targets and write a complete session file; steps and weight are checked against the
emulated participant's own plan (the ground truth), not against labsuite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pylsl
import pytest
from emulators.gait_scene import GaitScene, plate_channels
from emulators.lab import EmulatedLab

from labsuite.archive.reader import open_session
from labsuite.drivers.sim import gait
from labsuite.plates import plate_to_lab

pytestmark = pytest.mark.slow

PROTOCOL = """\
schema: labsuite-protocol/1
name: emulated-short
speed_m_s: 3.0
safety: {accel_m_s2: 1.0, no_contact_timeout_s: 3.0}
checkins: {at_start: false, at_stage_boundaries: false}
stages:
  - {name: weigh-in, kind: quiet_standing, duration_s: 6}
  - {name: baseline, kind: baseline, duration_s: 20, measure_last_steps: 20}
  - name: cadence-up
    kind: cadence
    duration_s: 16
    target_percent: 7.5
    band_percent: 3
    cues: {metronome: {spm: target}}
  - {name: retention, kind: retention, duration_s: 8, target_percent: 7.5, band_percent: 3}
"""
MASS_KG = 70.0


def test_emulator_plate_physics_agree_with_labsuite_geometry():
    """The emulators' own plate physics and labsuite's COP/free-moment maths are inverse of each other."""
    from emulators.lab import CAL_LEFT

    from labsuite.calibration import load_calibration

    cal = load_calibration(CAL_LEFT)
    rng = np.random.default_rng(4)
    grf = np.column_stack([rng.normal(0, 150, 50), rng.normal(0, 60, 50), rng.uniform(200, 2000, 50)])
    cop = np.column_stack([rng.uniform(-0.8, 0.8, 50), rng.uniform(0.02, 0.23, 50)])
    tz = rng.normal(0, 5, 50)
    channels = plate_channels(grf, cop, tz, cal.corners_m, cal.origin_m)
    grf_back, cop_back, tz_back = plate_to_lab(channels, cal.corners_m, cal.origin_m)
    np.testing.assert_allclose(grf_back, grf, atol=1e-9)
    np.testing.assert_allclose(cop_back, cop, atol=1e-9)
    np.testing.assert_allclose(tz_back, tz, atol=1e-9)


def test_scene_follows_the_belt_and_steps_on_when_told():
    speed = [0.0]
    scene = GaitScene(gait.ParticipantSettings(mass_kg=MASS_KG), lambda: speed[0])
    t0 = time.monotonic()
    grf, _, _ = scene.plate("left", t0 + np.arange(100) / 1000)
    assert not grf.any()  # nobody on the belt yet: the drivers tare on an empty plate
    scene.step_on(t0 + 0.1)
    t = t0 + 0.1 + np.arange(2000) / 1000
    total = scene.plate("left", t)[0][:, 2] + scene.plate("right", t)[0][:, 2]
    assert np.mean(total[500:]) == pytest.approx(MASS_KG * 9.80665, rel=0.05)  # standing
    speed[0] = 3.0
    t = t0 + 2.2 + np.arange(8000) / 1000
    fz = scene.plate("left", t)[0][:, 2]
    assert fz.max() > 1.8 * MASS_KG * 9.80665  # running, with flight phases
    assert (fz[4000:] < 20).mean() > 0.4


def _run_session(lab: EmulatedLab, tmp_path) -> subprocess.CompletedProcess:
    proto = tmp_path / "emulated.yaml"
    proto.write_text(PROTOCOL)
    return subprocess.run(
        [sys.executable, "-m", "labsuite", "run", str(proto), "--participant", "P21", "--lab",
         str(lab.lab_file), "--mass-kg", str(MASS_KG), "--headless", "--out", str(tmp_path / "out"),
         "--quiet", "--auto-start", "--no-sound"], capture_output=True, text=True, timeout=300,
        env=dict(os.environ))


def test_a_full_protocol_over_the_emulated_lab(tmp_path, uid):
    assert abs(pylsl.local_clock() - time.monotonic()) < 0.01  # the scene's clock is LSL's
    with EmulatedLab(tmp_path / "lab", uid) as lab:
        proc = _run_session(lab, tmp_path)
        planned = list(lab.scene.planned)
        commands = list(lab.treadmill.commands)
        violations = list(lab.treadmill.violations)
        emulated = lab.describe()
    out = f"{proc.stdout[-2500:]}\n{proc.stderr[-2500:]}\nemulated lab: {emulated}"
    assert proc.returncode == 0, out
    assert "session ended: completed" in proc.stdout, out
    assert violations == []
    # The belt ran at the protocol's speed and was stopped at the end, by the session.
    assert max(c.speeds_mm_s[0] for c in commands) == 3000
    assert commands[-1].speeds_mm_s == (0, 0, 0, 0)
    files = list((tmp_path / "out").glob("P21_*.h5"))
    assert len(files) == 1
    with open_session(files[0]) as f:
        assert f.complete
        # Every device's stream, at its nominal rate, without gaps.
        for name, rate in (("fp-left", 1000), ("fp-right", 1000), ("imu-left", 400), ("imu-right", 400),
                           ("treadmill", 50)):
            stream = f.stream(f"labsuite-{uid}-{name}")
            assert stream.measured_rate_hz == pytest.approx(rate, rel=0.01), name
            assert stream.gaps() == [], name
        belt = f.stream(f"labsuite-{uid}-treadmill")
        assert belt.data[:, 0].max() == pytest.approx(3.0, abs=0.01)
        stages = f.stages
        assert [s.name for s in stages] == ["weigh-in", "baseline", "cadence-up", "retention"]
        assert [s.end_reason for s in stages] == ["time"] * 4
        markers = [json.loads(t) for t in f.markers["text"]]
        weight = next(m for m in markers if m.get("event") == "body_weight")
        assert weight["mass_kg"] == pytest.approx(MASS_KG, rel=0.03)  # the weigh-in on both plates
        base, fast = stages[1], stages[2]
        s_base, s_fast = json.loads(base.summary_json), json.loads(fast.summary_json)
        assert fast.target_cadence_spm == pytest.approx(1.075 * s_base["cadence_spm"], rel=0.01)
        steps = f.steps
    # Steps against the emulated participant's plan (monotonic = LSL clock on this machine).
    truth = [(s.strike_s, gait.FEET.index(s.foot)) for s in planned if s.kind == "step"]
    true_strikes = np.array([t for t, _ in truth])
    true_feet = np.array([foot for _, foot in truth])
    moving = (true_strikes > base.start_s + 5.0) & (true_strikes < fast.end_s - 1.0)
    found = 0
    for t, foot in zip(true_strikes[moving], true_feet[moving], strict=True):
        near = np.abs(steps["strike_s"] - t) < 0.02
        found += int(np.any(near & (steps["foot"] == foot)))
    assert moving.sum() > 80
    assert found / moving.sum() > 0.97, (found, moving.sum())
    lag = [np.min(np.abs(steps["strike_s"] - t)) for t in true_strikes[moving]]
    assert np.median(lag) < 0.01
    # Cadence: the session's number against the plan's strikes over the same last 20 steps.
    in_base = np.sort(true_strikes[(true_strikes > base.start_s) & (true_strikes < base.end_s)])[-21:]
    assert s_base["cadence_spm"] == pytest.approx(60.0 / np.mean(np.diff(in_base)), rel=0.02)
    # The participant followed the metronome: cadence rose towards the target.
    assert s_fast["cadence_spm"] > 1.04 * s_base["cadence_spm"]
    print(f"emulated lab: {len(steps)} steps, {found}/{moving.sum()} planned strikes found, median "
          f"lag {1000 * np.median(lag):.1f} ms; baseline {s_base['cadence_spm']:.1f} spm, target "
          f"{fast.target_cadence_spm:.1f}, cadence-up {s_fast['cadence_spm']:.1f} spm; weigh-in "
          f"{weight['mass_kg']:.1f} kg")
