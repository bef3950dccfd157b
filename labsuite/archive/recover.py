"""Salvage a damaged session file: copy what can still be read into a new, closed session file.

Sits beside the reader (labsuite.archive.reader), which reads every stream up to its last
consistent row and lists what it left out; ``labsuite recover`` writes those rows with the
ordinary SessionWriter into a new file (never over the original), with the video segments and
frame table (the video files themselves stay where they are), restores the original root
attributes, and records where the copy came from and what was lost, so reports and exports
work on what survived and still say it is a recovered copy.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from labsuite import __version__
from labsuite.archive import layout as L
from labsuite.archive.reader import STATUS_DAMAGED, open_session
from labsuite.archive.writer import SessionWriter, WriterSettings
from labsuite.errors import ArchiveError

_CHUNK_ROWS = 65536
# Root attributes the new file's writer owns: the format it wrote, and how it was closed.
_WRITER_OWNED = {"format", "format_version", "complete", "end_lsl_s", "flush_interval_s", L.HEADER_SHA256}


@dataclass
class RecoveryReport:
    """What ``recover`` kept and what the original had lost."""

    source: Path
    out: Path
    source_status: str
    kept: list[tuple[str, int]] = field(default_factory=list)  # (what, rows)
    lost: list[str] = field(default_factory=list)  # the reader's problems with the original
    notes: list[str] = field(default_factory=list)


def recover(source: str | Path, out: str | Path) -> RecoveryReport:
    """Copy every readable row of ``source`` into the new file ``out``; ArchiveError if impossible."""
    source, out = Path(source), Path(out)
    if out.exists():
        raise ArchiveError(f"--out {out}: the file exists; recover writes a new file and never "
                           "overwrites one")
    if out.resolve() == source.resolve():
        raise ArchiveError("--out must name a new file, not the damaged one")
    with open_session(source, allow_damaged=True) as s:
        attrs = s.attrs
        report = RecoveryReport(source, out, s.status, lost=list(s.problems))
        mass = attrs.get("mass_kg", math.nan)
        number = attrs.get("session_number", -1)
        writer = SessionWriter(
            out, participant_id=str(attrs.get("participant_id", "")),
            mass_kg=float(mass) if isinstance(mass, (int, float)) and 0 < mass < 500 else None,
            protocol_text=str(attrs.get("protocol_text", "")) or None,
            session_number=int(number) if isinstance(number, int) and number >= 0 else None,
            settings=WriterSettings(late_stream_slots=0), stages_from_markers=False)
        try:
            handles = [(writer.add_stream(sd.spec), sd) for sd in s.streams.values()]
            for h, sd in handles:
                for local_s, offset_s in sd.clock_offsets:
                    writer.add_clock_offset(h, float(local_s), float(offset_s))
                for k in range(0, sd.n_samples, _CHUNK_ROWS):
                    data = sd.data[k:k + _CHUNK_ROWS]
                    if sd.spec.dtype == "string":
                        data = [[t] for t in data]
                    writer.append(h, sd.timestamps_raw[k:k + _CHUNK_ROWS], data)
                report.kept.append((f"stream {sd.spec.source_id}", sd.n_samples))
            writer.append_steps(s.steps)
            report.kept.append(("steps", len(s.steps)))
            own = [m for m in s.markers if m["source_id"] == ""]
            for m in own:
                writer.append_marker(float(m["time_s"]), str(m["text"]))
            report.kept.append(("markers of the session", len(own)))
            for st in s.stages:
                writer.append_stage(st)
            report.kept.append(("stages", len(s.stages)))
            for rec in s.calibration:
                writer.set_calibration(rec, timestamp=0.0)
            report.kept.append(("calibration records", len(s.calibration)))
            for seg in s.video_segments:
                writer.add_video_segment(seg.record, seg.first_time_s)
            report.kept.append(("video segments", len(s.video_segments)))
            writer.append_video_frames(s.video_frames_raw)
            report.kept.append(("video frames", len(s.video_frames_raw)))
            if s.video_segments and out.parent.resolve() != source.parent.resolve():
                report.notes.append(f"the video files stay beside {source.name} (their names are stored "
                                    f"relative to the session file): copy them into {out.parent} too")
            for ev in s.events:
                writer.log_event(str(ev.get("kind", "")), str(ev.get("detail", "")),
                                 source_id=str(ev.get("source_id", "")), timestamp=float(ev["time_s"]))
            report.kept.append(("recording events", len(s.events)))
        finally:
            writer.close()
    # The copy is the original session: its attributes, and how the original ended.
    with h5py.File(out, "r+") as f:
        for key, value in attrs.items():
            if key not in _WRITER_OWNED and value is not None:
                f.attrs[key] = value
        f.attrs["complete"] = bool(attrs.get("complete", False))
        if "end_lsl_s" in attrs:
            f.attrs["end_lsl_s"] = float(attrs["end_lsl_s"])
        f.attrs["recovered_from"] = str(source)
        f.attrs["recovered_utc"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        f.attrs["recovered_by"] = f"labsuite {__version__}"
        f.attrs["recovery_lost"] = json.dumps(report.lost)
        f.attrs[L.HEADER_SHA256] = L.header_digest(dict(f.attrs.items()))
    return report


def format_report(rep: RecoveryReport) -> str:
    """The terminal text of a recovery."""
    lines = [f"recovered {rep.source} ({rep.source_status}) into {rep.out}"]
    lines += [f"  kept: {what}: {rows} rows" for what, rows in rep.kept]
    lines += [f"  note: {n}" for n in rep.notes]
    if rep.lost:
        lines += [f"  lost: {p}" for p in rep.lost]
    elif rep.source_status != STATUS_DAMAGED:
        lines.append(f"  nothing was damaged: {rep.out} is a full copy")
    return "\n".join(lines)
