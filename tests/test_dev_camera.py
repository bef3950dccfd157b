"""Camera driver: a generated video file as the capture source; video out, frame index per frame."""

from __future__ import annotations

import csv
import threading
import time

import cv2  # in the test extra; the camera extra for users
import numpy as np
import pytest
from driver_contract import check_driver_contract

from labsuite.drivers.base import DriverRunner
from labsuite.drivers.camera import CameraDriver, CameraSettings
from labsuite.errors import ConfigError, DeviceError

W, H = 160, 120


def _code(frame: np.ndarray) -> int:
    """Read back the number drawn by _make_video: 10 bits as black/white 16-pixel blocks."""
    gray = frame if frame.ndim == 2 else frame.mean(axis=2)
    return sum(1 << b for b in range(10) if gray[8:24, 16 * b + 4:16 * b + 12].mean() > 128)


def _make_video(path, n, fps=30.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened()
    for i in range(n):
        img = np.zeros((H, W, 3), np.uint8)
        for b in range(10):
            if i >> b & 1:
                img[4:28, 16 * b:16 * b + 16] = 255
        writer.write(img)
    writer.release()
    return path


def _frames(path):
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(_code(frame))
    cap.release()
    return out


def test_settings_validated(tmp_path):
    with pytest.raises(ConfigError, match="folder does not exist"):
        CameraSettings(source=0, source_id="s", video_path=tmp_path / "no" / "v.avi")
    with pytest.raises(ConfigError, match="rate_hz"):
        CameraSettings(source=0, source_id="s", video_path=tmp_path / "v.avi", rate_hz=0)


def test_unopenable_source_is_a_clear_error(tmp_path, uid):
    drv = CameraDriver(CameraSettings(source=str(tmp_path / "missing.avi"), source_id=uid,
                                      video_path=tmp_path / "v.avi"))
    with pytest.raises(DeviceError, match="cannot open"):
        drv.open()
    drv.close()


def test_contract_and_video_matches_the_published_frame_indices(tmp_path, uid):
    src = _make_video(tmp_path / "source.avi", 400)
    out = tmp_path / "session" / "camera.avi"
    out.parent.mkdir()
    drivers = []

    def make():
        drivers.append(CameraDriver(CameraSettings(source=str(src), source_id=uid, video_path=out,
                                                   name=f"cam-{uid}")))
        return drivers[-1]

    result = check_driver_contract(make)
    spec = result.read_back[0]
    assert spec.can_drop_samples and spec.setup["camera"]["video_file"] == str(out)
    drv = drivers[0]
    written = _frames(out)
    assert len(written) == drv.frame_index
    # Frame k of the written video is the k-th frame published; the source was read in order.
    assert written == list(range(len(written)))
    idx = result.samples[0][:, 0]
    assert np.all(np.diff(idx) == 1)


def test_end_of_stream_reconnects_into_a_new_segment_and_late_frames_are_dropped(tmp_path, uid):
    src = _make_video(tmp_path / "short.avi", 45)  # 1.5 s: the "camera" goes away twice
    out = tmp_path / "cam.avi"
    drv = CameraDriver(CameraSettings(source=str(src), source_id=uid, video_path=out))
    runner = DriverRunner(drv, reconnect_delay_s=0.2)
    got = []
    push = runner._push
    runner._push = lambda spec, chunk: (got.append(chunk), push(spec, chunk))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while drv.health.reconnects < 2 or len(drv.segments) < 3:
        assert time.monotonic() < deadline, "camera did not reconnect twice"
        time.sleep(0.05)
    runner.stop()
    thread.join(timeout=15)
    assert not thread.is_alive()
    idx = np.concatenate([c.data[:, 0] for c in got])
    ts = np.concatenate([c.timestamps for c in got])
    assert np.array_equal(idx, np.arange(len(idx)))
    assert np.all(np.diff(ts) > 0)
    with (tmp_path / "cam.segments.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["segment_file"] for r in rows[:3]] == ["cam.avi", "cam.part2.avi", "cam.part3.avi"]
    assert [int(r["first_frame_index"]) for r in rows] == [first for _, first in drv.segments]
    firsts = [float(r["first_frame_lsl_time_s"]) for r in rows]
    assert firsts == [float(ts[idx == first][0]) for _, first in drv.segments]
    for (path, first), nxt in zip(drv.segments, [*drv.segments[1:], (None, drv.frame_index)], strict=True):
        assert len(_frames(path)) == nxt[1] - first
    # A reader that falls behind: frames more than one period late are dropped and counted.
    drv2 = CameraDriver(CameraSettings(source=str(src), source_id=uid, video_path=tmp_path / "late.avi"))
    drv2.open()
    try:
        first = drv2.read(0.05)
        time.sleep(0.5)
        later = drv2.read(0.05)
    finally:
        drv2.close()
    assert first and later
    dropped = drv2.health.extra["frames_dropped"]
    assert 10 <= dropped <= 20
    assert later[0].data[0, 0] == first[0].data[-1, 0] + 1  # indices stay those of the video
    assert len(_frames(tmp_path / "late.avi")) == drv2.frame_index
    # Another driver on the same folder (a restarted process) appends, never overwrites.
    before = _frames(out)
    drv3 = CameraDriver(CameraSettings(source=str(src), source_id=uid, video_path=out))
    drv3.open()
    try:
        assert drv3.read(0.05)
    finally:
        drv3.close()
    assert _frames(out) == before
    assert drv3.segments[0][0].name == f"cam.part{len(drv.segments) + 1}.avi"
