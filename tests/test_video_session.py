"""From a step of a live simulated session to its video frame: `labsuite video` end to end.

Real processes and LSL: the virtual runner, two belt plates and the filming camera (random drops
(2 %) and a simulated cable fault every 7 s, so the video has gaps and three segments), recorded by
`labsuite record` with the live processor. The frame `labsuite video --step N` writes must show
(in its band) the index of the camera frame nearest the step's strike, taken independently from
the recorded camera stream.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from labsuite.archive.reader import open_session
from labsuite.cli import main
from labsuite.drivers.base import DriverRunner
from labsuite.drivers.sim.camera import SimCameraSettings, SimFilmingCamera
from labsuite.drivers.sim.lab import SimLabSettings, run_device, run_participant
from labsuite.processes import Supervisor
from labsuite.video.band import read_band
from labsuite.video.lookup import session_steps
from labsuite.video.naming import session_video_path

RATE_HZ = 100.0


def run_filming_camera(stop, lab: SimLabSettings, camera: SimCameraSettings) -> None:
    """Supervisor role: the filming camera following the runner's gait plan over LSL."""
    from labsuite.drivers.sim.lab import _PlanFollower

    runner = DriverRunner(SimFilmingCamera(camera, _PlanFollower(lab)), reconnect_delay_s=0.5)
    threading.Thread(target=lambda: (stop.wait(), runner.stop()), daemon=True).start()
    runner.run()


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    uid = f"vid{time.monotonic_ns() % 10**9}"
    folder = tmp_path_factory.mktemp("video")
    path = folder / "P01_20260101T000000Z.h5"
    lab = SimLabSettings(lab_id=uid)
    cam = SimCameraSettings(source_id=lab.source_id("camera"), rate_hz=RATE_HZ,
                            video_path=session_video_path(path, "camera"), drop_fraction=0.02,
                            disconnect_every_s=7.0)
    sup = Supervisor()
    sup.add("participant", run_participant, {"settings": lab})
    for d in ("fp-left", "fp-right"):
        sup.add(d, run_device, {"settings": lab, "device": d})
    sup.add("camera", run_filming_camera, {"lab": lab, "camera": cam})
    sup.start()
    try:
        sids = [lab.source_id(d) for d in ("fp-left", "fp-right", "camera")]
        res = subprocess.run([sys.executable, "-m", "labsuite", "record", "--file", str(path),
                              "--participant", "P01", "--duration", "22", "--processor", "on",
                              "--mass-kg", "70", "--quiet", "--wait-s", "10", "--streams", *sids],
                             capture_output=True, text=True, timeout=200)
    finally:
        sup.stop()
    assert res.returncode == 0, res.stderr
    return path, cam


def _camera_frames(s, source_id):
    sd = s.streams[source_id]
    return sd.timestamps, sd.data[:, 0].astype(int), sd.data[:, 1].astype(int)


def _png_index(path):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None
    return read_band(img)


def test_video_step_frame_decodes_to_the_nearest_frame_after_drops_and_across_segments(session, tmp_path,
                                                                                        capsys):
    path, cam = session
    with open_session(path) as s:
        steps = session_steps(s)
        times, index, part = _camera_frames(s, cam.source_id)
        assert [seg.part for seg in s.video_segments] == sorted(set(part.tolist()))
    assert len(steps) >= 30
    assert len(set(part.tolist())) >= 3  # two simulated cable faults: three segments
    period = 1.0 / RATE_HZ
    gaps = np.flatnonzero(np.diff(times) > 1.5 * period)  # frame i+1 follows a gap
    boundaries = np.flatnonzero(np.diff(part) != 0)
    deviations: list[int] = []
    kinds = {"plain": 0, "after a drop": 0, "across a boundary": 0, "in a reconnect gap": 0}
    for n, st in enumerate(steps, start=1):
        strike = float(st["strike_s"])
        k = int(np.argmin(np.abs(times - strike)))
        out = tmp_path / f"step{n}.png"
        code = main(["video", str(path), "--step", str(n), "--out", str(out)])
        printed = capsys.readouterr()
        if abs(times[k] - strike) > 3 * period:  # the strike fell where the camera was reconnecting
            assert code == 1 and "no video frame" in printed.err, printed
            kinds["in a reconnect gap"] += 1
            continue
        assert code == 0, printed.err
        got = _png_index(out)
        assert got is not None and abs(got - index[k]) <= 1, (n, got, index[k])
        deviations.append(got - index[k])
        after_gap = gaps[(times[gaps + 1] <= strike + period) & (times[gaps + 1] > strike - 0.2)]
        near_boundary = boundaries[np.abs(times[boundaries + 1] - strike) < 1.0]
        if len(near_boundary):
            kinds["across a boundary"] += 1
        elif len(after_gap):
            kinds["after a drop"] += 1
        else:
            kinds["plain"] += 1
    assert kinds["plain"] >= 20 and kinds["after a drop"] >= 1 and kinds["across a boundary"] >= 2, kinds
    print(f"steps by kind: {kinds}; band - nearest frame index: {sorted({int(d) for d in deviations})}")


def test_clip_across_a_segment_boundary_holds_the_frames_of_both_files_in_order(session, tmp_path, capsys):
    import av

    path, cam = session
    with open_session(path) as s:
        steps = session_steps(s)
        times, index, part = _camera_frames(s, cam.source_id)
    # The first reconnect inside the recording (the camera may have reconnected before it began).
    first_of_next = times[np.flatnonzero(np.diff(part) != 0)[0] + 1]
    n = int(np.argmax(steps["strike_s"] > first_of_next + 0.05)) + 1
    strike = float(steps["strike_s"][n - 1])
    assert strike - first_of_next < 1.0
    out = tmp_path / "clip.mp4"
    assert main(["video", str(path), "--step", str(n), "--before-s", "2.0", "--after-s", "0.2",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        decoded = [(read_band(f.to_ndarray(format="bgr24")), float(f.pts * stream.time_base))
                   for f in c.decode(video=0)]
    want = (times >= strike - 2.0) & (times <= strike + 0.2)
    assert [d[0] for d in decoded] == index[want].tolist()
    assert len(set(part[want].tolist())) == 2  # the clip spans the reconnect
    # Frame times in the clip are the real ones (the reconnect gap stays a gap).
    assert np.allclose([d[1] for d in decoded], times[want] - times[want][0], atol=0.0011)


def test_video_cli_errors_are_one_clear_line(session, tmp_path):
    path, _cam = session

    def run(*args):
        r = subprocess.run([sys.executable, "-m", "labsuite", "video", *map(str, args)],
                           capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr

    with open_session(path) as s:
        steps = session_steps(s)
        times, _, _ = _camera_frames(s, _cam.source_id)
    # a step whose strike the camera filmed (not one in a reconnect gap)
    n = next(i + 1 for i, t in enumerate(steps["strike_s"]) if np.min(np.abs(times - t)) < 0.006)
    code, out, err = run(path, "--step", n, "--out", tmp_path / "ok.png")
    assert code == 0 and "wrote" in out and "from the strike" in out, err
    code, _, err = run(path, "--step", n, "--out", tmp_path / "ok.png")
    assert code == 1 and "exists; give --overwrite" in err
    for args, msg in (((path, "--step", "0", "--out", tmp_path / "a.png"), "has steps 1.."),
                      ((path, "--step", "100000", "--out", tmp_path / "a.png"), "has steps 1.."),
                      ((path, "--event", "nope", "--out", tmp_path / "a.png"), "no such event"),
                      ((path, "--time", "-50", "--out", tmp_path / "a.png"), "no video frame"),
                      ((path, "--step", "10", "--out", tmp_path / "a.gif"), "expected a file ending"),
                      ((path, "--step", "10", "--before-s", "1", "--out", tmp_path / "a.png"), "FILE.mp4"),
                      ((path, "--step", "10", "--out", "/proc/x.png"), "not writable"),
                      ((path, "--step", "10", "--out", tmp_path / "no" / "a.png"), "does not exist"),
                      ((tmp_path / "none.h5", "--step", "10", "--out", tmp_path / "a.png"),
                       "does not exist")):
        code, _, err = run(*args)
        assert code == 1 and msg in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
    video = session_video_path(path, "camera")
    moved = video.with_suffix(".moved")
    video.rename(moved)
    try:
        code, _, err = run(path, "--step", n, "--out", tmp_path / "b.png")
        assert code == 1 and "is missing" in err and video.name in err
        res = subprocess.run([sys.executable, "-m", "labsuite", "inspect", str(path)], capture_output=True,
                             text=True, timeout=60)
        assert f"MISSING video file: {video.name}" in res.stdout
    finally:
        moved.rename(video)


def _expected_picks(valr):
    """Slow twin of report.sheets.pick_steps: candidate orders by plain sorting."""
    import statistics

    ok = [i for i, v in enumerate(valr) if math.isfinite(v)]
    if not ok:
        return []
    med = statistics.median(valr[i] for i in ok)
    median_order = sorted(ok, key=lambda i: (abs(valr[i] - med), i))
    if len(ok) == 1:
        return [("median VALR", median_order)]
    return [("median VALR", median_order), ("highest VALR", sorted(ok, key=lambda i: (-valr[i], i)))]


@pytest.mark.parametrize("valr", [[3.0], [1.0, 2.0], [5.0, math.nan, 1.0, 3.0, 3.0, 9.0], [math.nan] * 3,
                                  [2.0, 2.0, 2.0, 2.0], list(np.random.default_rng(4).normal(60, 9, 41))])
def test_pick_steps_equals_its_slow_twin(valr):
    from labsuite.report.sheets import pick_steps

    assert pick_steps(np.array(valr)) == _expected_picks(valr)


def test_report_contact_sheet_shows_each_stages_median_and_highest_valr_strike(session, tmp_path):
    """Per stage the filmed median-VALR and highest-VALR strikes, their frames and their clips."""
    import av

    from labsuite.report.sheets import contact_sheet
    from labsuite.stages import StageRecord

    path, cam = session
    with open_session(path) as s:
        steps = session_steps(s)
        times, index, _ = _camera_frames(s, cam.source_id)
    strike = steps["strike_s"]
    edges = np.linspace(strike[0], strike[-1] + 1e-3, 4)
    stages = [StageRecord(i, f"part{i + 1}", "baseline", edges[i], edges[i + 1]) for i in range(3)]
    sheet = contact_sheet(path, stages, clip_dir=tmp_path, link_base=tmp_path)
    assert sheet is not None and sheet.camera == cam.source_id

    def nearest(t):
        k = int(np.argmin(np.abs(times - t)))
        return k if abs(times[k] - t) <= 3.0 / RATE_HZ else None

    want = []
    for st in stages:
        rows = [i for i in range(len(steps)) if st.start_s <= strike[i] < st.end_s
                and not steps["invalid"][i] > 0 and not steps["crossover"][i] > 0]
        shown: set[int] = set()
        for pick, order in _expected_picks([float(steps["valr_bw_per_s"][i]) for i in rows]):
            k = next(k for k in order if k not in shown and nearest(strike[rows[k]]) is not None)
            shown.add(k)
            want.append((st.name, pick, rows[k] + 1))
    assert [(f.stage, f.pick, f.step_number) for f in sheet.frames] == want
    assert sheet.problems == ()
    for f in sheet.frames:
        k = nearest(strike[f.step_number - 1])
        img = cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR)
        got = read_band(img)
        assert got is not None and abs(got - index[k]) <= 1, (f.step_number, got, index[k])
        assert f.valr_bw_per_s == float(steps["valr_bw_per_s"][f.step_number - 1])
        with av.open(str(tmp_path / f.clip)) as c:
            clip_frames = [read_band(fr.to_ndarray(format="bgr24")) for fr in c.decode(video=0)]
        in_window = (times >= strike[f.step_number - 1] - 0.5) & (times <= strike[f.step_number - 1] + 0.5)
        assert clip_frames == index[in_window].tolist()


def test_report_page_holds_the_contact_sheet_and_links_its_clips(session, tmp_path, capsys):
    import base64
    import re

    path, _cam = session
    out = tmp_path / "r.html"
    assert main(["report", str(path), "--out", str(out)]) == 0, capsys.readouterr().err
    page = out.read_text()
    assert "Video: strikes per stage" in page
    links = re.findall(r"<a href='([^']+)'><img alt='[^']*' src='data:image/jpeg;base64,([^']+)'>", page)
    assert len(links) == 2  # a recording without stages: one group, median and highest VALR
    for clip, b64 in links:
        assert (tmp_path / clip).is_file() and clip.startswith("r_clips/")
        assert read_band(cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR))
    assert main(["report", str(path), "--out", str(tmp_path / "s.html"), "--no-clips"]) == 0
    page = (tmp_path / "s.html").read_text()
    assert page.count("data:image/jpeg") == 2 and "<a href=" not in page
    assert not (tmp_path / "s_clips").exists()
    assert main(["report", str(path), "--out", str(tmp_path / "n.html"), "--no-video"]) == 0
    assert "Video: strikes" not in (tmp_path / "n.html").read_text()
