"""Summarise a session file: streams, durations, measured rates, gaps, steps per stage, video files.

Reads with labsuite.archive.reader; ``labsuite inspect`` prints :func:`format_summary`, reports
and tests use :func:`summarize` (plain dict, JSON-ready).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from labsuite.archive.reader import Session
from labsuite.steps import FOOT_LEFT, FOOT_RIGHT


def summarize(session: Session) -> dict[str, Any]:
    """Return a JSON-ready summary of the session."""
    a = session.attrs
    streams = []
    for sid, sd in session.streams.items():
        gaps = sd.gaps()
        co = sd.clock_offsets
        streams.append({
            "source_id": sid, "name": sd.spec.name, "kind": sd.spec.kind, "key": sd.key,
            "channels": sd.spec.channel_count, "nominal_rate_hz": sd.spec.rate_hz,
            "samples": sd.n_samples, "duration_s": sd.duration_s,
            "measured_rate_hz": _finite(sd.measured_rate_hz),
            "gaps": len(gaps), "gap_total_s": float(sum(g[1] for g in gaps)),
            "longest_gap_s": float(max((g[1] for g in gaps), default=0.0)),
            "clock_offsets": len(co),
            "last_offset_ms": _finite(float(co[-1, 1]) * 1000.0) if len(co) else None,
            "late": sd.late,
        })
    steps = session.steps
    feet = steps["foot"]
    stages = [{"index": st.index, "name": st.name, "kind": st.kind, "start_s": st.start_s,
               "end_s": st.end_s, "duration_s": st.end_s - st.start_s, "steps": n,
               "end_reason": st.end_reason}
              for st, n in session.stages_steps()]
    events = session.events
    counts: dict[str, int] = {}
    for e in events:
        counts[e["kind"]] = counts.get(e["kind"], 0) + 1
    video = []
    frames = session.video_frames
    for seg in session.video_segments:
        mine = frames[frames["segment"] == seg.row]
        video.append({
            "camera": seg.camera, "segment": seg.part, "file": seg.file, "exists": seg.exists,
            "frames": len(mine),
            "first_s": float(mine["time_s"][0]) if len(mine) else None,
            "last_s": float(mine["time_s"][-1]) if len(mine) else None,
            "size_bytes": seg.path.stat().st_size if seg.exists and seg.path is not None else None})
    return {
        "path": str(session.path),
        "status": session.status,
        "complete": session.complete,
        "problems": session.problems,
        "notes": session.notes,
        "recovered_from": a.get("recovered_from") or None,
        "recovery_lost": _json_list(a.get("recovery_lost")),
        "participant_id": a.get("participant_id"),
        "mass_kg": _finite(a.get("mass_kg", math.nan)),
        "session_number": a.get("session_number"),
        "start_time_utc": a.get("start_time_utc"),
        "host": a.get("host"),
        "labsuite_version": a.get("labsuite_version"),
        "protocol_sha256": a.get("protocol_sha256") or None,
        "streams": streams,
        "steps": {"total": len(steps), "left": int(np.count_nonzero(feet == FOOT_LEFT)),
                  "right": int(np.count_nonzero(feet == FOOT_RIGHT))},
        "stages": stages,
        "markers": len(session.markers),
        "calibration_records": len(session.calibration),
        "events": counts,
        "video": video,
        "video_missing": [v["file"] for v in video if not v["exists"]],
        "errors": [e["detail"] for e in events if e["kind"] in ("error", "late_stream_refused")],
        "parts": [{"part": p.part, "path": str(p.path), "status": p.status, "seconds": p.seconds,
                   "first_s": _finite(p.first_s), "last_s": _finite(p.last_s), "samples": p.samples}
                  for p in session.parts],
        "recording_gaps": [{"after_part": g.after_part, "start_s": g.start_s, "length_s": g.length_s}
                           for g in session.recording_gaps],
        "missing_s": session.missing_s,
        "outcome": dict(zip(("outcome", "exit_code", "detail"), session.outcome, strict=True)),
    }


def format_summary(s: dict[str, Any]) -> str:
    """Format :func:`summarize` output for the terminal."""
    lines = [f"session {s['path']}"]
    status = s["status"]
    if status == "damaged":
        lines.append(f"  status: DAMAGED: {len(s['problems'])} problem(s); what is listed below is what "
                     "can still be read (run `labsuite recover FILE --out FIXED.h5` to copy it)")
        lines += [f"    damaged: {p}" for p in s["problems"]]
    elif status == "live":
        lines.append("  status: LIVE: being recorded now (its writer is running); holds everything up "
                     "to its last flush")
    elif status == "complete":
        lines.append("  status: complete (closed cleanly)")
    elif status == "incomplete":
        lines.append(f"  status: INCOMPLETE: recorded in {len(s['parts'])} parts (the recorder was "
                     f"restarted); {s['missing_s']:.2f} s of the session are in no file")
    else:
        lines.append("  status: INCOMPLETE: not closed cleanly (its writer stopped without closing "
                     "it: a crash, a kill or a power cut); holds everything up to its last flush")
    lines += [f"  note: {n}" for n in s.get("notes", [])]
    out = s.get("outcome") or {}
    if out.get("outcome"):
        lines.append(f"  outcome: {out['outcome']} (labsuite run exit code {out['exit_code']})"
                     + (f": {out['detail']}" if out.get("detail") else ""))
    if len(s.get("parts", [])) > 1:
        for p in s["parts"]:
            lines.append(f"  part {p['part']}: {p['path']}  {p['seconds']:.1f} s  {p['status']}")
        for g in s["recording_gaps"]:
            lines.append(f"  recording gap after part {g['after_part']}: {g['length_s']:.2f} s")

    mass = "-" if s["mass_kg"] is None else f"{s['mass_kg']:g} kg"
    number = "-" if s["session_number"] in (None, -1) else str(s["session_number"])
    lines.append(f"  participant {s['participant_id']}  mass {mass}  session {number}  "
                 f"started {s['start_time_utc']} on {s['host']}  labsuite {s['labsuite_version']}")
    if s["protocol_sha256"]:
        lines.append(f"  protocol sha256 {s['protocol_sha256']}")
    header = ("stream", "kind", "source_id", "ch", "nominal_hz", "measured_hz", "samples",
              "duration_s", "gaps", "gap_s", "offsets")
    rows: list[tuple[str, ...]] = [header]
    for st in s["streams"]:
        nominal = "irregular" if st["nominal_rate_hz"] == 0 else f"{st['nominal_rate_hz']:g}"
        measured = "-" if st["measured_rate_hz"] is None or st["nominal_rate_hz"] == 0 else \
            f"{st['measured_rate_hz']:.2f}"
        rows.append((st["name"] + (" (late)" if st["late"] else ""), st["kind"], st["source_id"],
                     str(st["channels"]), nominal, measured, str(st["samples"]),
                     f"{st['duration_s']:.2f}", str(st["gaps"]), f"{st['gap_total_s']:.3f}",
                     str(st["clock_offsets"])))
    lines.append("")
    lines += _table(rows)
    steps = s["steps"]
    lines.append("")
    lines.append(f"steps: {steps['total']} (left {steps['left']}, right {steps['right']})")
    if s["stages"]:
        stage_rows: list[tuple[str, ...]] = [("#", "stage", "kind", "duration_s", "steps", "end_reason")]
        stage_rows += [(str(st["index"]), st["name"], st["kind"], f"{st['duration_s']:.1f}", str(st["steps"]),
                        st["end_reason"]) for st in s["stages"]]
        lines += _table(stage_rows)
    else:
        lines.append("stages: none recorded")
    if s["video"]:
        video_rows: list[tuple[str, ...]] = [("video file", "camera", "segment", "frames", "seconds",
                                              "on disk")]
        for v in s["video"]:
            span = "-" if v["first_s"] is None else f"{v['last_s'] - v['first_s']:.1f}"
            disk = f"{v['size_bytes'] / 1e6:.1f} MB" if v["exists"] else "MISSING"
            video_rows.append((v["file"], v["camera"], str(v["segment"]), str(v["frames"]), span, disk))
        lines += _table(video_rows)
        for name in s["video_missing"]:
            lines.append(f"  MISSING video file: {name} (not beside the session file; "
                         "`labsuite video` cannot show its frames)")
    ev = ", ".join(f"{k} {v}" for k, v in sorted(s["events"].items())) or "none"
    lines.append(f"markers: {s['markers']}   calibration records: {s['calibration_records']}   "
                 f"events: {ev}")
    for err in s["errors"]:
        lines.append(f"  ERROR during recording: {err}")
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _json_list(text: Any) -> list[str]:
    import json

    try:
        value = json.loads(text) if isinstance(text, str) else []
    except json.JSONDecodeError:
        return [str(text)]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
