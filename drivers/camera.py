"""Camera through OpenCV: frames written to a video file next to the session, frame times on LSL.

Each frame captured is written to the session's video (named after the session file, beside it:
labsuite.video.naming) and published as one sample of the camera stream (``camera_spec``): its
frame index, segment and position in that segment's file, stamped with the LSL time of the
capture, so video and force data line up offline. Frames the camera delivered too late to keep
are dropped, counted and never published (the stream declares ``can_drop_samples``).

A reconnect starts a new video segment (``<video>.partN.avi``; an existing file is never
overwritten, labsuite.video.segments); ``<video>.segments.csv`` gets one row per segment: file,
frame index and LSL time of its first frame. Frame indices run on across the segments of one driver.
A video file as source plays back at ``rate_hz`` (for tests and demonstrations).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labsuite import checks as check
from labsuite.drivers.base import Chunk, Driver
from labsuite.errors import ConfigError, DeviceError
from labsuite.streams.contracts import StreamSpec, camera_spec
from labsuite.video.segments import SegmentWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraSettings:
    """Capture source, where the video goes, nominal frame rate and codec.

    ``buffer_frames`` is how many frames a played-back file holds for a late reader, as a camera
    driver's buffer does (V4L2 keeps 4); older frames are dropped.
    """

    source: int | str
    source_id: str
    video_path: Path
    rate_hz: float = 30.0
    fourcc: str = "MJPG"
    name: str | None = None
    loop_file: bool = False
    buffer_frames: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.source, str) and not self.source:
            raise ConfigError("camera source: expected a device index, a device path, a URL or a video file")
        check.number("camera ", "rate_hz", self.rate_hz, low=0.0, low_open=True, high=1000.0,
                     unit="frames/s")
        check.integer("camera ", "buffer_frames", self.buffer_frames, low=1)
        if len(self.fourcc) != 4:
            raise ConfigError(f"camera fourcc: expected a four-character codec code, got {self.fourcc!r}")
        if not Path(self.video_path).parent.is_dir():
            raise ConfigError(f"camera video_path {str(self.video_path)!r}: its folder does not exist")

    @property
    def is_file(self) -> bool:
        """True when the source is a video file (played back at ``rate_hz``)."""
        return isinstance(self.source, str) and Path(self.source).is_file()


class CameraDriver(Driver):
    """An OpenCV capture: video file out, frame index + LSL time per frame on the stream."""

    def __init__(self, settings: CameraSettings) -> None:
        super().__init__()
        self.settings = settings
        self._video = SegmentWriter(settings.video_path, settings.rate_hz, settings.fourcc)
        self._cap: Any = None
        self._t0: float | None = None
        self._k = 0
        self._last_frame_s: float | None = None
        self.health.extra["frames_dropped"] = 0.0

    @property
    def frame_index(self) -> int:
        """Frames written so far (the index the next frame gets)."""
        return self._video.frame_index

    @property
    def segments(self) -> list[tuple[Path, int]]:
        """(file, first frame index) of every segment written."""
        return self._video.segments

    def stream_specs(self) -> list[StreamSpec]:
        """The frame-counter stream, naming the video file."""
        s = self.settings
        return [camera_spec(s.source_id, rate_hz=s.rate_hz, name=s.name, model="OpenCV capture",
                            video_file=str(s.video_path))]

    def open(self) -> None:
        """Open the capture; the video segment is created at the first frame (size known then)."""
        import cv2

        cap = cv2.VideoCapture(self.settings.source)
        if not cap.isOpened():
            cap.release()
            raise DeviceError(f"camera {self.settings.source!r}: cannot open (check the device index, "
                              "path or URL, and that no other program uses the camera)")
        if not self.settings.is_file:
            cap.set(cv2.CAP_PROP_FPS, self.settings.rate_hz)
        self._cap = cap
        self._t0 = None
        self._k = 0
        self._last_frame_s = None

    def close(self) -> None:
        """Release capture and video writer, finishing the segment (safe twice)."""
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
        self._video.end_segment()

    def read(self, timeout_s: float) -> list[Chunk]:
        """Capture the frames due within ``timeout_s``; write them; return their index and time."""
        import pylsl

        if self._cap is None:
            raise DeviceError(f"camera {self.settings.source!r}: not open")
        if self.settings.is_file:
            return self._read_file(timeout_s)
        if not self._cap.grab():
            raise DeviceError(f"camera {self.settings.source!r}: no frame (camera lost)")
        now = pylsl.local_clock()
        period = 1.0 / self.settings.rate_hz
        if self._last_frame_s is not None:
            late = round((now - self._last_frame_s) / period) - 1
            if late > 0:
                self.health.extra["frames_dropped"] += late
        self._last_frame_s = now
        ok, frame = self._cap.retrieve()
        if not ok or frame is None:
            self.health.frames_bad += 1
            return []
        return self._keep([frame], np.array([now]))

    def _read_file(self, timeout_s: float) -> list[Chunk]:
        """Play a video file back in real time: frames are due at t0 + k / rate_hz."""
        import pylsl

        period = 1.0 / self.settings.rate_hz
        now = pylsl.local_clock()
        if self._t0 is None:
            self._t0 = now
        due_at = self._t0 + self._k * period
        if due_at > now:
            time.sleep(min(timeout_s, due_at - now))
            now = pylsl.local_clock()
        due = int((now - self._t0) / period) + 1 - self._k
        if due <= 0:
            return []
        frames: list[np.ndarray] = []
        stamps: list[float] = []
        # Frames beyond the buffer are dropped, as a camera's buffer overruns when nobody reads.
        keep_from = max(0, due - self.settings.buffer_frames)
        for i in range(due):
            ok = self._cap.grab()
            if not ok:
                if self.settings.loop_file:
                    import cv2

                    self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok = self._cap.grab()
                if not ok:
                    self._k += i
                    if frames:
                        return self._keep(frames, np.asarray(stamps))
                    raise DeviceError(f"camera {self.settings.source!r}: the stream ended")
            if i < keep_from:
                self.health.extra["frames_dropped"] += 1
                continue
            ok, frame = self._cap.retrieve()
            if not ok or frame is None:
                self.health.frames_bad += 1
                continue
            frames.append(frame)
            stamps.append(self._t0 + (self._k + i) * period)
        self._k += due
        return self._keep(frames, np.asarray(stamps)) if frames else []

    def _keep(self, frames: list[np.ndarray], stamps: np.ndarray) -> list[Chunk]:
        refused = self._video.refused
        ts, rows = self._video.write(frames, stamps)
        # A frame of another size cannot go into this video: it is bad, not published.
        self.health.frames_bad += self._video.refused - refused
        if len(ts) == 0:
            return []
        self.health.frames_ok += len(ts)
        return [Chunk(0, ts, rows)]
