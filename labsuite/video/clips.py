"""Stills and clips of a session's video with the step's numbers drawn under the picture.

The last step of ``labsuite video`` (and of the report's contact sheets): frames found by
labsuite.video.lookup get a caption panel below them (the picture itself, and the simulated
camera's frame-index band along its top edge, stay untouched), then go to a PNG/JPEG through
OpenCV or to an H.264 MP4 through PyAV. Why PyAV for clips: OpenCV's wheels carry no H.264
encoder (only MPEG-4 Part 2, which browsers do not play), while PyAV's carry libx264, so a clip
linked from a report plays in the browser; PyAV also takes each frame's own time stamp, so a clip
with dropped frames keeps real time.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from labsuite.errors import ConfigError
from labsuite.steps import FOOT_NAMES, METHOD_NAMES
from labsuite.video.lookup import FrameRef, SessionVideo

STILL_SUFFIXES = (".png", ".jpg", ".jpeg")
CLIP_SUFFIXES = (".mp4",)
_PANEL_BG = (32, 32, 32)
_TEXT = (240, 240, 240)
_STRIKE = (0, 0, 255)


def _fmt(v: float, digits: int, unit: str) -> str:
    return "-" if not math.isfinite(v) else f"{v:.{digits}f} {unit}".rstrip()


def step_caption(step: np.ndarray | None, number: int | None, t_from_start_s: float) -> list[str]:
    """Caption lines for a step (or just a time): foot, strike time, loading rates, peak, contact."""
    if step is None:
        return [f"{t_from_start_s:.3f} s into the session"]
    foot_code = step["foot"]
    foot = FOOT_NAMES[int(foot_code)] if math.isfinite(foot_code) and int(foot_code) in (0, 1) else "?"
    method = step["loading_rate_method"]
    how = METHOD_NAMES[int(method)] if math.isfinite(method) and int(method) in (0, 1) else ""
    return [
        f"step {number} ({foot})  strike {t_from_start_s:.3f} s",
        f"VALR {_fmt(float(step['valr_bw_per_s']), 1, 'BW/s')}  VILR "
        f"{_fmt(float(step['vilr_bw_per_s']), 1, 'BW/s')}" + (f"  ({how})" if how else ""),
        f"peak {_fmt(float(step['peak_vgrf_bw']), 2, 'BW')}  contact "
        f"{_fmt(float(step['contact_s']) * 1000, 0, 'ms')}  "
        f"cadence {_fmt(float(step['cadence_spm']), 0, 'spm')}",
    ]


def annotate(frame: np.ndarray, lines: Sequence[str], *, offset_s: float | None = None,
             nearest: bool = False, target: str = "strike") -> np.ndarray:
    """The frame with a caption panel below it (a new image; even width and height for H.264).

    ``offset_s``: this frame's time minus the target's (None: not said); ``nearest`` marks the
    frame nearest the target (a red border round its panel).
    """
    import cv2

    h, w = frame.shape[:2]
    scale = max(0.35, w / 800.0)
    line_px = round(44 * scale)
    text = list(lines)
    if offset_s is not None:
        when = f"{offset_s * 1000:+.0f} ms from the {target}"
        text.append(f"nearest frame to the {target}: {when}" if nearest else when)
    panel_h = line_px * len(text) + line_px // 2
    out_h, out_w = h + panel_h + (h + panel_h) % 2, w + w % 2
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    out[:, :] = _PANEL_BG
    out[:h, :w] = frame if frame.ndim == 3 else frame[:, :, None]
    if nearest:
        cv2.rectangle(out, (0, h), (out_w - 1, out_h - 1), _STRIKE, 2)
    for i, line in enumerate(text):
        cv2.putText(out, line, (6, h + line_px * (i + 1) - line_px // 4), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, _TEXT, 1, cv2.LINE_AA)
    return out


def check_output(path: str | os.PathLike[str], *, overwrite: bool, suffixes: Sequence[str]) -> Path:
    """Validate an output path before any work: suffix, folder, writable, no silent overwrite."""
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ConfigError(f"--out {p}: expected a file ending in {' or '.join(suffixes)}")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"--out {p}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {p}: folder {folder} is not writable by this user")
    try:  # a real probe: /proc and read-only mounts pass os.access for root
        fd, probe = tempfile.mkstemp(prefix=".labsuite-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"--out {p}: folder {folder} is not writable ({exc.strerror or exc})") from None
    if p.is_dir():
        raise ConfigError(f"--out {p}: is a folder; expected a file name")
    if p.exists() and not overwrite:
        raise ConfigError(f"--out {p}: the file exists; give --overwrite to replace it")
    return p


def _replace(tmp: Path, out: Path) -> None:
    os.replace(tmp, out)


def write_still(image: np.ndarray, out: Path) -> None:
    """Write a PNG or JPEG atomically (a failed write leaves no partial file)."""
    import cv2

    fd, name = tempfile.mkstemp(prefix=".labsuite-", suffix=out.suffix, dir=out.parent or ".")
    os.close(fd)
    tmp = Path(name)
    try:
        if not cv2.imwrite(str(tmp), image):
            raise ConfigError(f"--out {out}: the picture could not be written")
        _replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def write_clip(frames: Iterable[tuple[np.ndarray, float]], out: Path, rate_hz: float) -> int:
    """Write (image, time s) pairs as an H.264 MP4; each frame keeps its own time (drops stay gaps).

    Frames are encoded as they come (a long clip is never held in memory); returns the count.
    """
    import av

    fd, name = tempfile.mkstemp(prefix=".labsuite-", suffix=out.suffix, dir=out.parent or ".")
    os.close(fd)
    tmp = Path(name)
    n = 0
    try:
        with av.open(str(tmp), "w") as container:
            stream: Any = None
            t_first, last_pts = 0.0, -1
            for img, t in frames:
                if stream is None:
                    h, w = img.shape[:2]
                    stream = container.add_stream("libx264", rate=max(1, round(rate_hz)))
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    # Millisecond time stamps: each frame keeps its own time (variable frame rate).
                    stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
                    stream.options = {"crf": "18", "preset": "veryfast"}
                    t_first = float(t)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
                pts = max(last_pts + 1, round((float(t) - t_first) * 1000))
                frame.pts, frame.time_base, last_pts = pts, Fraction(1, 1000), pts
                for packet in stream.encode(frame):
                    container.mux(packet)
                n += 1
            if stream is None:
                raise ConfigError(f"--out {out}: no frames to write")
            for packet in stream.encode():
                container.mux(packet)
        _replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def still_at(video: SessionVideo, target_s: float, lines: Sequence[str], *,
             what: str = "strike") -> tuple[np.ndarray, FrameRef]:
    """The captioned frame nearest ``target_s`` (corrected LSL s) and which frame it is."""
    ref = video.nearest(target_s, what=f"the {what}")
    return annotate(video.read(ref), lines, offset_s=ref.time_s - target_s, nearest=True, target=what), ref


def clip_around(video: SessionVideo, target_s: float, lines: Sequence[str], out: Path, *,
                before_s: float, after_s: float, what: str = "strike") -> list[FrameRef]:
    """Write the captioned frames from ``before_s`` before to ``after_s`` after ``target_s`` as an MP4.

    The frame nearest the target is marked; returns the frames written (in time order).
    """
    ref = video.nearest(target_s, what=f"the {what}")
    refs = video.between(target_s - before_s, target_s + after_s)
    frames = ((annotate(video.read(r), lines, offset_s=r.time_s - target_s, nearest=r.row == ref.row,
                        target=what), r.time_s) for r in refs)
    write_clip(frames, out, video.rate_hz)
    return refs
