"""Contact sheets: per stage, the strike frames of its representative steps, each linked to its clip.

Reads a session's own video through :mod:`labsuite.video` (frame table, segments, captions) for
:mod:`labsuite.report.html`. Per stage it picks the step whose VALR is nearest the stage median
and the step with the highest VALR (the "worst"), the same steps ``labsuite video --step N``
numbers; a sheet is plain data (JPEG bytes, captions, clip paths), so the page stays a template.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labsuite.archive.reader import open_session
from labsuite.errors import ArchiveError, ConfigError
from labsuite.stages import StageRecord

# Seconds of video around a strike in a linked clip (the same as `labsuite video`'s default clip).
CLIP_BEFORE_S = 0.5
CLIP_AFTER_S = 0.5
JPEG_QUALITY = 85
# A stage of a long session can have thousands of steps: the sheet shows two per stage, and at
# most this many stages (the page must stay quick to open and print).
MAX_STAGES = 24

PICK_MEDIAN = "median VALR"
PICK_WORST = "highest VALR"


@dataclass(frozen=True)
class SheetFrame:
    """One picture of a contact sheet: which step, why it was picked, the JPEG, its clip."""

    stage: str
    pick: str  # PICK_MEDIAN or PICK_WORST
    step_number: int  # as `labsuite video --step N` counts (1 = the first strike)
    strike_from_start_s: float
    valr_bw_per_s: float
    frame_offset_ms: float  # the frame's time minus the strike's
    jpeg: bytes
    clip: str | None  # the clip's path relative to the report, None when no clip was written


@dataclass(frozen=True)
class ContactSheet:
    """The session's contact sheet: frames in stage order, and what could not be shown."""

    camera: str
    frames: tuple[SheetFrame, ...]
    problems: tuple[str, ...]  # one sentence each (a stage whose strikes fell in a video gap, ...)


def pick_steps(valr: np.ndarray) -> list[tuple[str, list[int]]]:
    """The picks of a stage: (name, indices into ``valr`` best first), NaN left out.

    Median: the steps in order of distance from the stage's median VALR; highest: in order of
    falling VALR (ties: the earlier step first). The first index is the pick; the others stand in
    when its strike was not filmed. One step: the median pick only. No VALR: no pick.
    """
    valr = np.asarray(valr, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(valr))
    if len(ok) == 0:
        return []
    med = float(np.median(valr[ok]))
    median_order = [int(i) for i in ok[np.lexsort((ok, np.abs(valr[ok] - med)))]]
    if len(ok) == 1:
        return [(PICK_MEDIAN, median_order)]
    highest_order = [int(i) for i in ok[np.lexsort((ok, -valr[ok]))]]
    return [(PICK_MEDIAN, median_order), (PICK_WORST, highest_order)]


def contact_sheet(session_path: str | os.PathLike[str], stages: Sequence[StageRecord], *,
                  clip_dir: Path | None = None, link_base: Path | None = None,
                  camera: str | None = None, max_tries: int = 10) -> ContactSheet | None:
    """The contact sheet of a session's video, or None when the session has no video.

    ``stages``: the stages as the report shows them (none: the whole recording is one group).
    ``clip_dir``: write each picture's clip there (``<session stem>_step<N>.mp4``, H.264); links
    are relative to ``link_base`` (the report's folder). A step whose strike lies in a video gap
    (dropped frames, a reconnect) is replaced by the next best step of its pick (up to
    ``max_tries``); a stage without a usable strike, or a video file that cannot be read, is named
    in ``problems`` (the report goes on without it).
    """
    from labsuite.video import lookup

    with open_session(session_path) as session:
        if not session.video_segments:
            return None
        cams = list(dict.fromkeys(s.camera for s in session.video_segments))
        problems: list[str] = []
        if camera is None and len(cams) > 1:
            problems.append(f"The session filmed with {len(cams)} cameras; the sheet shows {cams[0]}.")
            camera = cams[0]
        groups = sorted(stages, key=lambda s: (s.start_s, s.index))
        if not groups:
            groups = [StageRecord(0, "recording", "recording", -math.inf, math.inf)]
        if len(groups) > MAX_STAGES:
            problems.append(f"Only the first {MAX_STAGES} of {len(groups)} stages are shown.")
            groups = groups[:MAX_STAGES]
        sheet = _Sheet(lookup.SessionVideo(session, camera), lookup.session_steps(session),
                       lookup.session_t0(session), Path(session_path), clip_dir, link_base, max_tries)
        try:
            for stage in groups:
                problems += sheet.add_stage(stage)
        except ArchiveError as exc:  # a missing or damaged video file: the report says so, and goes on
            problems.append(f"The video could not be read: {exc}")
        finally:
            sheet.video.close()
        return ContactSheet(sheet.video.camera, tuple(sheet.frames), tuple(problems))


class _Sheet:
    """The frames of a contact sheet as they are picked, stage by stage."""

    def __init__(self, video: Any, steps: np.ndarray, t0_s: float, session_path: Path,
                 clip_dir: Path | None, link_base: Path | None, max_tries: int) -> None:
        self.video, self.steps, self.t0_s = video, steps, t0_s
        self.session_path, self.clip_dir, self.link_base = session_path, clip_dir, link_base
        self.max_tries = max_tries
        self.frames: list[SheetFrame] = []

    def add_stage(self, stage: StageRecord) -> list[str]:
        """Add the stage's picks; return the problems (sentences) met."""
        steps = self.steps
        strike = steps["strike_s"]
        idx = np.flatnonzero((strike >= stage.start_s) & (strike < stage.end_s))
        # force metrics of cross-over and invalid steps are not the foot's (NaN: older files)
        idx = idx[~(steps["invalid"][idx] > 0) & ~(steps["crossover"][idx] > 0)]
        valr = steps["valr_bw_per_s"][idx]
        picks = pick_steps(valr)
        if not picks:
            return [f"Stage {stage.name}: no step with a loading rate to show."]
        problems, shown = [], set()
        for pick, order in picks:
            tries = [k for k in order if k not in shown][:self.max_tries]
            k = next((k for k in tries if self._add(stage, pick, int(idx[k]))), None)
            if k is None:
                problems.append(f"Stage {stage.name}: the {pick} step and the next {len(tries) - 1} "
                                "candidates fall in gaps of the video.")
            else:
                shown.add(k)
        return problems

    def _add(self, stage: StageRecord, pick: str, row: int) -> bool:
        """Add step ``row`` (index into the session's steps) as a picture; False if not filmed."""
        import cv2

        from labsuite.video import clips, lookup

        step, number = self.steps[row], row + 1
        strike_s = float(step["strike_s"])
        lines = [f"{stage.name}: {pick}", *clips.step_caption(step, number, strike_s - self.t0_s)]
        try:
            image, ref = clips.still_at(self.video, strike_s, lines)
        except lookup.VideoGapError:
            return False
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ConfigError(f"{self.session_path}: the frame of step {number} cannot be encoded as JPEG")
        clip = None
        if self.clip_dir is not None:
            out = self.clip_dir / f"{self.session_path.stem}_step{number}.mp4"
            clips.clip_around(self.video, strike_s, lines, out, before_s=CLIP_BEFORE_S, after_s=CLIP_AFTER_S)
            clip = os.path.relpath(out, self.link_base) if self.link_base is not None else str(out)
        self.frames.append(SheetFrame(stage.name, pick, number, strike_s - self.t0_s,
                                      float(step["valr_bw_per_s"]), (ref.time_s - strike_s) * 1000,
                                      buf.tobytes(), clip))
        return True
