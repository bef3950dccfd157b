"""From a step, a time or an event of a session to the video frames of it, read from the files.

Reads the session file's frame table (labsuite.archive.reader: ``video_segments``,
``video_frames``) and the video segments beside it. Used by ``labsuite video``, the report's
contact sheets and the console's review mode. Step N counts the session's steps from 1 in strike
order (full records, corrections applied: labsuite.steps.apply_records); times are seconds after
the session start (its ``session_start`` marker, else the start of recording).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from labsuite import markers as mk
from labsuite.archive.reader import Session, VideoSegment
from labsuite.errors import ArchiveError, ConfigError
from labsuite.steps import apply_records

# A frame further than this many frame periods from the time asked for is not "its" frame: the
# time lies in a gap (dropped frames, a reconnect) or outside the video.
MAX_DISTANCE_PERIODS = 3.0


class VideoGapError(ArchiveError):
    """No frame of the camera near the time asked for: it lies in a gap or outside the video."""


@dataclass(frozen=True)
class FrameRef:
    """One frame of the session's video: where it is and when it was taken (corrected LSL s)."""

    row: int  # row of the frame table
    frame_index: int
    time_s: float
    segment: VideoSegment
    position: int


def session_t0(session: Session) -> float:
    """The session's time origin (LSL s): its ``session_start`` marker, else the recording start."""
    for t_s, m in mk.decode_recorded(session.markers):
        if isinstance(m, mk.SessionStart):
            return t_s
    t0 = session.attrs.get("start_lsl_s", math.nan)
    return float(t0) if isinstance(t0, (int, float)) and math.isfinite(t0) else 0.0


def session_steps(session: Session) -> np.ndarray:
    """The steps as ``--step N`` counts them: full records (corrections applied), in strike order."""
    steps = apply_records(session.steps)
    steps = steps[np.isfinite(steps["strike_s"])]
    return steps[np.argsort(steps["strike_s"], kind="stable")]


def step_by_number(session: Session, number: int) -> np.ndarray:
    """Step ``number`` (1 = the first step); ConfigError saying how many there are."""
    steps = session_steps(session)
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= len(steps):
        raise ConfigError(f"--step {number}: {session.path} has steps 1..{len(steps)}" if len(steps)
                          else f"--step {number}: {session.path} holds no steps")
    return steps[number - 1]


def event_times(session: Session) -> dict[str, list[float]]:
    """Times (LSL s) of every named event: session markers by their ``event``, recording events by kind."""
    out: dict[str, list[float]] = {}
    for t_s, m in mk.decode_recorded(session.markers):
        if m.event:
            out.setdefault(m.event, []).append(t_s)
    for ev in session.events:
        kind = ev.get("kind")
        if isinstance(kind, str) and kind not in out:
            out.setdefault(f"recording:{kind}", []).append(float(ev["time_s"]))
    return out


def event_time(session: Session, name: str, occurrence: int = 1) -> float:
    """LSL time of the ``occurrence``-th event called ``name``; ConfigError listing the names there are."""
    times = event_times(session)
    if name not in times:
        listing = ", ".join(f"{k} ({len(v)})" for k, v in sorted(times.items())) or "none"
        raise ConfigError(f"--event {name!r}: {session.path} has no such event; it has: {listing}")
    got = sorted(times[name])
    if not 1 <= occurrence <= len(got):
        raise ConfigError(f"--event {name!r} --occurrence {occurrence}: the session has {len(got)} "
                          f"event(s) called {name!r}")
    return got[occurrence - 1]


class SessionVideo:
    """The frames of one camera of a session: find them by time, read them from the files.

    ``camera`` picks a camera by source_id or stream name when the session filmed with several.
    """

    def __init__(self, session: Session, camera: str | None = None) -> None:
        self.session = session
        segments = session.video_segments
        if not segments:
            why = "it was recorded before session format 3" if int(session.attrs.get(
                "format_version", 0)) < 3 else "no camera filmed it"
            raise ArchiveError(f"{session.path} has no video ({why}); `labsuite inspect` lists what "
                               "it holds")
        cameras = list(dict.fromkeys(s.camera for s in segments))
        names = {s.camera: str(s.record.get("camera_name", "")) for s in segments}
        if camera is None:
            if len(cameras) > 1:
                raise ConfigError(f"{session.path} holds video from {len(cameras)} cameras; choose one "
                                  f"with --camera: {cameras}")
            self.camera = cameras[0]
        else:
            match = [c for c in cameras if camera in (c, names[c])]
            if not match:
                raise ConfigError(f"--camera {camera!r}: {session.path} has video from {cameras}")
            self.camera = match[0]
        self.segments = [s for s in segments if s.camera == self.camera]
        rows = set(s.row for s in self.segments)
        frames = session.video_frames
        mine = np.flatnonzero(np.isin(frames["segment"], list(rows)))
        order = np.argsort(frames["time_s"][mine], kind="stable")
        self._rows = mine[order]
        self._times = frames["time_s"][self._rows]
        self._frames = frames
        self._by_row = {s.row: s for s in segments}
        rate = float(self.segments[0].record.get("rate_hz", 0.0) or 0.0)
        if not (math.isfinite(rate) and rate > 0) and len(self._times) > 1:
            rate = 1.0 / float(np.median(np.diff(self._times)))
        self.rate_hz = rate
        self._captures: dict[int, Any] = {}

    @property
    def n_frames(self) -> int:
        """Frames of this camera in the frame table."""
        return len(self._rows)

    @property
    def times_s(self) -> np.ndarray:
        """Times of this camera's frames (corrected LSL s), ascending."""
        return self._times

    def _ref(self, k: int) -> FrameRef:
        row = int(self._rows[k])
        f = self._frames[row]
        return FrameRef(row, int(f["frame_index"]), float(f["time_s"]), self._by_row[int(f["segment"])],
                        int(f["position"]))

    def nearest(self, t_s: float, *, what: str = "the time asked for") -> FrameRef:
        """The frame taken nearest ``t_s``; ArchiveError when no frame is within a few periods."""
        if self.n_frames == 0:
            raise ArchiveError(f"{self.session.path}: camera {self.camera} has no frames in the frame table")
        k = int(np.searchsorted(self._times, t_s))
        cands = [i for i in (k - 1, k) if 0 <= i < self.n_frames]
        best = min(cands, key=lambda i: abs(float(self._times[i]) - t_s))
        dist = abs(float(self._times[best]) - t_s)
        limit = MAX_DISTANCE_PERIODS / self.rate_hz if self.rate_hz > 0 else 0.1
        if dist > limit:
            t0 = session_t0(self.session)
            raise VideoGapError(
                f"no video frame of camera {self.camera} within {limit * 1000:.0f} ms of {what} "
                f"({t_s - t0:.3f} s into the session; nearest frame {dist * 1000:.0f} ms away): the video "
                f"covers {self._times[0] - t0:.3f}..{self._times[-1] - t0:.3f} s with gaps where frames "
                "dropped or the camera reconnected")
        return self._ref(best)

    def between(self, t0_s: float, t1_s: float) -> list[FrameRef]:
        """Every frame taken in [t0_s, t1_s], in time order."""
        a = int(np.searchsorted(self._times, t0_s, "left"))
        b = int(np.searchsorted(self._times, t1_s, "right"))
        return [self._ref(k) for k in range(a, b)]

    def read(self, ref: FrameRef) -> np.ndarray:
        """The picture of one frame (BGR uint8), read from its segment file."""
        import cv2

        seg = ref.segment
        if seg.path is None:
            raise ArchiveError(f"{self.session.path}: video segment {seg.part} of {seg.camera} has an "
                               f"unusable file name {seg.file!r}")
        if not seg.exists:
            raise ArchiveError(f"video file {seg.path} is missing (segment {seg.part} of camera "
                               f"{seg.camera}, named in {self.session.path}); copy it beside the session "
                               "file")
        cap = self._captures.get(seg.row)
        if cap is None:
            cap = cv2.VideoCapture(str(seg.path))
            if not cap.isOpened():
                raise ArchiveError(f"video file {seg.path}: OpenCV cannot open it (damaged, or a codec "
                                   "this OpenCV lacks)")
            self._captures[seg.row] = cap
        # MJPG AVI: every frame is a key frame and the AVI index gives exact positions.
        if int(cap.get(cv2.CAP_PROP_POS_FRAMES)) != ref.position:
            cap.set(cv2.CAP_PROP_POS_FRAMES, ref.position)
        ok, frame = cap.read()
        if not ok or frame is None:
            raise ArchiveError(f"video file {seg.path}: frame {ref.position} cannot be read (the file "
                               "holds fewer frames than the session file says: cut short or damaged)")
        return np.asarray(frame)

    def close(self) -> None:
        """Release the open video files."""
        for cap in self._captures.values():
            cap.release()
        self._captures.clear()

    def __enter__(self) -> SessionVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

