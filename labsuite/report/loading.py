"""Reading a session file for its report: stages (rebuilt when cut short), steps, events, force curves.

Reads through :mod:`labsuite.archive.reader` and hands :class:`SessionReport` to the charts and the
HTML page; the per-stage numbers come from :func:`labsuite.report.tables.stage_table`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from labsuite.archive.reader import open_session
from labsuite.constants import GRAVITY_M_S2
from labsuite.errors import ConfigError, DeviceError, LabsuiteError
from labsuite.plates import PlateGeometry, plate_axes
from labsuite.protocol.schema import parse_protocol
from labsuite.report.tables import stage_table, steps_in_stage
from labsuite.stages import EVENT_STAGE_START, StageRecord
from labsuite.steps import STEP_DTYPE
from labsuite.streams.contracts import KIND_FORCE_PLATE, KIND_TREADMILL
from labsuite.streams.messages import decode

MOVING_KINDS = ("baseline", "cadence", "retention")

# Marker events shown as safety / session events (names from labsuite.protocol.machine; repeated here
# so that reading a report never imports the protocol runner).
SESSION_EVENTS = ("session_start", "session_end", "safety_stop", "emergency_stop", "paused",
                  "resumed", "operator", "operator_decision_required", "baseline", "body_weight")
SAFETY_EVENTS = ("safety_stop", "emergency_stop")
_ENDING_EVENTS = ("body_weight", "baseline", "session_end")  # published as a stage ends
_END_TOLERANCE_S = 0.5
EVENT_CHECKIN = "checkin"
EVENT_CHECKIN_REQUEST = "checkin_request"


@dataclass(frozen=True)
class Event:
    """One marker worth showing: time from the session start (s), event name, its fields."""

    t_s: float
    event: str
    fields: dict[str, Any]
    stage: str = ""


@dataclass(frozen=True)
class ForceCurve:
    """Mean vertical force over stance (0-100 %) of one stage; ``unit`` 'BW' or 'N'."""

    stage: str
    percent: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    n_steps: int
    unit: str


@dataclass(frozen=True)
class SessionReport:
    """Everything a session page shows, read from one file by :func:`load_session_report`."""

    path: Path
    participant_id: str
    protocol_name: str
    programme_name: str
    session_number: int | None
    session_label: str
    programme_sessions: int | None
    date_utc: str
    speed_m_s: float
    measured_speed_m_s: float
    body_mass_kg: float
    complete: bool
    end_reason: str
    t0_s: float
    t_end_s: float
    stages: tuple[StageRecord, ...]
    steps: np.ndarray
    rows: tuple[dict[str, Any], ...]
    checkins: tuple[Event, ...]
    unanswered_checkins: tuple[Event, ...]
    events: tuple[Event, ...]
    recording_events: tuple[dict[str, Any], ...]
    streams: tuple[dict[str, Any], ...]
    curves: tuple[ForceCurve, ...]
    baseline_valr_bw_per_s: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def status(self) -> str:
        """'complete', 'stopped' (ended early by a rule or the operator) or 'cut short' (file not closed)."""
        if not self.complete:
            return "cut short"
        if self.end_reason and self.end_reason != "completed":
            return "stopped"
        return "complete"

    def warnings(self) -> list[str]:
        """Plain-language statements about how the session ended, for the top of the page."""
        out = []
        if not self.complete:
            out.append("This recording was cut short: the file was never closed (the recorder "
                       "crashed or was killed, the power failed, or it is still being written). "
                       f"Everything up to {self.t_end_s - self.t0_s:.1f} s into the session is shown; "
                       "a stage still running then is marked 'interrupted'.")
        reason = self.end_reason
        if reason.startswith("safety_stop"):
            out.append(f"The session was ended by a safety stop ({reason.partition(':')[2] or 'rule'}).")
        elif reason == "emergency_stop":
            out.append("The session was ended by an emergency stop.")
        elif reason == "pain_stop":
            out.append("The session was stopped by the pain rule at a check-in.")
        elif reason == "aborted":
            out.append("The operator ended the session early (abort).")
        elif reason == "baseline_failed":
            out.append("The session ended after the baseline: too few steps to measure it.")
        elif not reason and self.complete and self.stages:
            out.append("The file was closed but holds no session_end marker: the protocol runner "
                       "did not finish the session.")
        if any(r["end_reason"] == "interrupted" for r in self.rows) and self.complete:
            out.append("The last stage never ended (no stage_end marker); it is shown up to the end "
                       "of the recording.")
        return out + list(self.notes)


def load_session_report(path: str | os.PathLike[str], *, curves: bool = True,
                        curve_points: int = 101) -> SessionReport:
    """Read a session file and compute everything its report shows.

    Works on complete files and on files cut short by a crash (``complete`` False): a stage that
    started but never ended is rebuilt from its ``stage_start`` marker, ended at the last data, with
    end reason 'interrupted'. A file without any stage (``labsuite record``) becomes one 'recording'
    stage. ``curves=False`` skips the force curves (they read the raw force streams).
    """
    if not (isinstance(curve_points, int) and 11 <= curve_points <= 1001):
        raise ConfigError(f"curve_points: expected an integer 11..1001, got {curve_points!r}")
    p = Path(path)
    with open_session(p) as sess:
        attrs = sess.attrs
        steps = np.asarray(sess.steps, dtype=STEP_DTYPE)
        # the processor releases steps in strike order; sort anyway so plots never zigzag
        steps = steps[np.argsort(steps["strike_s"], kind="stable")]
        markers = sess.markers
        recorded_stages = list(sess.stages)
        rec_events = tuple(sess.events)
        complete = sess.complete
        file_notes = sess.notes  # e.g. a copy made by `labsuite recover`, and what it lost
        participant = str(attrs.get("participant_id", ""))
        mass_kg = float(attrs.get("mass_kg", math.nan))
        stream_info, plates, treadmill, (data_start, data_end) = _stream_summary(
            sess, need_plates=curves)

    decoded = _decode_markers(markers)
    start = next((m for m in decoded if m[1].get("event") == "session_start"), None)
    end = next((m for m in reversed(decoded) if m[1].get("event") == "session_end"), None)
    notes: list[str] = [f"Session file: {n}." for n in file_notes]
    t_candidates = [t for t in (data_end, float(np.nanmax(steps["toe_off_s"])) if len(steps) and
                                np.isfinite(steps["toe_off_s"]).any() else math.nan,
                                decoded[-1][0] if decoded else math.nan) if math.isfinite(t)]
    t_end = max(t_candidates) if t_candidates else math.nan
    stages = _complete_stages(recorded_stages, decoded, t_end, attrs)
    if not stages:
        t_first = [t for t in (steps["strike_s"][0] if len(steps) else math.nan, data_start)
                   if math.isfinite(t)]
        t_begin = min(t_first) if t_first else 0.0
        if math.isfinite(t_end) and t_end > t_begin:
            stages = [StageRecord(index=0, name="recording", kind="recording", start_s=t_begin,
                                  end_s=math.nextafter(t_end, math.inf), end_reason="")]
            notes.append("The file holds no protocol stages (recorded without a protocol): the "
                         "whole recording is summarised as one stage.")
    if start is not None:
        t0 = start[0]
    elif stages:
        t0 = stages[0].start_s
    elif len(steps):
        t0 = float(steps["strike_s"][0])
    else:
        t0 = 0.0
    rows = stage_table(stages, steps, t0_s=t0)

    protocol_name, programme_name, session_label, n_sessions = _protocol_info(attrs, start)
    session_number = int(attrs.get("session_number", -1))
    if session_number < 0 and start is not None and start[1].get("programme_session") is not None:
        session_number = int(start[1]["programme_session"])
    if n_sessions is None and start is not None and start[1].get("programme_sessions") is not None:
        n_sessions = int(start[1]["programme_sessions"])
    if not math.isfinite(mass_kg):
        weighed = [m for m in decoded if m[1].get("event") == "body_weight"]
        if weighed and weighed[-1][1].get("mass_kg") is not None:
            mass_kg = float(weighed[-1][1]["mass_kg"])
    base_marker = [m for m in decoded if m[1].get("event") == "baseline" and m[1].get("ok")]
    base_valr = math.nan
    if base_marker and base_marker[-1][1].get("valr_bw_per_s") is not None:
        base_valr = float(base_marker[-1][1]["valr_bw_per_s"])

    def stage_at(t: float, *, ending: bool = False) -> str:
        # Events emitted as a stage ends (or that end it: a stop) carry a time at or just after the
        # record's end (the marker's LSL time may trail it slightly): they belong to that stage.
        done = [st for st in stages if st.start_s < t and t - _END_TOLERANCE_S <= st.end_s <= t]
        if ending and done:
            return max(done, key=lambda st: st.end_s).name
        for st in stages:
            if st.start_s <= t < st.end_s:
                return st.name
        return max(done, key=lambda st: st.end_s).name if done else ""

    asked = {obj.get("id"): obj for _, obj in decoded if obj.get("event") == EVENT_CHECKIN_REQUEST}
    checkins, answered = [], set()
    for t, obj in decoded:
        if obj.get("event") == EVENT_CHECKIN:
            request = asked.get(obj.get("id"), {})
            fields = {**obj, "asked_at": request.get("reason", "")}
            checkins.append(Event(t - t0, EVENT_CHECKIN, fields, str(request.get("stage") or "")
                                  or stage_at(t)))
            answered.add(obj.get("id"))
    unanswered = [Event(t - t0, EVENT_CHECKIN_REQUEST, obj, str(obj.get("stage") or "") or stage_at(t))
                  for t, obj in decoded
                  if obj.get("event") == EVENT_CHECKIN_REQUEST and obj.get("id") not in answered]
    events = [Event(t - t0, str(obj.get("event")), obj,
                    stage_at(t, ending=obj.get("event") in _ENDING_EVENTS)) for t, obj in decoded
              if obj.get("event") in SESSION_EVENTS]

    speeds = [st.belt_speed_m_s for st in stages if st.kind in MOVING_KINDS
              and math.isfinite(st.belt_speed_m_s) and st.belt_speed_m_s > 0]
    speed = max(set(speeds), key=speeds.count) if speeds else math.nan
    curves_out: tuple[ForceCurve, ...] = ()
    if curves:
        bw_n = mass_kg * GRAVITY_M_S2 if math.isfinite(mass_kg) and mass_kg > 0 else math.nan
        curves_out, curve_notes = _force_curves(stages, steps, plates, bw_n, curve_points)
        notes += curve_notes
    return SessionReport(
        path=p, participant_id=participant, protocol_name=protocol_name,
        programme_name=programme_name, session_number=session_number if session_number >= 0 else None,
        session_label=session_label, programme_sessions=n_sessions,
        date_utc=str(attrs.get("start_time_utc", "")), speed_m_s=speed,
        measured_speed_m_s=treadmill, body_mass_kg=mass_kg, complete=complete,
        end_reason=str(end[1].get("reason", "")) if end is not None else "",
        t0_s=t0, t_end_s=t_end if math.isfinite(t_end) else t0, stages=tuple(stages), steps=steps,
        rows=tuple(rows), checkins=tuple(checkins), unanswered_checkins=tuple(unanswered),
        events=tuple(events), recording_events=rec_events, streams=tuple(stream_info),
        curves=curves_out, baseline_valr_bw_per_s=base_valr, notes=tuple(notes))


def _decode_markers(markers: np.ndarray) -> list[tuple[float, dict[str, Any]]]:
    """Decode JSON markers (time_s, object); plain-text markers from other apps are kept as events."""
    out = []
    for m in markers:
        try:
            obj = decode(str(m["text"]))
        except DeviceError:
            continue  # a malformed marker is kept in the file; the report shows what it can read
        out.append((float(m["time_s"]), obj))
    return out


def _complete_stages(recorded: list[StageRecord], decoded: list[tuple[float, dict[str, Any]]],
                     t_end: float, attrs: Mapping[str, Any]) -> list[StageRecord]:
    """Add the stage that started but never ended (a crash or a kill), ended at ``t_end``."""
    stages = sorted(recorded, key=lambda s: s.start_s)
    last_end = stages[-1].end_s if stages else -math.inf
    starts = [(t, obj) for t, obj in decoded if obj.get("event") == EVENT_STAGE_START and t >= last_end]
    ended = {(s.index, round(s.start_s, 6)) for s in stages}
    if starts and math.isfinite(t_end):
        t, obj = starts[-1]
        if (int(obj.get("index", -1)), round(t, 6)) not in ended and t_end > t:
            def num(key: str) -> float:
                v = obj.get(key)
                return math.nan if v is None else float(v)

            stages.append(StageRecord(
                index=int(obj.get("index", len(stages))), name=str(obj.get("name", "?")),
                kind=str(obj.get("kind", "")), start_s=t, end_s=math.nextafter(t_end, math.inf),
                target_cadence_spm=num("target_cadence_spm"), band_low_spm=num("band_low_spm"),
                band_high_spm=num("band_high_spm"), belt_speed_m_s=num("belt_speed_m_s"),
                end_reason="interrupted",
                feedback_json=_stage_feedback_json(attrs, str(obj.get("name", "")))))
    return stages


def _stage_feedback_json(attrs: Mapping[str, Any], stage_name: str) -> str:
    """A stage's cues as the stage machine records them, from the protocol text stored in the file.

    Used for a stage cut short (it has no stage_end record); "{}" when the text is missing or no
    longer valid (the page then shows no feedback level rather than a guessed one).
    """
    text = str(attrs.get("protocol_text", "") or "")
    if not text:
        return "{}"
    try:
        protocol = parse_protocol(text, "protocol_text")
        n = int(attrs.get("session_number", -1))
        if protocol.programme is not None and n >= 1:
            protocol = protocol.for_session(n)
    except ConfigError:
        return "{}"
    for stage in protocol.stages:
        cues = getattr(stage, "cues", None)
        if stage.name == stage_name and cues is not None:
            return json.dumps(cues.model_dump(exclude_none=True))
    return "{}"


def _protocol_info(attrs: Mapping[str, Any], start: tuple[float, dict[str, Any]] | None
                   ) -> tuple[str, str, str, int | None]:
    """Protocol name, programme name, this session's label and the programme's session count."""
    text = str(attrs.get("protocol_text", "") or "")
    name = programme = label = ""
    n_sessions: int | None = None
    if text:
        try:
            obj = yaml.safe_load(text)
        except yaml.YAMLError:
            obj = None
        if isinstance(obj, dict):
            name = str(obj.get("name", ""))
            prog = obj.get("programme")
            if isinstance(prog, dict):
                programme = str(prog.get("name", ""))
                sessions = prog.get("sessions")
                if isinstance(sessions, list):
                    n_sessions = len(sessions)
                    k = int(attrs.get("session_number", -1))
                    if 1 <= k <= len(sessions) and isinstance(sessions[k - 1], dict):
                        label = str(sessions[k - 1].get("label", ""))
    if start is not None:
        name = name or str(start[1].get("protocol") or "")
        programme = programme or str(start[1].get("programme") or "")
    if not name and attrs.get("protocol_path"):
        name = Path(str(attrs["protocol_path"])).stem
    return name, programme, label, n_sessions


def _stream_summary(sess: Any, *, need_plates: bool
                    ) -> tuple[list[dict[str, Any]], dict[str, tuple[np.ndarray, np.ndarray]], float,
                               tuple[float, float]]:
    """Stream list for the page, vertical force per belt (if asked), measured belt speed, data span."""
    info: list[dict[str, Any]] = []
    plates: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    speeds: list[np.ndarray] = []
    data_start = data_end = math.nan
    for sid, sd in sess.streams.items():
        gaps = sd.gaps() if sd.spec.rate_hz > 0 else []
        info.append({"source_id": sid, "kind": sd.spec.kind, "samples": sd.n_samples,
                     "rate_hz": sd.spec.rate_hz, "measured_rate_hz": sd.measured_rate_hz,
                     "duration_s": sd.duration_s, "gaps": len(gaps),
                     "gap_s": float(sum(g[1] for g in gaps))})
        if sd.n_samples and sd.spec.rate_hz > 0:
            data_start = float(np.nanmin([data_start, sd.timestamps[0]]))
            data_end = float(np.nanmax([data_end, sd.timestamps[-1]]))
        if sd.spec.kind == KIND_FORCE_PLATE and need_plates and sd.n_samples:
            belt = str(sd.spec.setup.get("force_platform", {}).get("belt", "")) if sd.spec.setup else ""
            vertical = _vertical_grf_n(sd.spec, sd.data)
            if belt and vertical is not None:
                plates[belt] = (np.asarray(sd.timestamps, dtype=np.float64), vertical)
        elif sd.spec.kind == KIND_TREADMILL and sd.n_samples:
            arr = np.asarray(sd.data, dtype=np.float64)
            speeds.append(arr[:, :2].mean(axis=1))
    measured = math.nan
    if speeds:
        v = np.concatenate(speeds)
        moving = v[v > 0.2]
        if len(moving):
            measured = float(np.median(moving))
    return info, plates, measured, (data_start, data_end)


def _vertical_grf_n(spec: Any, data: np.ndarray) -> np.ndarray | None:
    """Vertical ground reaction on the body (N) from a force-plate stream's Fx Fy Fz.

    The plate's axes come from its stream metadata (:meth:`PlateGeometry.from_spec`, the one
    reader of ``desc/setup/force_platform``); None when the stream has none (the page then lists
    the stream but draws no curve from it).
    """
    try:
        rot = plate_axes(PlateGeometry.from_spec(spec).corners)
    except LabsuiteError:
        return None
    f = np.column_stack([np.asarray(data[:, spec.labels.index(k)], dtype=np.float64)
                         for k in ("Fx", "Fy", "Fz")])
    # minus the force on the plate, lab z component
    return -(f @ rot[2])


def _force_curves(stages: Sequence[StageRecord], steps: np.ndarray,
                  plates: Mapping[str, tuple[np.ndarray, np.ndarray]], bw_n: float, points: int
                  ) -> tuple[tuple[ForceCurve, ...], list[str]]:
    """Mean vertical force over stance per stage, from the raw force streams and the step times."""
    notes: list[str] = []
    if not plates:
        return (), ["No force-plate stream in the file: no force curves."]
    pct = np.linspace(0.0, 100.0, points)
    frac = pct / 100.0
    out = []
    for st in stages:
        mine = steps_in_stage(steps, st)
        mine = mine[~(mine["crossover"] >= 1) & np.isfinite(mine["strike_s"])
                    & np.isfinite(mine["toe_off_s"]) & (mine["toe_off_s"] > mine["strike_s"])]
        if not len(mine):
            continue
        curves = []
        for foot, belt in ((0, "left"), (1, "right")):
            key = belt if belt in plates else ("single" if "single" in plates else "")
            if not key:
                continue
            ts, fz = plates[key]
            feet = mine[mine["foot"] == foot]
            if not len(feet) or len(ts) < 2:
                continue
            strike, toe = feet["strike_s"], feet["toe_off_s"]
            # Only contacts the stream covers without a hole (a gap would be interpolated flat).
            i0 = np.searchsorted(ts, strike, side="left")
            i1 = np.searchsorted(ts, toe, side="right")
            period = float(np.median(np.diff(ts[: min(len(ts), 10000)])))
            expected = (toe - strike) / period if period > 0 else np.zeros(len(toe))
            ok = (strike >= ts[0]) & (toe <= ts[-1]) & ((i1 - i0) >= 0.9 * expected)
            if not ok.any():
                continue
            q = strike[ok, None] + frac[None, :] * (toe[ok] - strike[ok])[:, None]
            curves.append(np.interp(q.ravel(), ts, fz).reshape(q.shape))
        if not curves:
            continue
        allc = np.vstack(curves)
        unit = "N"
        if math.isfinite(bw_n) and bw_n > 0:
            allc = allc / bw_n
            unit = "BW"
        out.append(ForceCurve(st.name, pct, allc.mean(axis=0),
                              allc.std(axis=0, ddof=1) if len(allc) > 1 else np.zeros(points),
                              len(allc), unit))
    if out and "single" in plates and "left" not in plates and len(steps) and bool(
            np.nanmedian(steps["contact_s"] - steps["step_s"]) > 0):
        notes.append("One plate under both feet and walking: the force curves include the other "
                     "foot's load during double support.")
    if out and out[0].unit == "N":
        notes.append("Body mass unknown (no mass in the file, no weigh-in): force curves in newtons.")
    return tuple(out), notes
