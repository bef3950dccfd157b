"""The simulated lab's camera: films the virtual runner from the side and writes a real video.

A device process of the simulated lab (drivers/sim/lab.py): on its own frame clock it draws a
stick figure whose feet are where the participant's gait plan (drivers/sim/gait.py) puts them,
stamps each frame with its frame index (labsuite.video.band), writes it to the session's video
segment (labsuite.video.segments, MJPG in AVI, as the OpenCV camera driver does) and publishes
frame index, segment and position on the camera stream. Frames drop as a real camera's do: a
small random share, and the oldest when the reader falls more than ``buffer_frames`` behind; a
simulated cable fault (``disconnect_every_s``) makes the driver reconnect into a new segment.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from labsuite.drivers.base import Chunk, Driver
from labsuite.drivers.sim import gait
from labsuite.errors import ConfigError, DeviceError
from labsuite.streams import contracts as c
from labsuite.video.band import band_height_px, draw_band
from labsuite.video.segments import SegmentWriter

_COL = {name: i for i, name in enumerate(gait.PLANNED_STEP_FIELDS)}

# The picture: lab x (forward) to the right, z up; belt centre (x = 0) in the middle.
WIDTH_PX = 320
HEIGHT_PX = 240
PX_PER_M = 120.0
BELT_ROW_PX = 222  # image row of the belt surface (z = 0)
HEEL_MARK_PX = 8  # side of the square heel markers (colour-coded feet)
# BGR colours. The markers are saturated so a test can find each heel after compression.
LEFT_HEEL_BGR = (255, 0, 0)
RIGHT_HEEL_BGR = (0, 0, 255)
_BACKGROUND = 215
_LEFT_LEG = (150, 110, 90)  # far side, muted
_RIGHT_LEG = (40, 40, 40)  # near side
_BELT = (90, 90, 90)

# Segment lengths of the stick figure, m (an adult of ~1.75 m; Winter 2009, table 4.1).
THIGH_M = 0.44
SHANK_M = 0.44
ANKLE_ABOVE_HEEL_M = 0.07
ANKLE_FROM_HEEL_FRAC = 0.25  # along the foot
TRUNK_M = 0.52
HEAD_R_M = 0.1
ARM_M = 0.55
SWING_LIFT_M = 0.14  # highest heel lift in running swing (walking: half)
RECONNECT_S = 0.5  # a camera back after a cable fault delivers frames again after this (USB re-enumeration)


def to_px(x_m: float, z_m: float) -> tuple[int, int]:
    """Image (column, row) of a lab point (x forward, z up), m."""
    return round(WIDTH_PX / 2 + x_m * PX_PER_M), round(BELT_ROW_PX - z_m * PX_PER_M)


def to_x_m(column_px: float) -> float:
    """Lab x (m) of an image column (inverse of :func:`to_px`)."""
    return (column_px - WIDTH_PX / 2) / PX_PER_M


@dataclass(frozen=True)
class FootPose:
    """Where one foot is at a time: heel (x, z) m in the lab frame, pitch rad, and if it is on the belt."""

    heel_x_m: float
    heel_z_m: float
    pitch_rad: float
    on_belt: bool
    foot_length_m: float


def foot_pose(rows: np.ndarray, t_s: float, foot: str, *, walk: bool = False) -> FootPose | None:
    """The pose of ``foot`` at ``t_s`` from planned records (a gait.steps_to_array array).

    In stance the heel rides backwards with the belt from where the plan lands it (as the COP of
    render_plate does); in swing it arcs from its toe-off position to the next record's landing
    point (or, not planned yet, to where this contact landed). None before the foot's first record.
    """
    code = gait.FEET.index(foot)
    own = rows[rows[:, _COL["foot"]] == code]
    if len(own) == 0:
        return None
    own = own[np.argsort(own[:, _COL["strike_s"]], kind="stable")]
    i = int(np.searchsorted(own[:, _COL["strike_s"]], t_s, "right")) - 1
    if i < 0:
        return None
    r = own[i]
    length = float(r[_COL["foot_length_m"]])
    strike, toe_off = float(r[_COL["strike_s"]]), float(r[_COL["toe_off_s"]])
    x0 = float(r[_COL["foot_x_m"]])
    speed = float(r[_COL["speed_m_s"]]) if r[_COL["kind"]] == 0 else 0.0
    if t_s < toe_off or r[_COL["kind"]] == 1:
        return FootPose(x0 - speed * (t_s - strike), 0.0, 0.0, True, length)
    lift_x = x0 - speed * (toe_off - strike)
    nxt = own[i + 1] if i + 1 < len(own) else None
    land_s = float(r[_COL["next_strike_s"]])
    land_x = float(nxt[_COL["foot_x_m"]]) if nxt is not None else x0
    if not (math.isfinite(land_s) and land_s > toe_off) or t_s >= land_s:
        return FootPose(land_x, 0.0, 0.0, True, length)
    u = (t_s - toe_off) / (land_s - toe_off)
    ease = 0.5 - 0.5 * math.cos(math.pi * u)
    lift = (0.5 if walk else 1.0) * SWING_LIFT_M * math.sin(math.pi * u)
    # Toe down after push-off, heel first again before landing.
    pitch = -0.6 * math.sin(math.pi * min(1.0, 2.0 * u)) if u < 0.5 else 0.15 * math.sin(
        math.pi * (2.0 * u - 1.0))
    return FootPose(lift_x + (land_x - lift_x) * ease, lift, pitch, False, length)


def _knee(hip: np.ndarray, ankle: np.ndarray) -> np.ndarray:
    """Knee of a two-link leg from hip to ankle, bending forward (+x); a straight leg if out of reach."""
    d = ankle - hip
    dist = float(np.hypot(*d))
    reach = THIGH_M + SHANK_M
    if dist >= reach * 0.999 or dist < 1e-6:
        return hip + d * (THIGH_M / max(dist, 1e-6)) if dist >= 1e-6 else hip
    a = (THIGH_M**2 - SHANK_M**2 + dist**2) / (2.0 * dist)
    h = math.sqrt(max(THIGH_M**2 - a * a, 0.0))
    mid = hip + d * (a / dist)
    perp = np.array([-d[1], d[0]]) / dist
    if perp[0] < 0:
        perp = -perp
    return mid + perp * h


def render_frame(rows: np.ndarray, t_s: float, frame_index: int | None, *, walk: bool = False
                 ) -> np.ndarray:
    """Draw the runner at ``t_s`` (HEIGHT_PX, WIDTH_PX, 3) BGR, with ``frame_index``'s band on top.

    Pure: the same records and time give the same picture. Heels carry colour-coded square
    markers (left blue, right red) centred on the heel's position.
    """
    import cv2

    img = np.full((HEIGHT_PX, WIDTH_PX, 3), _BACKGROUND, dtype=np.uint8)
    cv2.rectangle(img, (0, BELT_ROW_PX + 1), (WIDTH_PX - 1, HEIGHT_PX - 1), _BELT, -1)
    x_belt = 0.5 * 1.8  # the belt's ends (1.8 m long)
    cv2.line(img, to_px(-x_belt, 0.0), to_px(x_belt, 0.0), (30, 30, 30), 2)
    feet = {f: foot_pose(rows, t_s, f, walk=walk) for f in gait.FEET}
    ankles: dict[str, np.ndarray] = {}
    for f, pose in feet.items():
        if pose is None:
            continue
        heel = np.array([pose.heel_x_m, pose.heel_z_m])
        along = np.array([math.cos(pose.pitch_rad), math.sin(pose.pitch_rad)])
        ankles[f] = heel + along * (ANKLE_FROM_HEEL_FRAC * pose.foot_length_m) + np.array(
            [0.0, ANKLE_ABOVE_HEEL_M])
    if ankles:
        mean_x = float(np.mean([a[0] for a in ankles.values()]))
        hip = np.array([mean_x + 0.05, 0.92])
        for f in ("left", "right"):  # the far leg first, the near leg over it
            pose = feet[f]
            if pose is None:
                continue
            colour = _LEFT_LEG if f == "left" else _RIGHT_LEG
            ankle = ankles[f]
            knee = _knee(hip, ankle)
            heel = np.array([pose.heel_x_m, pose.heel_z_m])
            toe = heel + pose.foot_length_m * np.array([math.cos(pose.pitch_rad), math.sin(pose.pitch_rad)])
            for a, b in ((hip, knee), (knee, ankle), (ankle, heel), (heel, toe), (ankle, toe)):
                cv2.line(img, to_px(*a), to_px(*b), colour, 3, cv2.LINE_AA)
        shoulder = hip + np.array([0.06, TRUNK_M])
        cv2.line(img, to_px(*hip), to_px(*shoulder), _RIGHT_LEG, 4, cv2.LINE_AA)
        head = shoulder + np.array([0.03, 0.05 + HEAD_R_M])
        cv2.circle(img, to_px(*head), int(HEAD_R_M * PX_PER_M), _RIGHT_LEG, 2, cv2.LINE_AA)
        for f in ("left", "right"):
            # Arms swing against the leg of their side: forward when that foot is behind the hip.
            reach = ankles.get(f, hip)[0] - hip[0]
            phi = -1.2 * reach
            elbow = shoulder + 0.5 * ARM_M * np.array([math.sin(phi), -math.cos(phi)])
            hand = elbow + 0.5 * ARM_M * np.array([math.sin(phi + 1.2), -math.cos(phi + 1.2)])
            colour = _LEFT_LEG if f == "left" else _RIGHT_LEG
            cv2.line(img, to_px(*shoulder), to_px(*elbow), colour, 2, cv2.LINE_AA)
            cv2.line(img, to_px(*elbow), to_px(*hand), colour, 2, cv2.LINE_AA)
        half = HEEL_MARK_PX // 2
        for f, colour in (("left", LEFT_HEEL_BGR), ("right", RIGHT_HEEL_BGR)):
            pose = feet[f]
            if pose is None:
                continue
            cx, cy = to_px(pose.heel_x_m, pose.heel_z_m)
            cv2.rectangle(img, (cx - half, cy - half), (cx + half - 1, cy + half - 1), colour, -1)
    if frame_index is not None:
        draw_band(img, frame_index)
    else:
        img[:band_height_px(WIDTH_PX)] = _BACKGROUND
    return img


class PlanSource(Protocol):
    """Where the camera gets the participant's planned steps (the gait stream, or an offline plan)."""

    def start(self) -> None:
        """Begin receiving records."""

    def stop(self) -> None:
        """Stop receiving records."""

    def rows_for(self, t0: float, t1: float) -> np.ndarray:
        """Planned records (gait.steps_to_array rows) that shape [t0, t1]."""


@dataclass(frozen=True)
class SimCameraSettings:
    """The simulated camera: stream id, frame rate, where the video goes, and how it fails.

    ``video_path`` None publishes the frame counter only (segment 0, position -1: nothing filmed).
    ``drop_fraction``: share of frames lost at random (chosen by a hash of the frame number, so
    reproducible); ``buffer_frames``: frames kept for a late reader (older ones drop, as a V4L2
    buffer overruns); ``disconnect_every_s``: a simulated cable fault after this much filming, so
    the driver reconnects into a new segment (None: never).
    """

    source_id: str
    rate_hz: float = 100.0
    video_path: Path | None = None
    drop_fraction: float = 0.002
    buffer_frames: int = 4
    disconnect_every_s: float | None = None
    walk: bool = False
    name: str | None = None
    chunk_s: float = 0.01

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_hz) and 0 < self.rate_hz <= 500):
            raise ConfigError(f"simulated camera rate_hz: expected 0 < rate <= 500 frames/s, "
                              f"got {self.rate_hz!r}")
        if not 0.0 <= self.drop_fraction < 0.5:
            raise ConfigError(f"simulated camera drop_fraction: expected in [0, 0.5), "
                              f"got {self.drop_fraction!r}")
        if self.buffer_frames < 1:
            raise ConfigError(f"simulated camera buffer_frames: expected >= 1, got {self.buffer_frames!r}")
        if self.disconnect_every_s is not None and not self.disconnect_every_s > 0:
            raise ConfigError("simulated camera disconnect_every_s: expected > 0 s or None")
        if self.video_path is not None and not Path(self.video_path).parent.is_dir():
            raise ConfigError(f"simulated camera video_path {str(self.video_path)!r}: its folder "
                              "does not exist")


def dropped_at_random(k: np.ndarray, fraction: float) -> np.ndarray:
    """True for the frame numbers a camera loses at random (a hash of the number: reproducible)."""
    return ((k * 2654435761) % 1_000_003) / 1_000_003 < fraction


class SimFilmingCamera(Driver):
    """The simulated camera: renders, films and publishes frames on an exact grid of the LSL clock."""

    def __init__(self, settings: SimCameraSettings, plan: PlanSource | None,
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.settings = settings
        self._plan = plan
        self._clock = clock
        self._video = SegmentWriter(settings.video_path, settings.rate_hz) \
            if settings.video_path is not None else None
        self._counter = 0  # frames published without video
        self._t0 = 0.0
        self._k = 0
        self._opened_s = 0.0
        self._following = False
        self._faulted = False
        self.health.extra["frames_dropped"] = 0.0

    @property
    def segments(self) -> list[tuple[Path, int]]:
        """(file, first frame index) of every segment written."""
        return [] if self._video is None else self._video.segments

    def stream_specs(self) -> list[c.StreamSpec]:
        """The camera stream, naming the video's first segment."""
        s = self.settings
        video = "" if s.video_path is None else str(Path(s.video_path).resolve())
        return [c.camera_spec(s.source_id, rate_hz=s.rate_hz, name=s.name, video_file=video)]

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        import pylsl

        return float(pylsl.local_clock())

    def open(self) -> None:
        """Start the frame clock (and follow the gait plan); the segment opens at the first frame.

        After a cable fault the camera needs ``RECONNECT_S`` before it delivers frames again.
        """
        if self._plan is not None and not self._following:
            self._plan.start()
            self._following = True
        now = self._now()
        self._opened_s = now
        self._t0 = now + (RECONNECT_S if self._faulted else 0.0)
        self._faulted = False
        self._k = 0

    def close(self) -> None:
        """Finish the segment; a later open films into a new one (safe twice).

        The gait plan is followed on through a cable fault (the runner does not stop running).
        """
        if self._video is not None:
            self._video.end_segment()
        if self._plan is not None and self._following and not self._faulted:
            self._plan.stop()
            self._following = False

    def _due(self, timeout_s: float) -> np.ndarray:
        period = 1.0 / self.settings.rate_hz
        chunk = max(1, round(self.settings.chunk_s * self.settings.rate_hz))
        wait = self._t0 + (self._k + chunk) * period - self._now()
        if wait > 0 and self._clock is None:
            time.sleep(min(wait, timeout_s))
        due = int((self._now() - self._t0) * self.settings.rate_hz)
        k = np.arange(self._k, max(self._k, due), dtype=np.int64)
        self._k = max(self._k, due)
        return k

    def read(self, timeout_s: float) -> list[Chunk]:
        """Film the frames that fell due; raise DeviceError at a simulated cable fault."""
        s = self.settings
        if s.disconnect_every_s is not None and self._now() - self._opened_s >= s.disconnect_every_s:
            self._faulted = True
            raise DeviceError(f"simulated camera {s.source_id}: connection lost (simulated cable "
                              f"fault after {s.disconnect_every_s:g} s of filming)")
        k = self._due(timeout_s)
        if len(k) == 0:
            return []
        late = max(0, len(k) - s.buffer_frames)
        keep = ~dropped_at_random(k, s.drop_fraction)
        keep[:late] = False  # the reader fell behind: the camera's buffer kept the newest only
        self.health.extra["frames_dropped"] += float(len(k) - keep.sum())
        k = k[keep]
        if len(k) == 0:
            return []
        t = self._t0 + k / s.rate_hz
        if self._video is None:
            rows = np.column_stack([self._counter + np.arange(len(k)), np.zeros(len(k)),
                                    np.full(len(k), -1.0)])
            self._counter += len(k)
            self.health.frames_ok += len(k)
            return [Chunk(0, t, rows)]
        plan = self._plan.rows_for(float(t[0]) - 2.0, float(t[-1]) + 1.0) if self._plan is not None \
            else np.empty((0, len(gait.PLANNED_STEP_FIELDS)))
        first = self._video.frame_index
        frames = [render_frame(plan, float(ti), first + j, walk=s.walk) for j, ti in enumerate(t)]
        ts, rows = self._video.write(frames, t)
        self.health.frames_ok += len(ts)
        return [Chunk(0, ts, rows)]
