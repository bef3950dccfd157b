"""HDF5 -> C3D -> ezc3d gives back the recorded forces, COP and foot events; CSV export round trip."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import ezc3d
import numpy as np
import pytest

from labsuite.archive.export import export_c3d, export_csv, read_c3d_events
from labsuite.archive.reader import open_session
from labsuite.archive.writer import SessionWriter
from labsuite.errors import ArchiveError
from labsuite.plates import lab_to_plate
from labsuite.stages import StageRecord
from labsuite.steps import empty_steps
from labsuite.streams.contracts import force_plate_spec, imu_spec, markers_spec
from labsuite.streams.messages import marker

RATE = 1000.0
ORIGIN = (0.002, -0.001, -0.04)


def _corners(y0, width):
    # C3D corner order with the plate z axis pointing down (as the simulated lab does).
    return np.array([[0.9, y0, 0.0], [-0.9, y0, 0.0], [-0.9, y0 + width, 0.0], [0.9, y0 + width, 0.0]])


def _gait(t, foot_offset_s, y_cop):
    """Half-sine stances of 0.25 s every 0.7 s; GRF (n, 3), COP (n, 2), free moment (n,)."""
    phase = (t - foot_offset_s) % 0.7
    on = phase < 0.25
    fz = np.where(on, 1500.0 * np.sin(np.pi * phase / 0.25), 0.0)
    grf = np.column_stack([np.where(on, -120 * np.cos(np.pi * phase / 0.25), 0.0), 15.0 * on, fz])
    cop = np.column_stack([np.where(on, -0.2 + 0.8 * phase, np.nan), np.where(on, y_cop, np.nan)])
    tz = np.where(on, 2.0 * np.sin(2 * np.pi * phase / 0.25), np.nan)
    return grf, cop, tz


@pytest.fixture()
def session_file(tmp_path, uid):
    path = tmp_path / "s.h5"
    plates = {
        "left": (_corners(0.0, 0.25), 0.0, 0.12, 0.0),
        "right": (_corners(-0.25, 0.25), 0.35, -0.12, 0.5 / RATE),  # half a sample later
    }
    truth = {}
    w = SessionWriter(path, participant_id="P9")
    handles = {}
    for belt, (corners, *_rest) in plates.items():
        spec = force_plate_spec(f"{uid}-{belt}", belt=belt, corners_m=corners, origin_m=ORIGIN,
                                calibration_id="c", rate_hz=RATE)
        handles[belt] = w.add_stream(spec)
    w.add_stream(imu_spec(f"{uid}-imu", location="x", side="left"))
    mk = w.add_stream(markers_spec(f"{uid}-mk"))
    for belt, (corners, off, y, shift) in plates.items():
        t = 50.0 + shift + np.arange(int(5 * RATE)) / RATE
        grf, cop, tz = _gait(t, off, y)
        ch = lab_to_plate(grf, cop, tz, corners, ORIGIN)
        truth[belt] = (t, grf, cop, ch)
        for k in range(0, len(t), 37):  # realistic uneven chunks
            w.append(handles[belt], t[k:k + 37], ch[k:k + 37])
    steps = empty_steps(6)
    steps["foot"] = [0, 1, 0, 1, 0, 1]
    steps["strike_s"] = 50.0 + np.array([0.0, 0.35, 0.7, 1.05, 1.4, 1.75]) + 0.01
    steps["toe_off_s"] = steps["strike_s"] + 0.24
    w.append_steps(steps)
    st = StageRecord(0, "baseline", "baseline", 50.0, 52.0, end_reason="time")
    w.append(mk, [52.0], [[marker("stage_end", **st.to_marker_fields())]])
    w.close()
    return path, truth, steps, uid


def test_c3d_export_gives_back_the_recorded_forces_cop_and_events(session_file, tmp_path):
    path, truth, steps, _uid = session_file
    out = tmp_path / "s.c3d"
    with open_session(path) as s:
        rep = export_c3d(s, out)
    assert rep.n_events == 12
    c = ezc3d.c3d(str(out), extract_forceplat_data=True)
    rate = float(c["parameters"]["ANALOG"]["RATE"]["value"][0])
    assert rate == RATE
    analogs = c["data"]["analogs"][0]
    n = analogs.shape[1]
    # The common span starts at the later plate's first sample.
    t_grid = rep.start_s + np.arange(n) / RATE
    assert rep.start_s == truth["right"][0][0]
    for i, belt in enumerate(("left", "right")):
        t, grf, cop, ch = truth[belt]
        ref = np.column_stack([np.interp(t_grid, t, ch[:, j]) for j in range(6)])
        got = analogs[6 * i: 6 * i + 6].T
        assert np.allclose(got[:, :3], ref[:, :3], atol=1e-3)  # N (C3D stores float32)
        assert np.allclose(got[:, 3:] / 1000.0, ref[:, 3:], atol=1e-3)  # N·mm -> N·m
        pf = c["data"]["platform"][i]
        # ezc3d's platform force is the force on the plate in the lab frame: minus the GRF.
        grf_ref = np.column_stack([np.interp(t_grid, t, grf[:, j]) for j in range(3)])
        assert np.allclose(pf["force"].T, -grf_ref, atol=2e-2)
        loaded = grf_ref[:, 2] > 200
        assert loaded.sum() > 1000
        cop_ezc3d_m = pf["center_of_pressure"].T[loaded, :2] / 1000.0
        # The true COP moves linearly within a stance, so interpolation is exact there.
        cop_ref = np.column_stack([np.interp(t_grid, t, np.nan_to_num(cop[:, j])) for j in range(2)])[loaded]
        inside = np.isfinite(np.interp(t_grid, t, cop[:, 0]))[loaded]
        assert np.allclose(cop_ezc3d_m[inside], cop_ref[inside], atol=1e-4)  # 0.1 mm; float32 stream
        corners = np.asarray(c["parameters"]["FORCE_PLATFORM"]["CORNERS"]["value"])[:, :, i].T / 1000
        assert np.allclose(corners, _corners(0.0 if belt == "left" else -0.25, 0.25))
    events = read_c3d_events(out)
    strikes = [(t, ctx) for t, ctx, lbl in events if lbl == "Foot Strike"]
    offs = [(t, ctx) for t, ctx, lbl in events if lbl == "Foot Off"]
    expect = [(float(s - rep.start_s), "Left" if f == 0 else "Right") for s, f in
              zip(steps["strike_s"], steps["foot"], strict=True)]
    assert [ctx for _, ctx in strikes] == [ctx for _, ctx in expect]
    assert np.allclose([t for t, _ in strikes], [t for t, _ in expect], atol=1e-5)
    assert np.allclose([t for t, _ in offs], [t + 0.24 for t, _ in expect], atol=1e-5)


def test_beyond_255_events_every_reader_sees_the_first_255_and_contact_channels_hold_all(tmp_path, uid):
    """C3D caps each parameter array at 255 (docs/archive.md): EVENT keeps 255, channels keep all."""
    path = tmp_path / "many.h5"
    with SessionWriter(path, participant_id="P9") as w:
        spec = force_plate_spec(uid, belt="single", corners_m=_corners(-0.25, 0.5), origin_m=ORIGIN,
                                calibration_id="c", rate_hz=RATE)
        h = w.add_stream(spec)
        t = np.arange(int(200 * RATE)) / RATE
        w.append(h, t, np.tile([0.0, 0.0, 700.0, 0.0, 0.0, 0.0], (len(t), 1)))
        steps = empty_steps(300)
        steps["foot"] = np.arange(300) % 2
        steps["strike_s"] = 0.05 + np.arange(300) * 0.6
        steps["toe_off_s"] = steps["strike_s"] + 0.25
        w.append_steps(steps)
    with open_session(path) as s:
        rep = export_c3d(s, tmp_path / "many.c3d")
    assert rep.n_events == 600 and any("LeftContact" in n for n in rep.notes)
    c = ezc3d.c3d(str(tmp_path / "many.c3d"))  # reads back: no parameter wider than 255
    ev = c["parameters"]["EVENT"]
    assert int(ev["USED"]["value"][0]) == 255 and np.asarray(ev["TIMES"]["value"]).shape == (2, 255)
    assert not any(k.startswith(("TIMES2", "LABELS2")) for k in ev)
    assert int(c["parameters"]["LABSUITE"]["EVENTS_TOTAL"]["value"][0]) == 600
    assert c["header"]["points"]["last_frame"] + 1 <= 65535
    events = read_c3d_events(tmp_path / "many.c3d")
    every = sorted([(float(x), "Foot Strike") for x in steps["strike_s"]] +
                   [(float(x), "Foot Off") for x in steps["toe_off_s"]])
    assert [e[2] for e in events] == [lbl for _, lbl in every[:255]]
    assert np.allclose([e[0] for e in events], [t for t, _ in every[:255]], atol=1e-4)
    labels = [str(x).strip() for x in c["parameters"]["ANALOG"]["LABELS"]["value"]]
    rate = float(c["parameters"]["ANALOG"]["RATE"]["value"][0])
    for foot, name in ((0, "LeftContact"), (1, "RightContact")):
        x = c["data"]["analogs"][0, labels.index(name)]
        edges = np.diff(np.r_[0.0, x])
        mine = steps[steps["foot"] == foot]
        # every strike and toe-off of the file, to one analog sample (start_s is the grid start)
        on = np.flatnonzero(edges > 0.5) / rate + rep.start_s
        off = np.flatnonzero(edges < -0.5) / rate + rep.start_s
        assert np.allclose(on, mine["strike_s"], atol=1.01 / rate)
        assert np.allclose(off, mine["toe_off_s"], atol=1.01 / rate)


def test_export_without_plates_is_a_clear_error(tmp_path, uid):
    path = tmp_path / "np.h5"
    with SessionWriter(path, participant_id="P9") as w:
        h = w.add_stream(imu_spec(uid, location="x", side="left"))
        w.append(h, [0.0, 0.001], np.zeros((2, 6)))
    with open_session(path) as s, pytest.raises(ArchiveError, match="no force-plate stream"):
        export_c3d(s, tmp_path / "x.c3d")


def test_csv_export_round_trips_every_value(session_file, tmp_path):
    path, truth, steps, uid = session_file
    with open_session(path) as s:
        files = export_csv(s, tmp_path / "csv")
        sd = s.streams[f"{uid}-left"]
    names = {f.name for f in files}
    assert {"steps.csv", "markers.csv", "stages.csv", "session.json"} <= names
    with (tmp_path / "csv" / f"stream_{sd.key}.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["time_s", "time_raw_s", "Fx [N]", "Fy [N]", "Fz [N]", "Mx [N*m]", "My [N*m]",
                       "Mz [N*m]"]
    data = np.array(rows[1:], dtype=float)
    assert np.array_equal(data[:, 2:], np.asarray(sd.data, dtype=np.float32).astype(float))
    assert np.array_equal(data[:, 1], truth["left"][0])
    with (tmp_path / "csv" / "steps.csv").open() as fh:
        srows = list(csv.DictReader(fh))
    assert [float(r["strike_s [s]"]) for r in srows] == steps["strike_s"].tolist()
    with (tmp_path / "csv" / "stages.csv").open() as fh:
        assert next(csv.DictReader(fh))["name"] == "baseline"
    meta = json.loads((tmp_path / "csv" / "session.json").read_text())
    assert meta["participant_id"] == "P9" and meta["complete"] is True


def test_export_cli(session_file, tmp_path):
    path, *_ = session_file
    res = subprocess.run([sys.executable, "-m", "labsuite", "export", str(path), "--c3d",
                          str(tmp_path / "o.c3d"), "--csv", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o.c3d").exists() and (tmp_path / "o" / "steps.csv").exists()
    res = subprocess.run([sys.executable, "-m", "labsuite", "export", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode != 0 and "--c3d" in res.stderr
