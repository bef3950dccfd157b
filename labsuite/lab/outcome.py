"""How a run ended, told the same way everywhere: exit code, last lines, and the session file itself.

``labsuite run`` (labsuite.lab.run, labsuite.cli.run) classifies a run once it stopped every
role: from the stage machine's end reason, the safety events it published and what the recorder
left on disk (parts, gaps, read back with labsuite.archive.reader). The same outcome goes into
the exit code, the summary's last lines and the root attributes of the session's files.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from labsuite.archive import layout as L

log = logging.getLogger(__name__)

COMPLETED = "completed"
STOPPED_PROTOCOL = "stopped_protocol"
STOPPED_SAFETY = "stopped_safety"
RECORDING_INCOMPLETE = "recording_incomplete"
COULD_NOT_START = "could_not_start"

# docs/protocols.md and the README list the same codes. 1 stays every command's "bad input" and
# 2 argparse's; a run that lost recording reports that before anything else, then safety.
EXIT_CODES = {COMPLETED: 0, STOPPED_PROTOCOL: 3, STOPPED_SAFETY: 4, RECORDING_INCOMPLETE: 5,
              COULD_NOT_START: 6}
MEANING = {
    COMPLETED: "every stage ran, nothing stopped the belt for safety, the recording is whole",
    STOPPED_PROTOCOL: "ended early by a protocol rule or the operator (pain, baseline, abort)",
    STOPPED_SAFETY: "the belt was stopped for safety (emergency stop, watchdog, a lost device)",
    RECORDING_INCOMPLETE: "the session's files miss part of the session (a recorder died)",
    COULD_NOT_START: "devices, processor or recorder did not come up; no session ran",
}


@dataclass(frozen=True)
class FileLine:
    """One file the run wrote and what it holds."""

    path: Path
    what: str


@dataclass
class Recording:
    """What the recorder left: the session's files, seconds recorded and missing, and why not whole."""

    files: list[FileLine] = field(default_factory=list)
    parts: int = 0
    recorded_s: float = 0.0
    missing_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def whole(self) -> bool:
        """True when one closed, undamaged file holds the session."""
        return not self.problems


@dataclass(frozen=True)
class Outcome:
    """The run's outcome: name (one of :data:`EXIT_CODES`), exit code and one line of detail."""

    name: str
    detail: str

    @property
    def code(self) -> int:
        """The exit code of ``labsuite run``."""
        return EXIT_CODES[self.name]


def classify(end_reason: str, safety_events: int, recording: Recording | None) -> Outcome:
    """The outcome of a run that started (``recording`` None: nothing was to be recorded)."""
    ended = {"completed": "every stage ran", "": "the protocol did not finish"}.get(end_reason, end_reason)
    why = [f"protocol: {ended}"]
    if safety_events:
        why.append(f"{safety_events} safety event(s)")
    if recording is not None and not recording.whole:
        return Outcome(RECORDING_INCOMPLETE, "; ".join(recording.problems + why))
    if safety_events or end_reason.startswith("safety_stop") or end_reason == "emergency_stop":
        return Outcome(STOPPED_SAFETY, "; ".join(why))
    if end_reason != "completed":
        return Outcome(STOPPED_PROTOCOL, "; ".join(why))
    return Outcome(COMPLETED, "; ".join(why))


def read_recording(first: Path, *, recorder_gave_up: bool = False) -> Recording:
    """Read back what the recorder wrote for the session whose first file is ``first``."""
    from labsuite.archive.reader import STATUS_COMPLETE, open_session
    from labsuite.errors import ArchiveError

    rec = Recording()
    if recorder_gave_up:
        rec.problems.append("the recorder kept dying and was given up on")
    if not first.exists():
        rec.problems.append(f"no session file {first}")
        return rec
    try:
        with open_session(first, allow_damaged=True) as s:
            rec.parts = len(s.parts)
            gaps = {g.after_part: g for g in s.recording_gaps}
            for p in s.parts:
                gap = gaps.get(p.part)
                what = (f"part {p.part}: {p.seconds:.1f} s of data, {p.status}"
                        + (f"; then {gap.length_s:.2f} s not recorded (recorder restarted)" if gap else ""))
                rec.files.append(FileLine(p.path, what))
                rec.recorded_s += p.seconds
            for seg in s.video_segments:
                frames = s.video_frames[s.video_frames["segment"] == seg.row]
                span = float(frames["time_s"][-1] - frames["time_s"][0]) if len(frames) > 1 else 0.0
                where = seg.path if seg.path is not None else Path(seg.file)
                rec.files.append(FileLine(where, f"video of {seg.camera} (segment {seg.part}): "
                                                 f"{len(frames)} frames, {span:.1f} s"
                                                 + ("" if seg.exists else ", MISSING")))
            rec.missing_s = s.missing_s
            if s.recording_gaps:
                rec.problems.append(f"recording incomplete: {s.missing_s:.2f} s missing in "
                                    f"{len(s.recording_gaps)} gap(s) between {rec.parts} parts")
            elif s.status != STATUS_COMPLETE:
                rec.problems.append(f"recording incomplete: {first.name} is {s.status}")
            rec.problems += [f"damaged: {p}" for p in s.problems[:3]]
    except ArchiveError as exc:
        rec.problems.append(f"recording unreadable: {exc}")
    return rec


def write_outcome(first: Path, outcome: Outcome) -> list[Path]:
    """Store the outcome in every closed file of the session's set; returns the files written.

    A part whose writer died stays as it was: HDF5 still marks it open for writing, and that
    mark is how readers know it was cut short. The set's last part is closed when the run ends.
    """
    import h5py

    from labsuite.archive import naming
    from labsuite.archive.integrity import probe_file

    written = []
    for path in [first, *(p for _, p in naming.later_parts(first))]:
        try:
            if probe_file(path).open_for_write:
                continue
            with h5py.File(path, "r+") as f:
                f.attrs[L.OUTCOME] = outcome.name
                f.attrs[L.OUTCOME_CODE] = outcome.code
                f.attrs[L.OUTCOME_DETAIL] = outcome.detail
            written.append(path)
        except (OSError, ValueError) as exc:
            log.warning("could not store the outcome in %s: %s", path, exc)
    return written


def format_files(rec: Recording) -> list[str]:
    """The last lines about files: every file written and what it holds."""
    lines = [f"files written ({rec.recorded_s:.1f} s recorded"
             + (f", {rec.missing_s:.2f} s missing" if rec.missing_s > 0 or not math.isfinite(rec.missing_s)
                else "") + "):"]
    lines += [f"  {f.path}: {f.what}" for f in rec.files]
    return lines
