"""Video that belongs to a session: the frame-index band, file naming, the filming simulated camera,
the frame table in the session file (write, read, recover, inspect)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from labsuite.archive import layout as L
from labsuite.archive.inspect import format_summary, summarize
from labsuite.archive.reader import open_session
from labsuite.archive.recover import recover
from labsuite.archive.writer import SessionWriter
from labsuite.drivers.sim import gait
from labsuite.drivers.sim.camera import (
    HEEL_MARK_PX,
    LEFT_HEEL_BGR,
    RECONNECT_S,
    RIGHT_HEEL_BGR,
    SimCameraSettings,
    SimFilmingCamera,
    foot_pose,
    render_frame,
    to_px,
    to_x_m,
)
from labsuite.errors import ArchiveError, ConfigError, DeviceError
from labsuite.streams.contracts import camera_spec
from labsuite.video import band
from labsuite.video.naming import (
    first_free_part,
    relative_to_session,
    resolve_stored,
    segment_path,
    session_video_path,
)


def _frames_of(path):
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


class OfflinePlan:
    """A gait plan made beforehand by the real planner (what the LSL follower would deliver)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self.started = 0

    def start(self) -> None:
        self.started += 1

    def stop(self) -> None:
        pass

    def rows_for(self, t0: float, t1: float) -> np.ndarray:
        keep = (self.rows[:, gait._COL["next_strike_s"]] >= t0) & (self.rows[:, gait._COL["strike_s"]] <= t1)
        return self.rows[keep]


def _plan(duration_s: float = 30.0, **kw) -> np.ndarray:
    planner = gait.GaitPlanner(gait.ParticipantSettings(**kw), 0.0)
    return gait.steps_to_array(planner.plan_until(duration_s))


# ---- the band --------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [160, 320, 640, 1280])
def test_band_reads_back_after_jpeg_at_low_quality(width):
    rng = np.random.default_rng(width)
    for index in [0, 1, 2, 255, 256, 65535, band.MAX_INDEX, *rng.integers(0, band.MAX_INDEX, 20)]:
        img = rng.integers(0, 255, (width * 3 // 4, width, 3), dtype=np.uint8)  # busy picture below
        band.draw_band(img, int(index))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 30])
        assert ok
        assert band.read_band(cv2.imdecode(buf, cv2.IMREAD_COLOR)) == int(index)


def test_band_survives_mjpg_and_h264_video(tmp_path):
    import av

    indices = [0, 7, 99, 100, 4095, 123456, band.MAX_INDEX - 1]
    frames = []
    for i in indices:
        img = np.full((240, 320, 3), 200, np.uint8)
        cv2.circle(img, (160, 140), 50, (30, 30, 30), 3)
        frames.append(band.draw_band(img, i))
    avi = tmp_path / "b.avi"
    w = cv2.VideoWriter(str(avi), cv2.VideoWriter.fourcc(*"MJPG"), 100, (320, 240))
    for f in frames:
        w.write(f)
    w.release()
    assert [band.read_band(f) for f in _frames_of(avi)] == indices
    mp4 = tmp_path / "b.mp4"
    with av.open(str(mp4), "w") as c:
        s = c.add_stream("libx264", rate=100)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        s.options = {"crf": "35"}  # heavier compression than any clip labsuite writes
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(mp4)) as c:
        got = [band.read_band(fr.to_ndarray(format="bgr24")) for fr in c.decode(video=0)]
    assert got == indices


def test_a_frame_without_a_band_or_with_a_damaged_one_reads_as_none():
    rng = np.random.default_rng(1)
    assert band.read_band(np.full((240, 320, 3), 128, np.uint8)) is None
    misread = sum(band.read_band(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)) is not None
                  for _ in range(300))
    assert misread == 0
    img = band.draw_band(np.zeros((240, 320, 3), np.uint8), 4242)
    edges = np.round(np.linspace(0, 320, band.BLOCKS + 1)).astype(int)
    flipped = img.copy()
    flipped[:band.band_height_px(320), edges[10]:edges[11]] ^= 255  # one index bit
    assert band.read_band(img) == 4242 and band.read_band(flipped) is None
    with pytest.raises(ConfigError, match="band holds"):
        band.draw_band(img, band.MAX_INDEX + 1)
    with pytest.raises(ConfigError, match="too small"):
        band.draw_band(np.zeros((20, 40), np.uint8), 1)


# ---- naming ----------------------------------------------------------------------------------

def test_video_files_are_named_after_the_session_and_stored_relative_to_it(tmp_path):
    session = tmp_path / "P01_s2_20261124T101500Z.h5"
    base = session_video_path(session, "camera")
    assert base == tmp_path / "P01_s2_20261124T101500Z.camera.avi"
    other = session_video_path(tmp_path / "P01_s2_20261124T103000Z.h5", "camera")
    assert other != base  # two sessions of one folder: two videos
    assert segment_path(base, 1) == base
    assert segment_path(base, 3).name == "P01_s2_20261124T101500Z.camera.part3.avi"
    base.touch()
    segment_path(base, 2).touch()
    assert first_free_part(base) == 3 and first_free_part(base, 5) == 5
    assert relative_to_session(base, session) == (base.name, True)
    (tmp_path / "cams").mkdir()
    assert relative_to_session(tmp_path / "cams" / "x.avi", session) == ("cams/x.avi", True)
    assert relative_to_session("/elsewhere/x.avi", session) == ("x.avi", False)
    assert resolve_stored(session, "cams/x.avi") == tmp_path / "cams" / "x.avi"
    for bad in ("../x.avi", "/etc/passwd", "a/../../b.avi", "x\\y.avi", "", "a//b"):
        with pytest.raises(ArchiveError, match="relative to the session"):
            resolve_stored(session, bad)
    for bad in ("cam era", "../cam", "", "x" * 41):
        with pytest.raises(ConfigError, match="camera name"):
            session_video_path(session, bad)


# ---- the filming camera ----------------------------------------------------------------------

def test_frames_show_the_feet_where_the_gait_plan_puts_them():
    """Heel markers found in the compressed frames sit at the plan's heel positions (+-2 px)."""
    rows = _plan(20.0)
    steps = [gait.PlannedStep.from_vector(r) for r in rows if r[gait._COL["kind"]] == 0]
    checked = 0
    for st in steps[10:40]:
        for frac in (0.0, 0.5, 0.95):  # at the strike, mid-stance, just before toe-off
            t = st.strike_s + frac * st.contact_s
            img = render_frame(rows, t, 17)
            _ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 75])
            dec = cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(int)
            colour = LEFT_HEEL_BGR if st.foot == "left" else RIGHT_HEEL_BGR
            mask = (np.abs(dec - np.array(colour)).sum(axis=2) < 120)
            ys, xs = np.nonzero(mask)
            assert len(xs) >= HEEL_MARK_PX * HEEL_MARK_PX // 2, (st.index, frac)
            heel_x = st.foot_x_m - st.speed_m_s * (t - st.strike_s)  # rides back with the belt
            col, row = to_px(heel_x, 0.0)
            assert abs(xs.mean() + 0.5 - col) <= 2.0, (st.index, frac, xs.mean(), col)
            assert abs(ys.mean() + 0.5 - row) <= 2.0
            assert abs(to_x_m(xs.mean() + 0.5) - heel_x) <= 2.0 / 120
            assert band.read_band(dec.astype(np.uint8)) == 17
            checked += 1
    assert checked == 90
    # In swing the foot is off the belt; before the plan starts there is no foot at all.
    st = steps[20]
    mid_swing = st.toe_off_s + 0.5 * (st.next_strike_s - st.toe_off_s)
    pose = foot_pose(rows, mid_swing, st.foot)
    assert pose is not None and not pose.on_belt and pose.heel_z_m > 0.1
    assert foot_pose(rows, -1.0, "left") is None


def _run_camera(cam, clock, until_s, step_s=0.01):
    out = []
    while clock[0] < until_s:
        clock[0] += step_s
        try:
            out += cam.read(0.0)
        except DeviceError:
            cam.close()  # the runner closes and opens again at once; the camera takes RECONNECT_S
            cam.open()
    cam.close()
    return out


def test_camera_films_drops_and_reconnects_into_new_segments_never_overwriting(tmp_path, uid):
    rows = _plan(40.0)
    clock = [5.0]
    base = session_video_path(tmp_path / "S.h5", "camera")
    settings = SimCameraSettings(source_id=uid, video_path=base, drop_fraction=0.02,
                                 disconnect_every_s=4.0)
    cam = SimFilmingCamera(settings, OfflinePlan(rows), clock=lambda: clock[0])
    spec = cam.stream_specs()[0]
    assert spec.labels == ("frame_index", "segment", "position") and spec.can_drop_samples
    assert spec.setup["camera"]["video_file"] == str(base.resolve())
    cam.open()
    # A reader 80 ms late: the camera's 4-frame buffer keeps the newest 4 of the 8 due.
    clock[0] += 0.08
    late = cam.read(0.0)
    assert len(late[0].timestamps) <= 4 and cam.health.extra["frames_dropped"] >= 4
    chunks = late + _run_camera(cam, clock, 15.0)
    ts = np.concatenate([c.timestamps for c in chunks])
    data = np.concatenate([c.data for c in chunks])
    index, part, pos = data[:, 0].astype(int), data[:, 1].astype(int), data[:, 2].astype(int)
    assert np.array_equal(index, np.arange(len(index)))  # indices run on across segments
    assert np.all(np.diff(ts) > 0)
    assert sorted(set(part)) == [1, 2, 3]  # two cable faults: three segments
    gaps = np.diff(ts)
    assert (np.abs(gaps - 0.02) < 1e-9).sum() >= 5  # single random drops
    assert ((gaps > RECONNECT_S) & (gaps < RECONNECT_S + 0.05)).sum() == 2  # the reconnects
    assert cam.health.extra["frames_dropped"] > 0.01 * len(ts)
    # Each segment file holds exactly the frames published for it, in order, each showing its index.
    for p in (1, 2, 3):
        frames = _frames_of(segment_path(base, p))
        mine = part == p
        assert len(frames) == mine.sum()
        assert np.array_equal(pos[mine], np.arange(mine.sum()))
        assert [band.read_band(f) for f in frames] == index[mine].tolist()
    # A restarted camera process for the same session appends part 4; nothing is overwritten.
    before = segment_path(base, 1).stat().st_size
    cam2 = SimFilmingCamera(settings, OfflinePlan(rows), clock=lambda: clock[0])
    cam2.open()
    got = _run_camera(cam2, clock, clock[0] + 0.5)
    assert set(np.concatenate([c.data[:, 1] for c in got]).astype(int)) == {4}
    assert segment_path(base, 1).stat().st_size == before
    assert [s[0].name for s in cam.segments] == [segment_path(base, p).name for p in (1, 2, 3)]


def test_camera_without_video_publishes_the_counter_and_settings_are_checked(tmp_path, uid):
    clock = [0.0]
    cam = SimFilmingCamera(SimCameraSettings(source_id=uid, drop_fraction=0.0), None, clock=lambda: clock[0])
    cam.open()
    clock[0] = 0.045
    (chunk,) = cam.read(0.0)
    assert chunk.data[:, 0].tolist() == list(range(4)) and set(chunk.data[:, 1]) == {0.0}
    assert set(chunk.data[:, 2]) == {-1.0}
    for kw, match in (({"rate_hz": 0}, "rate_hz"), ({"drop_fraction": 0.6}, "drop_fraction"),
                      ({"buffer_frames": 0}, "buffer_frames"), ({"disconnect_every_s": 0}, "disconnect"),
                      ({"video_path": tmp_path / "no" / "v.avi"}, "folder does not exist")):
        with pytest.raises(ConfigError, match=match):
            SimCameraSettings(source_id=uid, **kw)


# ---- the frame table in the session file ------------------------------------------------------

def _session_with_video(tmp_path, uid, *, parts=2):
    path = tmp_path / "P01_20260101T000000Z.h5"
    base = session_video_path(path, "camera")
    spec = camera_spec(f"{uid}-cam", video_file=str(base))
    w = SessionWriter(path, participant_id="P01")
    h = w.add_stream(spec)
    w.start()
    frames = np.empty(0, dtype=L.FRAME_DTYPE)
    t, index = 100.0, 0
    for p in range(1, parts + 1):
        seg = segment_path(base, p)
        seg.write_bytes(b"video")
        row = w.add_video_segment({"camera": spec.source_id, "camera_name": spec.name, "segment": p,
                                   "file": seg.name, "first_frame_index": index, "rate_hz": 100.0},
                                  t)
        n = 50
        f = np.empty(n, dtype=L.FRAME_DTYPE)
        f["frame_index"] = index + np.arange(n)
        f["time_s"] = t + np.arange(n) * 0.01
        f["segment"], f["position"] = row, np.arange(n)
        w.append(h, f["time_s"], np.column_stack([f["frame_index"], np.full(n, p), f["position"]]))
        w.append_video_frames(f)
        w.add_clock_offset(h, t, 0.5)
        frames = np.concatenate([frames, f])
        t, index = t + 1.0, index + n
    w.close()
    return path, frames


def test_frame_table_round_trip_recover_and_inspect(tmp_path, uid):
    path, frames = _session_with_video(tmp_path, uid)
    with open_session(path) as s:
        assert s.attrs["format_version"] == 3 and s.complete
        segs = s.video_segments
        assert [(g.part, g.file, g.exists) for g in segs] == [
            (1, "P01_20260101T000000Z.camera.avi", True), (2, "P01_20260101T000000Z.camera.part2.avi", True)]
        assert np.array_equal(s.video_frames_raw, frames)
        assert np.allclose(s.video_frames["time_s"], frames["time_s"] + 0.5)  # the camera's offsets
        summary = summarize(s)
    assert [v["frames"] for v in summary["video"]] == [50, 50] and summary["video_missing"] == []
    segment_path(tmp_path / "P01_20260101T000000Z.camera.avi", 2).unlink()
    with open_session(path) as s:
        summary = summarize(s)
    assert summary["video_missing"] == ["P01_20260101T000000Z.camera.part2.avi"]
    assert "MISSING video file: P01_20260101T000000Z.camera.part2.avi" in format_summary(summary)
    out = tmp_path / "sub"
    out.mkdir()
    rep = recover(path, out / "fixed.h5")
    assert ("video frames", 100) in rep.kept and any("copy them" in n for n in rep.notes)
    with open_session(out / "fixed.h5") as s:
        assert np.array_equal(s.video_frames_raw, frames)
        assert next(g.record for g in s.video_segments)["first_frame_index"] == 0


def test_damaged_frame_table_is_reported_and_older_formats_still_read(tmp_path, uid):
    import h5py

    path, _frames = _session_with_video(tmp_path, uid)
    with h5py.File(path, "r+") as f:
        f["video/frames/table"][60] = (60, 100.6, 7, 10)  # segment 7 does not exist
    with open_session(path, allow_damaged=True) as s:
        assert s.status == "damaged"
        assert any("video/frames: row" in p for p in s.problems) or any("checksum" in p for p in s.problems)
        assert len(s.video_frames) <= 60
    with pytest.raises(ArchiveError, match="damaged"):
        open_session(path)
    # A format-2 file (no video group) reads as before, with no video.
    old = tmp_path / "old.h5"
    (tmp_path / "x").mkdir()
    path2, _ = _session_with_video(tmp_path / "x", uid)
    with h5py.File(path2, "r+") as f:
        del f["video"]
        f.attrs["format_version"] = 2
        f.attrs[L.HEADER_SHA256] = L.header_digest(dict(f.attrs.items()))
    path2.rename(old)
    with open_session(old) as s:
        assert s.status == "complete" and s.video_segments == [] and len(s.video_frames) == 0
    # A stored name that leaves the session's folder is never followed.
    path3 = tmp_path / "bad.h5"
    w = SessionWriter(path3, participant_id="P01")
    w.add_video_segment({"camera": "c", "segment": 1, "file": "../../etc/passwd"}, 1.0)
    w.close()
    with open_session(path3, allow_damaged=True) as s:
        assert s.video_segments[0].path is None and not s.video_segments[0].exists
        assert any("relative to" in p for p in s.problems)
    assert json.loads(json.dumps(summarize(open_session(path3, allow_damaged=True))["video"]))
