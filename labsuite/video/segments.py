"""Writing a camera's frames into video segments: one file per connection, never overwritten.

Used by both cameras (drivers/camera.py through OpenCV capture, drivers/sim/camera.py filming the
virtual runner). Each written frame gets three numbers, published on the camera stream and stored
in the session's frame table: its frame index (runs on across the segments of one driver), its
segment (the file's part number, see :mod:`labsuite.video.naming`) and its position in that file.
The writer is OpenCV's, MJPG in AVI by default: every frame is a key frame, so reading frame N
back seeks exactly, and encoding costs about 0.4 ms per 320x240 frame (scripts/bench_video.py).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np

from labsuite.errors import DeviceError
from labsuite.video.naming import first_free_part, segment_path, segments_csv_path

log = logging.getLogger(__name__)


class SegmentWriter:
    """Append frames to the current segment; :meth:`end_segment` after a disconnect.

    The next :meth:`write` after :meth:`end_segment` (or the first one) opens a new segment at
    the first free part number, sized by its first frame. Frames of another size are refused
    (counted in ``refused``), so every published (segment, position) names a written frame.
    """

    def __init__(self, base: str | Path, rate_hz: float, fourcc: str = "MJPG") -> None:
        self.base = Path(base)
        self.rate_hz = float(rate_hz)
        self.fourcc = fourcc
        self.frame_index = 0
        self.refused = 0
        self.segments: list[tuple[Path, int]] = []  # (file, first frame index)
        self._writer: Any = None
        self._part = 0
        self._position = 0
        self._size = (0, 0)

    @property
    def part(self) -> int:
        """The part number of the current (or last) segment; 0 before the first frame."""
        return self._part

    def write(self, frames: list[np.ndarray], stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Write frames (BGR uint8) taken at LSL times ``stamps``.

        Returns (timestamps, rows) of the frames written: rows (n, 3) float64 of frame index,
        segment and position, ready to publish on the camera stream.
        """
        stamps = np.asarray(stamps, dtype=np.float64).reshape(-1)
        if not frames:
            return stamps[:0], np.empty((0, 3))
        if self._writer is None:
            self._open(frames[0], float(stamps[0]))
        height, width = self._size
        good = [i for i, f in enumerate(frames) if f.shape[:2] == (height, width)]
        self.refused += len(frames) - len(good)
        for i in good:
            self._writer.write(frames[i])
        n = len(good)
        rows = np.empty((n, 3))
        rows[:, 0] = self.frame_index + np.arange(n)
        rows[:, 1] = self._part
        rows[:, 2] = self._position + np.arange(n)
        self.frame_index += n
        self._position += n
        return stamps[good], rows

    def end_segment(self) -> None:
        """Finish the current file (safe twice); the next frame starts a new segment."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()

    close = end_segment

    def _open(self, frame: np.ndarray, first_lsl_s: float) -> None:
        import cv2

        part = first_free_part(self.base, self._part + 1)
        path = segment_path(self.base, part)
        height, width = frame.shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*self.fourcc), self.rate_hz,
                                 (width, height))
        if not writer.isOpened():
            raise DeviceError(f"camera: cannot write video {str(path)!r} with codec {self.fourcc!r} "
                              "(check the folder and the codec)")
        self._writer, self._part, self._position, self._size = writer, part, 0, (height, width)
        self.segments.append((path, self.frame_index))
        index_file = segments_csv_path(self.base)
        new_file = not index_file.exists()
        with index_file.open("a", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            if new_file:
                out.writerow(["segment_file", "first_frame_index", "first_frame_lsl_time_s"])
            out.writerow([path.name, self.frame_index, repr(first_lsl_s)])
        log.info("camera: writing %s from frame %d", path, self.frame_index)
