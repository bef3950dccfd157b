"""`labsuite replay` over real LSL: session files with their metadata and timing; RBDS C3D through
the live processor gives the steps of `labsuite analyze`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from labsuite.archive.replay import ReplaySettings, load_streams
from labsuite.archive.writer import SessionWriter
from labsuite.errors import ConfigError, DataFileError
from labsuite.streams.contracts import (
    StreamSpec,
    commands_spec,
    force_plate_spec,
    imu_spec,
    markers_spec,
)
from labsuite.streams.messages import CMD_STOP, command, marker

CORNERS = np.array([[0.9, 0.25, 0.0], [-0.9, 0.25, 0.0], [-0.9, -0.25, 0.0], [0.9, -0.25, 0.0]])


def _session(path, uid):
    rng = np.random.default_rng(5)
    fp = force_plate_spec(f"{uid}-fp", belt="single", corners_m=CORNERS, origin_m=(0, 0, -0.04),
                          calibration_id="cal-7", rate_hz=500.0)
    imu = imu_spec(f"{uid}-imu", location="left distal tibia", side="left", rate_hz=250.0)
    mk, cmd = markers_spec(f"{uid}-mk"), commands_spec(f"{uid}-cmd")
    data = {}
    with SessionWriter(path, participant_id="P5") as w:
        h = {s.source_id: w.add_stream(s) for s in (fp, imu, mk, cmd)}
        t_fp = 200.0 + np.arange(1000) / 500.0  # 2 s
        t_imu = 200.3 + np.arange(400) / 250.0  # starts 0.3 s later
        d_fp = rng.normal(0, 100, (1000, 6)).astype(np.float32)
        d_imu = rng.normal(0, 5, (400, 6)).astype(np.float32)
        w.append(h[fp.source_id], t_fp, d_fp)
        w.append(h[imu.source_id], t_imu, d_imu)
        w.add_clock_offset(h[imu.source_id], 200.0, 0.05)  # the IMU's clock ran 50 ms behind
        texts = [marker("stage_start", stage="a"), marker("beat", n=1, spm=170)]
        w.append(h[mk.source_id], [200.5, 201.0], [[t] for t in texts])
        w.append(h[cmd.source_id], [200.2], [[command(CMD_STOP)]])
    data[fp.source_id] = (t_fp, d_fp, fp)
    data[imu.source_id] = (t_imu + 0.05, d_imu, imu)
    data[mk.source_id] = (np.array([200.5, 201.0]), texts, mk)
    return data, cmd


def _collect(source_ids, n_expected, timeout_s=60.0):
    """Resolve and read streams with plain pylsl (no labsuite on the receiving side)."""
    import pylsl

    inlets = {}
    deadline = time.monotonic() + timeout_s
    for sid in source_ids:
        found = pylsl.resolve_byprop("source_id", sid, 1, max(1.0, deadline - time.monotonic()))
        assert found, f"replayed stream {sid} not found"
        inlet = pylsl.StreamInlet(found[0], max_buflen=60)
        inlet.open_stream(timeout=10.0)
        inlets[sid] = inlet
    got = {sid: ([], []) for sid in source_ids}
    while time.monotonic() < deadline and any(len(got[s][1]) < n_expected[s] for s in source_ids):
        for sid, inlet in inlets.items():
            samples, stamps = inlet.pull_chunk(timeout=0.05)
            got[sid][0].extend(samples)
            got[sid][1].extend(stamps)
    specs = {sid: StreamSpec.from_info(inlet.info(timeout=5.0)) for sid, inlet in inlets.items()}
    return got, specs


def test_session_replay_keeps_samples_metadata_and_relative_timing(tmp_path, uid):
    path = tmp_path / "s.h5"
    truth, cmd = _session(path, uid)
    prefix = f"rp{uid[-6:]}-"
    proc = subprocess.Popen([sys.executable, "-m", "labsuite", "replay", str(path), "--source-prefix", prefix,
                             "--lead-s", "6", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert "publishing" in proc.stdout.readline()
        want = {prefix + sid: len(t) for sid, (t, _, _) in truth.items()}
        got, specs = _collect(list(want), want)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    firsts = {}
    for sid, (t, d, spec) in truth.items():
        samples, stamps = got[prefix + sid]
        assert len(stamps) == len(t), sid
        stamps = np.asarray(stamps)
        # Relative timing is the recorded one (clock offsets applied), to float precision.
        assert np.allclose(stamps - stamps[0], t - t[0], atol=1e-9, rtol=0)
        firsts[sid] = (stamps[0], t[0])
        if spec.dtype == "string":
            assert [s[0] for s in samples] == d
        else:
            assert np.array_equal(np.asarray(samples, dtype=np.float32), d)
        rs = specs[prefix + sid]
        assert (rs.name, rs.kind, rs.channels, rs.rate_hz, rs.dtype) == (
            spec.name, spec.kind, spec.channels, spec.rate_hz, spec.dtype)
        if spec.kind == "force_plate":
            assert np.allclose(np.array(rs.setup["force_platform"]["corners_m"].split(), float).reshape(4, 3),
                               CORNERS)
    # Timing across streams is kept too: the IMU starts 0.35 s after the plate (0.3 s + 50 ms offset).
    (a_pub, a_rec), (b_pub, b_rec) = firsts[f"{uid}-fp"], firsts[f"{uid}-imu"]
    assert abs((b_pub - a_pub) - (b_rec - a_rec)) < 1e-9
    assert abs((b_rec - a_rec) - 0.35) < 1e-9
    # Commands are never replayed by default.
    import pylsl

    assert not pylsl.resolve_byprop("source_id", prefix + cmd.source_id, 1, 1.0)


def test_replay_settings_and_inputs_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="speed"):
        ReplaySettings(speed=0)
    with pytest.raises(ConfigError, match="source_prefix"):
        ReplaySettings(source_prefix="bad prefix/")
    with pytest.raises(DataFileError, match="no such file"):
        load_streams(tmp_path / "x.h5", ReplaySettings())
    (tmp_path / "x.txt").write_text("1,2,3")
    with pytest.raises(DataFileError, match="expected a session file"):
        load_streams(tmp_path / "x.txt", ReplaySettings())


def test_c3d_replay_streams_carry_calibrated_forces_and_geometry_in_metres(shared_data):
    import ezc3d
    path = shared_data / "rbds" / "RBDS001runT35.c3d"
    (st,) = load_streams(path, ReplaySettings(source_prefix="x-"))
    c = ezc3d.c3d(str(path), extract_forceplat_data=True)
    pf = c["data"]["platform"][0]
    # Calibrated channels (CAL_MATRIX applied): their force, rotated into the C3D lab frame, is
    # ezc3d's platform force up to the sign convention of the file.
    raw = (pf["cal_matrix"] @ c["data"]["analogs"][0]).T
    assert st.spec.rate_hz == 300.0 and st.spec.dtype == "float64"
    assert st.data.shape == (raw.shape[0], 6)
    assert np.allclose(np.abs(st.data[:, :3]), np.abs(raw[:, :3]), atol=1e-9)
    assert np.allclose(np.abs(st.data[:, 3:]), np.abs(raw[:, 3:]) / 1000.0, atol=1e-9)  # N·mm -> N·m
    corners = np.array(st.spec.setup["force_platform"]["corners_m"], dtype=float)
    # Plate size 1800 x 486 mm in metres, whatever the frame.
    sides = sorted({round(float(np.linalg.norm(corners[0] - corners[k])), 3) for k in (1, 3)})
    assert sides == [0.486, 1.8]
    assert np.allclose(st.t_s, np.arange(len(st.t_s)) / 300.0)


def test_rbds_replay_through_the_live_processor_gives_the_analyze_steps(shared_data, uid, tmp_path):
    """RBDS001 as a live stream -> LiveRunner (the lab side) == `labsuite analyze` on the file."""
    from labsuite.lab.live import LiveRunner
    from labsuite.realtime.processor import PlateGeometry, ProcessorSettings
    from labsuite.steps import STEP_FIELD_NAMES

    path = shared_data / "rbds" / "RBDS001runT35.c3d"
    res = subprocess.run([sys.executable, "-m", "labsuite", "analyze", str(path), "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    ref = json.loads(res.stdout)
    prefix = f"rb{uid[-6:]}-"
    (st,) = load_streams(path, ReplaySettings(source_prefix=prefix))
    template = ProcessorSettings(rate_hz=300.0, plates=(PlateGeometry.lab_aligned("single"),),
                                 layout="single", mode="run", lowpass_hz=ref["lowpass_hz"],
                                 body_weight_n=ref["body_weight_n"])
    runner = LiveRunner(template, {"single": st.spec.source_id}, steps_source_id=f"{uid}-steps")
    runner.start()
    proc = subprocess.Popen([sys.executable, "-m", "labsuite", "replay", str(path), "--source-prefix", prefix,
                             "--speed", "4", "--lead-s", "5", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert runner.wait_started(60.0), "the live processor did not connect to the replayed plate"
        _out, err = proc.communicate(timeout=100)
        assert proc.returncode == 0, err
        time.sleep(1.0)  # the last chunks reach the runner
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        runner.stop()
    steps = []
    while not runner.steps_queue.empty():
        steps.append(runner.steps_queue.get_nowait())
    live = np.concatenate(steps)
    assert len(live) == len(ref["steps"]) > 80
    t0 = live["strike_s"][0] - ref["steps"][0]["strike_s"]  # the replay's time base
    for name in STEP_FIELD_NAMES:
        want = np.array([np.nan if s[name] is None else s[name] for s in ref["steps"]], dtype=object)
        if name == "foot":
            want = np.array([0.0 if v == "L" else 1.0 for v in want])
        elif name == "loading_rate_method":
            want = np.array([0.0 if v == "impact_peak" else 1.0 for v in want])
        want = want.astype(float)
        got = live[name].astype(float)
        if name.endswith("_s") and name in ("strike_s", "toe_off_s", "impact_peak_s", "decided_s"):
            got = got - t0
        # Same samples, same processor; only the LSL clock correction (a few microseconds, updated
        # every few seconds) differs, which moves step-time symmetry indices by ~0.001 %.
        atol = 0.01 if name.endswith("_pct") else 1e-4
        assert np.allclose(got, want, rtol=1e-4, atol=atol, equal_nan=True), name
