"""Session and programme reports: per-stage numbers, one self-contained HTML page, CSV for statistics.

The last box of the data flow: reads finished (or cut-short) session files through
:mod:`labsuite.archive.reader`. :func:`stage_table` computes every per-stage number once; the HTML page
(:func:`render_session_html`), the CSV (:func:`table_csv`) and the programme view all use it.
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import io
import itertools
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labsuite.errors import ArchiveError, ConfigError
from labsuite.stages import EVENT_STAGE_START, StageRecord
from labsuite.steps import STEP_DTYPE

GRAVITY_M_S2 = 9.80665
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


# ---- the per-stage table ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One column of the per-stage table: name (with unit), unit and what it means."""

    name: str
    unit: str
    description: str


STAGE_COLUMNS: tuple[Column, ...] = (
    Column("index", "", "stage index in the protocol"),
    Column("stage", "", "stage name"),
    Column("kind", "", "stage kind (quiet_standing, baseline, cadence, rest, retention)"),
    Column("end_reason", "", "why the stage ended (time, steps, in_band, skipped, aborted, "
           "safety_stop, pain_stop, interrupted)"),
    Column("start_s", "s", "stage start from the session start"),
    Column("duration_s", "s", "stage end minus start (pauses included)"),
    Column("belt_speed_m_s", "m/s", "belt speed set for the stage"),
    Column("feedback_on_fraction", "", "share of the time feedback cues were on (1 full, 0 none)"),
    Column("target_cadence_spm", "steps/min", "cadence target (empty when none)"),
    Column("band_low_spm", "steps/min", "lower edge of the tolerance band"),
    Column("band_high_spm", "steps/min", "upper edge of the tolerance band"),
    Column("n_steps", "", "steps whose strike falls in the stage"),
    Column("n_crossover", "", "steps with a foot on both belts (left out of force metrics)"),
    Column("cadence_mean_spm", "steps/min", "mean of per-step cadence 60 / step_s"),
    Column("cadence_sd_spm", "steps/min", "SD (n-1) of per-step cadence 60 / step_s"),
    Column("cadence_vs_target_spm", "steps/min", "cadence_mean_spm minus the target"),
    Column("in_band_pct", "%", "steps whose rolling cadence (cadence_spm, as fed back) was in the band"),
    Column("valr_mean_bw_per_s", "BW/s", "mean vertical average loading rate"),
    Column("valr_sd_bw_per_s", "BW/s", "SD of VALR"),
    Column("vilr_mean_bw_per_s", "BW/s", "mean vertical instantaneous loading rate"),
    Column("vilr_sd_bw_per_s", "BW/s", "SD of VILR"),
    Column("peak_vgrf_mean_bw", "BW", "mean peak vertical ground reaction force"),
    Column("peak_vgrf_sd_bw", "BW", "SD of peak vertical force"),
    Column("tibial_peak_mean_g", "g", "mean peak axial tibial acceleration"),
    Column("tibial_peak_sd_g", "g", "SD of peak tibial acceleration"),
    Column("contact_mean_s", "s", "mean contact time"),
    Column("contact_sd_s", "s", "SD of contact time"),
    Column("si_step_pct", "%", "left/right symmetry of step time, 100*(L-R)/mean(L,R) of stage means"),
    Column("si_contact_pct", "%", "left/right symmetry of contact time"),
    Column("si_peak_vgrf_pct", "%", "left/right symmetry of peak vertical force"),
    Column("si_valr_pct", "%", "left/right symmetry of VALR"),
    Column("si_tibial_peak_pct", "%", "left/right symmetry of peak tibial acceleration"),
    Column("cadence_change_pct", "%", "cadence_mean_spm relative to the baseline stage"),
    Column("valr_change_pct", "%", "VALR relative to the baseline stage"),
    Column("vilr_change_pct", "%", "VILR relative to the baseline stage"),
    Column("peak_vgrf_change_pct", "%", "peak vertical force relative to the baseline stage"),
    Column("tibial_peak_change_pct", "%", "peak tibial acceleration relative to the baseline stage"),
    Column("contact_change_pct", "%", "contact time relative to the baseline stage"),
)
STAGE_COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in STAGE_COLUMNS)
_TEXT_COLUMNS = ("stage", "kind", "end_reason")

# (column stem, step field) of the force/IMU metrics summarised per stage.
_METRICS = (("valr", "valr_bw_per_s", "bw_per_s"), ("vilr", "vilr_bw_per_s", "bw_per_s"),
            ("peak_vgrf", "peak_vgrf_bw", "bw"), ("tibial_peak", "tibial_peak_g", "g"),
            ("contact", "contact_s", "s"))
_SYMMETRY = (("si_step_pct", "step_s"), ("si_contact_pct", "contact_s"),
             ("si_peak_vgrf_pct", "peak_vgrf_bw"), ("si_valr_pct", "valr_bw_per_s"),
             ("si_tibial_peak_pct", "tibial_peak_g"))
_CHANGES = (("cadence_change_pct", "cadence_mean_spm"), ("valr_change_pct", "valr_mean_bw_per_s"),
            ("vilr_change_pct", "vilr_mean_bw_per_s"), ("peak_vgrf_change_pct", "peak_vgrf_mean_bw"),
            ("tibial_peak_change_pct", "tibial_peak_mean_g"), ("contact_change_pct", "contact_mean_s"))


def _mean(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(np.mean(v)) if len(v) else math.nan


def _sd(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(np.std(v, ddof=1)) if len(v) >= 2 else math.nan


def _si(left: float, right: float) -> float:
    """Robinson symmetry index 100*(L-R)/mean(L,R); NaN when either is missing or the mean is 0."""
    mean = 0.5 * (left + right)
    if not (math.isfinite(left) and math.isfinite(right)) or mean == 0:
        return math.nan
    return 100.0 * (left - right) / mean


def _pct_change(value: float, base: float) -> float:
    if not (math.isfinite(value) and math.isfinite(base)) or base == 0:
        return math.nan
    return 100.0 * (value - base) / base


def step_cadence_spm(steps: np.ndarray) -> np.ndarray:
    """Per-step cadence 60 / step_s in steps/min (NaN where step_s is missing or not positive)."""
    step_s = np.asarray(steps["step_s"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(step_s) & (step_s > 0), 60.0 / step_s, np.nan)


def feedback_on_fraction(feedback_json: str) -> float:
    """Share of the time cues were on, from a stage's ``feedback_json`` (the protocol's cues).

    0 without cues; the fading ``on_fraction`` when faded; 1 otherwise. NaN when the JSON is unreadable.
    """
    try:
        cues = json.loads(feedback_json or "{}")
    except json.JSONDecodeError:
        return math.nan
    if not isinstance(cues, dict):
        return math.nan
    given = any(cues.get(k) for k in ("metronome", "visual_band", "loading_rate", "tibial_shock"))
    if not given:
        return 0.0
    fading = cues.get("fading")
    if isinstance(fading, dict) and "on_fraction" in fading:
        try:
            return float(fading["on_fraction"])
        except (TypeError, ValueError):
            return math.nan
    return 1.0


def steps_in_stage(steps: np.ndarray, stage: StageRecord) -> np.ndarray:
    """The steps whose strike falls in [stage.start_s, stage.end_s)."""
    strike = steps["strike_s"]
    return steps[(strike >= stage.start_s) & (strike < stage.end_s)]


def stage_table(stages: Sequence[StageRecord], steps: np.ndarray, *,
                t0_s: float | None = None) -> list[dict[str, Any]]:
    """Return one row per stage (keys :data:`STAGE_COLUMN_NAMES`), the single source of every number.

    ``steps`` is a ``STEP_DTYPE`` array; a step belongs to the stage its strike falls in. Force and
    IMU metrics leave out cross-over steps (a foot on both belts makes them invalid); cadence keeps
    them. Means and SDs ignore NaN (a step without impact peak or IMU); SD uses n-1. Symmetry is the
    Robinson index of the stage means of left and right steps. Changes are relative to the most
    recent stage of kind ``baseline`` that started at or before the row's stage. ``start_s`` counts
    from ``t0_s`` (default: the first stage's start). Missing values are NaN.
    """
    steps = np.asarray(steps)
    if steps.dtype != STEP_DTYPE:
        raise ConfigError(f"stage_table: steps must be a STEP_DTYPE array, got dtype {steps.dtype}")
    ordered = sorted(stages, key=lambda s: (s.start_s, s.index))
    if t0_s is None:
        t0_s = ordered[0].start_s if ordered else 0.0
    rows: list[dict[str, Any]] = []
    baseline: dict[str, Any] | None = None
    for st in ordered:
        mine = steps_in_stage(steps, st)
        valid = mine[~(mine["crossover"] >= 1)]
        cad = step_cadence_spm(mine)
        row: dict[str, Any] = {
            "index": st.index, "stage": st.name, "kind": st.kind, "end_reason": st.end_reason,
            "start_s": st.start_s - t0_s, "duration_s": st.end_s - st.start_s,
            "belt_speed_m_s": st.belt_speed_m_s,
            "feedback_on_fraction": feedback_on_fraction(st.feedback_json),
            "target_cadence_spm": st.target_cadence_spm,
            "band_low_spm": st.band_low_spm, "band_high_spm": st.band_high_spm,
            "n_steps": len(mine), "n_crossover": int(np.count_nonzero(mine["crossover"] >= 1)),
            "cadence_mean_spm": _mean(cad), "cadence_sd_spm": _sd(cad),
        }
        row["cadence_vs_target_spm"] = row["cadence_mean_spm"] - st.target_cadence_spm
        row["in_band_pct"] = _in_band_pct(mine, st)
        for stem, fld, unit in _METRICS:
            row[f"{stem}_mean_{unit}"] = _mean(valid[fld])
            row[f"{stem}_sd_{unit}"] = _sd(valid[fld])
        left, right = valid[valid["foot"] == 0], valid[valid["foot"] == 1]
        for col, fld in _SYMMETRY:
            row[col] = _si(_mean(left[fld]), _mean(right[fld]))
        if st.kind == "baseline":
            baseline = row
        for col, src in _CHANGES:
            row[col] = _pct_change(row[src], baseline[src]) if baseline is not None else math.nan
        rows.append(row)
    return rows


def _in_band_pct(steps: np.ndarray, st: StageRecord) -> float:
    low, high = st.band_low_spm, st.band_high_spm
    if not (math.isfinite(low) and math.isfinite(high)):
        return math.nan
    # what the feedback showed: the processor's rolling cadence, per-step cadence where it is missing
    cad = np.where(np.isfinite(steps["cadence_spm"]), steps["cadence_spm"], step_cadence_spm(steps))
    cad = cad[np.isfinite(cad)]
    if not len(cad):
        return math.nan
    return 100.0 * float(np.count_nonzero((cad >= low) & (cad <= high))) / len(cad)


def table_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = STAGE_COLUMN_NAMES) -> str:
    """Render table rows as CSV text: a header of column names, full-precision numbers, NaN empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c, math.nan)) for c in columns])
    return buf.getvalue()


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v)) if math.isfinite(v) else ""
    return str(v)


# ---- reading a session -------------------------------------------------------------------------

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
    from labsuite.archive.reader import open_session

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
        participant = str(attrs.get("participant_id", ""))
        mass_kg = float(attrs.get("mass_kg", math.nan))
        stream_info, plates, treadmill, (data_start, data_end) = _stream_summary(
            sess, need_plates=curves)

    decoded = _decode_markers(markers)
    start = next((m for m in decoded if m[1].get("event") == "session_start"), None)
    end = next((m for m in reversed(decoded) if m[1].get("event") == "session_end"), None)
    notes: list[str] = []
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
    from labsuite.errors import DeviceError
    from labsuite.streams.messages import decode

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
    from labsuite.protocol.schema import parse_protocol

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
    import yaml

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
    from labsuite.errors import DeviceError
    from labsuite.realtime.geometry import plate_axes
    from labsuite.streams.contracts import KIND_FORCE_PLATE, KIND_TREADMILL, setup_floats

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
            try:
                corners = setup_floats(sd.spec, "force_platform", "corners_m").reshape(4, 3)
            except (ValueError, DeviceError):
                continue  # no geometry: the page lists the stream but draws no curve from it
            rot = plate_axes(corners)
            labels = sd.spec.labels
            f = np.column_stack([np.asarray(sd.data[:, labels.index(k)], dtype=np.float64)
                                 for k in ("Fx", "Fy", "Fz")])
            # Vertical ground reaction on the body: minus the force on the plate, lab z component.
            vertical = -(f @ rot[2])
            if belt:
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


# ---- inline SVG plots ------------------------------------------------------------------------------

_CLIP_IDS = itertools.count(1)  # clip-path ids must be unique within a page
STAGE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
                 "#17becf", "#7f7f7f", "#bcbd22")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out, v = [], first
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


def _fmt_tick(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-9 else "0"


class SvgPlot:
    """A small x-y chart drawn as inline SVG: data coordinates in, pixels out; no dependency."""

    def __init__(self, width: int, height: int, x_range: tuple[float, float],
                 y_range: tuple[float, float], *, title: str = "", x_label: str = "",
                 y_label: str = "", margin: tuple[int, int, int, int] = (28, 16, 42, 58)) -> None:
        self.w, self.h = width, height
        self.top, self.right, self.bottom, self.left = margin
        x0, x1 = x_range
        y0, y1 = y_range
        if not (math.isfinite(x0) and math.isfinite(x1) and x1 > x0):
            x0, x1 = (x0, x0 + 1.0) if math.isfinite(x0) else (0.0, 1.0)
        if not (math.isfinite(y0) and math.isfinite(y1) and y1 > y0):
            y0, y1 = (y0 - 1.0, y0 + 1.0) if math.isfinite(y0) else (0.0, 1.0)
        self.x0, self.x1, self.y0, self.y1 = x0, x1, y0, y1
        self.title, self.x_label, self.y_label = title, x_label, y_label
        self.back: list[str] = []
        self.front: list[str] = []
        self.outside: list[str] = []  # drawn without the plot-area clip (axis labels)

    def px(self, x: Any) -> Any:
        """Data x to pixels."""
        return self.left + (np.asarray(x, dtype=float) - self.x0) / (self.x1 - self.x0) * (
            self.w - self.left - self.right)

    def py(self, y: Any) -> Any:
        """Data y to pixels (clipped to the plot area so outliers sit on its edge)."""
        yc = np.clip(np.asarray(y, dtype=float), self.y0, self.y1)
        return self.h - self.bottom - (yc - self.y0) / (self.y1 - self.y0) * (
            self.h - self.top - self.bottom)

    def band(self, x0: float, x1: float, y0: float | None, y1: float | None, fill: str,
             opacity: float = 1.0, *, back: bool = True) -> None:
        """A filled rectangle; ``y0``/``y1`` None span the whole height."""
        xa, xb = float(self.px(max(x0, self.x0))), float(self.px(min(x1, self.x1)))
        ya = float(self.py(self.y1 if y1 is None else y1))
        yb = float(self.py(self.y0 if y0 is None else y0))
        if xb <= xa or yb <= ya:
            return
        (self.back if back else self.front).append(
            f'<rect x="{xa:.1f}" y="{ya:.1f}" width="{xb - xa:.1f}" height="{yb - ya:.1f}" '
            f'fill="{fill}" fill-opacity="{opacity:g}"/>')

    def line(self, xs: Any, ys: Any, colour: str, width: float = 1.5, dash: str = "",
             opacity: float = 1.0) -> None:
        """A polyline; NaN values break it."""
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        ok = np.isfinite(xs) & np.isfinite(ys)
        if not ok.any():
            return
        px, py = self.px(xs), self.py(ys)
        parts, pen = [], False
        for i in range(len(xs)):
            if ok[i]:
                parts.append(f"{'L' if pen else 'M'}{px[i]:.1f} {py[i]:.1f}")
                pen = True
            else:
                pen = False
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        self.front.append(f'<path d="{"".join(parts)}" fill="none" stroke="{colour}" '
                          f'stroke-width="{width:g}" stroke-opacity="{opacity:g}"{dash_attr}/>')

    def area(self, xs: Any, lo: Any, hi: Any, colour: str, opacity: float = 0.15) -> None:
        """A filled area between two curves (e.g. mean ± SD)."""
        xs, lo, hi = (np.asarray(v, dtype=float) for v in (xs, lo, hi))
        ok = np.isfinite(xs) & np.isfinite(lo) & np.isfinite(hi)
        if ok.sum() < 2:
            return
        xs, lo, hi = xs[ok], lo[ok], hi[ok]
        pts = [f"{a:.1f},{b:.1f}" for a, b in zip(self.px(xs), self.py(hi), strict=True)]
        pts += [f"{a:.1f},{b:.1f}" for a, b in zip(self.px(xs[::-1]), self.py(lo[::-1]), strict=True)]
        self.back.append(f'<polygon points="{" ".join(pts)}" fill="{colour}" '
                         f'fill-opacity="{opacity:g}" stroke="none"/>')

    def dots(self, xs: Any, ys: Any, colour: str, size: float = 3.0, opacity: float = 0.6) -> None:
        """Many points as one path of zero-length round-capped segments (compact for 1000s)."""
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        ok = np.isfinite(xs) & np.isfinite(ys)
        if not ok.any():
            return
        d = "".join(f"M{a:.1f} {b:.1f}h0" for a, b in zip(self.px(xs[ok]), self.py(ys[ok]), strict=True))
        self.front.append(f'<path d="{d}" stroke="{colour}" stroke-width="{size:g}" '
                          f'stroke-linecap="round" stroke-opacity="{opacity:g}" fill="none"/>')

    def text(self, x: float, y: float, s: str, *, anchor: str = "start", size: int = 11,
             colour: str = "#333", data: bool = True, dy: float = 0.0, clip: bool = True) -> None:
        """Text at data (or pixel, ``data=False``) coordinates, shifted down by ``dy`` pixels."""
        px = float(self.px(x)) if data else x
        py = (float(self.py(y)) if data else y) + dy
        (self.front if clip else self.outside).append(
            f'<text x="{px:.1f}" y="{py:.1f}" font-size="{size}" fill="{colour}" '
            f'text-anchor="{anchor}">{html.escape(s)}</text>')

    def render(self, *, css_class: str = "plot", x_ticks: bool = True) -> str:
        """The finished ``<svg>`` element with axes, ticks and labels."""
        w, h = self.w, self.h
        x_a, x_b = self.left, w - self.right
        y_a, y_b = self.top, h - self.bottom
        axes = [f'<rect x="{x_a}" y="{y_a}" width="{x_b - x_a}" height="{y_b - y_a}" fill="none" '
                'stroke="#999" stroke-width="1"/>']
        for v in nice_ticks(self.x0, self.x1, 8) if x_ticks else []:
            p = float(self.px(v))
            axes.append(f'<line x1="{p:.1f}" y1="{y_b}" x2="{p:.1f}" y2="{y_b + 4}" stroke="#666"/>'
                        f'<text x="{p:.1f}" y="{y_b + 16}" font-size="10" text-anchor="middle" '
                        f'fill="#444">{_fmt_tick(v)}</text>')
        for v in nice_ticks(self.y0, self.y1, 5):
            p = float(self.py(v))
            axes.append(f'<line x1="{x_a}" y1="{p:.1f}" x2="{x_b}" y2="{p:.1f}" stroke="#e4e4e4"/>'
                        f'<text x="{x_a - 5}" y="{p + 3.5:.1f}" font-size="10" text-anchor="end" '
                        f'fill="#444">{_fmt_tick(v)}</text>')
        labels = []
        if self.title:
            labels.append(f'<text x="{x_a}" y="{self.top - 10}" font-size="13" font-weight="bold" '
                          f'fill="#222">{html.escape(self.title)}</text>')
        if self.x_label:
            labels.append(f'<text x="{(x_a + x_b) / 2:.1f}" y="{h - 8}" font-size="11" '
                          f'text-anchor="middle" fill="#333">{html.escape(self.x_label)}</text>')
        if self.y_label:
            cy = (y_a + y_b) / 2
            labels.append(f'<text x="14" y="{cy:.1f}" font-size="11" text-anchor="middle" fill="#333" '
                          f'transform="rotate(-90 14 {cy:.1f})">{html.escape(self.y_label)}</text>')
        clip = f"clip{next(_CLIP_IDS)}"
        return (f'<svg class="{css_class}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
                f'viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif">'
                f'<defs><clipPath id="{clip}"><rect x="{x_a}" y="{y_a - 14}" width="{x_b - x_a}" '
                f'height="{y_b - y_a + 14}"/></clipPath></defs>'
                f'<g clip-path="url(#{clip})">{"".join(self.back)}</g>{"".join(axes[1:])}'
                f'<g clip-path="url(#{clip})">{"".join(self.front)}</g>{axes[0]}{"".join(labels)}'
                f'{"".join(self.outside)}</svg>')


def _robust_range(values: Iterable[np.ndarray], extra: Iterable[float] = (), pad: float = 0.08
                  ) -> tuple[float, float]:
    vals = [np.asarray(v, dtype=float).ravel() for v in values]
    allv = np.concatenate(vals) if vals else np.empty(0)
    allv = allv[np.isfinite(allv)]
    ex = [e for e in extra if math.isfinite(e)]
    if len(allv) >= 20:
        lo, hi = float(np.percentile(allv, 0.5)), float(np.percentile(allv, 99.5))
    elif len(allv):
        lo, hi = float(allv.min()), float(allv.max())
    else:
        lo = hi = math.nan
    if ex:
        lo = min([lo, *ex]) if math.isfinite(lo) else min(ex)
        hi = max([hi, *ex]) if math.isfinite(hi) else max(ex)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return lo - pad * span, hi + pad * span


def _stage_backdrop(plot: SvgPlot, rep: SessionReport, *, label: bool = True) -> None:
    for i, st in enumerate(rep.stages):
        a, b = (st.start_s - rep.t0_s) / 60.0, (st.end_s - rep.t0_s) / 60.0
        plot.band(a, b, None, None, "#f2f2f2" if i % 2 == 0 else "#fafafa")
        if label and b - a > 0.04 * (plot.x1 - plot.x0):
            plot.text((a + b) / 2, plot.y1, st.name, anchor="middle", size=10, colour="#555", dy=12)


def plot_cadence(rep: SessionReport, width: int = 900, height: int = 260) -> str:
    """Cadence over the session: per-step dots, rolling cadence, stage bands, targets and bands."""
    steps = rep.steps
    t_min = (steps["strike_s"] - rep.t0_s) / 60.0
    cad = step_cadence_spm(steps)
    targets = [v for st in rep.stages for v in (st.band_low_spm, st.band_high_spm, st.target_cadence_spm)]
    moving = np.zeros(len(steps), dtype=bool)
    for st in rep.stages:
        if st.kind in (*MOVING_KINDS, "recording"):
            moving |= (steps["strike_s"] >= st.start_s) & (steps["strike_s"] < st.end_s)
    y = _robust_range([cad[moving] if moving.any() else cad], targets)
    x = (0.0, max((rep.t_end_s - rep.t0_s) / 60.0, 1e-3))
    plot = SvgPlot(width, height, x, y, title="Cadence", x_label="time (min)",
                   y_label="cadence (steps/min)")
    _stage_backdrop(plot, rep)
    for st in rep.stages:
        a, b = (st.start_s - rep.t0_s) / 60.0, (st.end_s - rep.t0_s) / 60.0
        if math.isfinite(st.band_low_spm) and math.isfinite(st.band_high_spm):
            plot.band(a, b, st.band_low_spm, st.band_high_spm, "#2ca02c", 0.18)
        if math.isfinite(st.target_cadence_spm):
            plot.line([a, b], [st.target_cadence_spm] * 2, "#1a7a1a", 1.5, "6 3")
    plot.dots(t_min, cad, "#1f77b4", 2.5, 0.45)
    plot.line(t_min, steps["cadence_spm"], "#0b3d6b", 1.2)
    return plot.render()


def plot_valr(rep: SessionReport, width: int = 900, height: int = 260) -> str:
    """VALR over the session: per-step dots, stage means, baseline and the loading-rate cue limit."""
    steps = rep.steps[~(rep.steps["crossover"] >= 1)]
    t_min = (steps["strike_s"] - rep.t0_s) / 60.0
    valr = steps["valr_bw_per_s"]
    base = rep.baseline_valr_bw_per_s
    if not math.isfinite(base):
        base = next((r["valr_mean_bw_per_s"] for r in rep.rows if r["kind"] == "baseline"), math.nan)
    limits = []
    for st in rep.stages:
        try:
            cue = json.loads(st.feedback_json or "{}").get("loading_rate")
        except (json.JSONDecodeError, AttributeError):
            cue = None
        if isinstance(cue, dict) and cue.get("max_percent_of_baseline") and math.isfinite(base):
            limits.append((st, base * float(cue["max_percent_of_baseline"]) / 100.0))
    y = _robust_range([valr], [base, *(v for _, v in limits)])
    x = (0.0, max((rep.t_end_s - rep.t0_s) / 60.0, 1e-3))
    plot = SvgPlot(width, height, x, y, title="Vertical average loading rate (VALR)",
                   x_label="time (min)", y_label="VALR (BW/s)")
    _stage_backdrop(plot, rep)
    plot.dots(t_min, valr, "#d62728", 2.5, 0.4)
    for st, row in zip(rep.stages, rep.rows, strict=True):
        a, b = (st.start_s - rep.t0_s) / 60.0, (st.end_s - rep.t0_s) / 60.0
        plot.line([a, b], [row["valr_mean_bw_per_s"]] * 2, "#7a1010", 2.0)
    if math.isfinite(base):
        plot.line([x[0], x[1]], [base, base], "#555", 1.0, "4 3")
    for st, lim in limits:
        a, b = (st.start_s - rep.t0_s) / 60.0, (st.end_s - rep.t0_s) / 60.0
        plot.line([a, b], [lim, lim], "#ff7f0e", 1.8, "6 3")
    return plot.render()


def plot_distributions(rep: SessionReport, field_name: str, label: str, unit: str,
                       width: int = 440, height: int = 240) -> str:
    """Per-stage box plots of one step field (box: quartiles, line: median, whiskers: 5-95 %)."""
    groups = []
    for st in rep.stages:
        mine = steps_in_stage(rep.steps, st)
        if field_name == "cadence":
            vals = step_cadence_spm(mine)
        else:
            vals = mine[~(mine["crossover"] >= 1)][field_name]
        vals = vals[np.isfinite(vals)]
        if len(vals) >= 3:
            groups.append((st.name, vals))
    if not groups:
        return ""
    y = _robust_range([g[1] for g in groups])
    plot = SvgPlot(width, height, (0.0, float(len(groups))), y, title=f"{label} per stage",
                   y_label=f"{label} ({unit})", margin=(28, 12, 46, 58))
    for i, (name, vals) in enumerate(groups):
        q05, q25, q50, q75, q95 = np.percentile(vals, [5, 25, 50, 75, 95])
        colour = STAGE_COLOURS[i % len(STAGE_COLOURS)]
        plot.line([i + 0.5, i + 0.5], [q05, q25], "#555", 1.0)
        plot.line([i + 0.5, i + 0.5], [q75, q95], "#555", 1.0)
        plot.band(i + 0.2, i + 0.8, q25, q75, colour, 0.35, back=False)
        plot.line([i + 0.2, i + 0.8], [q50, q50], "#111", 2.0)
        plot.dots([i + 0.5], [float(np.mean(vals))], "#111", 5.0, 1.0)
        plot.text(i + 0.5, plot.y0, name[:16], anchor="middle", size=10, dy=15, clip=False)
    return plot.render(x_ticks=False)


def plot_force_curves(rep: SessionReport, width: int = 440, height: int = 260) -> str:
    """Mean vertical force over stance (0-100 %) per stage, mean ± SD shaded."""
    if not rep.curves:
        return ""
    unit = rep.curves[0].unit
    y = _robust_range([c.mean + c.sd for c in rep.curves] + [c.mean - c.sd for c in rep.curves],
                      [0.0], pad=0.04)
    plot = SvgPlot(width, height, (0.0, 100.0), (min(0.0, y[0]), y[1]),
                   title="Mean vertical force over stance", x_label="stance (%)",
                   y_label=f"vertical force ({unit})")
    for i, c in enumerate(rep.curves):
        colour = STAGE_COLOURS[i % len(STAGE_COLOURS)]
        plot.area(c.percent, c.mean - c.sd, c.mean + c.sd, colour, 0.10)
        plot.line(c.percent, c.mean, colour, 2.0)
        plot.text(plot.w - plot.right - 6, plot.top + 14 + 14 * i, f"{c.stage} (n={c.n_steps})",
                  anchor="end", size=10, colour=colour, data=False)
    return plot.render()


# ---- the session page ------------------------------------------------------------------------------

_CSS = """
body{font-family:Helvetica,Arial,sans-serif;color:#222;margin:24px auto;max-width:960px;font-size:13px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:22px 0 6px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:6px 0;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f0f0f0}td.l,th.l{text-align:left}
.info td{border:none;text-align:left;padding:1px 12px 1px 0}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:8px 10px;margin:8px 0;font-weight:bold}
.ok{background:#e8f5e9;border:1px solid #5a5;padding:6px 10px;margin:8px 0}
table.prog{font-size:11px}.figs{display:flex;flex-wrap:wrap;gap:8px}.note{color:#555;font-size:11px}
figure{margin:4px 0;page-break-inside:avoid;break-inside:avoid}
svg.plot{max-width:100%;height:auto}
@media print{@page{size:A4;margin:12mm}body{margin:0;max-width:none;font-size:10.5px}
 h2{page-break-after:avoid;break-after:avoid}table,figure,.warn{page-break-inside:avoid;break-inside:avoid}
 .noprint{display:none}}
"""


def _f(v: Any, digits: int = 1, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (int, np.integer)):
        return f"{int(v)}{unit}"
    return f"{float(v):.{digits}f}{unit}"


def _pm(mean: float, sd: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if math.isfinite(sd) else f"{mean:.{digits}f}"


def _signed(v: float, digits: int = 1) -> str:
    return f"{v:+.{digits}f}" if math.isfinite(v) else "—"


def _e(s: Any) -> str:
    return html.escape(str(s))


_ASKED = {"session_start": "session start", "stage_end": "stage end", "request": "on request"}


def _stage_table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    head = ("<tr><th class=l>stage</th><th class=l>kind</th><th>start<br>(min)</th>"
            "<th>duration<br>(s)</th><th>belt<br>(m/s)</th><th>feedback</th><th>steps</th>"
            "<th>cadence<br>(steps/min)</th><th>target [band]</th><th>vs target</th><th>in band</th>"
            "<th>VALR<br>(BW/s)</th><th>VILR<br>(BW/s)</th><th>peak vGRF<br>(BW)</th>"
            "<th>tibial peak<br>(g)</th><th>contact<br>(ms)</th><th class=l>ended</th></tr>")
    body = []
    for r in rows:
        band = "—"
        if math.isfinite(r["target_cadence_spm"]):
            band = f"{r['target_cadence_spm']:.1f}"
            if math.isfinite(r["band_low_spm"]):
                band += f" [{r['band_low_spm']:.1f}–{r['band_high_spm']:.1f}]"
        fb = r["feedback_on_fraction"]
        fb_text = "none" if fb == 0 else ("—" if not math.isfinite(fb) else f"{100 * fb:.0f} %")
        body.append(
            f"<tr><td class=l>{_e(r['stage'])}</td><td class=l>{_e(r['kind'])}</td>"
            f"<td>{_f(r['start_s'] / 60, 2)}</td><td>{_f(r['duration_s'], 1)}</td>"
            f"<td>{_f(r['belt_speed_m_s'], 2)}</td><td>{fb_text}</td><td>{r['n_steps']}</td>"
            f"<td>{_pm(r['cadence_mean_spm'], r['cadence_sd_spm'], 1)}</td><td>{band}</td>"
            f"<td>{_signed(r['cadence_vs_target_spm'])}</td><td>{_f(r['in_band_pct'], 0, ' %')}</td>"
            f"<td>{_pm(r['valr_mean_bw_per_s'], r['valr_sd_bw_per_s'], 1)}</td>"
            f"<td>{_pm(r['vilr_mean_bw_per_s'], r['vilr_sd_bw_per_s'], 1)}</td>"
            f"<td>{_pm(r['peak_vgrf_mean_bw'], r['peak_vgrf_sd_bw'], 2)}</td>"
            f"<td>{_pm(r['tibial_peak_mean_g'], r['tibial_peak_sd_g'], 1)}</td>"
            f"<td>{_pm(1000 * r['contact_mean_s'], 1000 * r['contact_sd_s'], 0)}</td>"
            f"<td class=l>{_e(r['end_reason'])}</td></tr>")
    return f"<table class=stages>{head}{''.join(body)}</table>"


def _change_table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    head = ("<tr><th class=l>stage</th><th>cadence</th><th>VALR</th><th>VILR</th><th>peak vGRF</th>"
            "<th>tibial peak</th><th>contact</th><th>SI step</th><th>SI contact</th>"
            "<th>SI peak vGRF</th><th>SI VALR</th><th>SI tibial</th></tr>")
    body = []
    for r in rows:
        if r["n_steps"] == 0:
            continue
        cells = "".join(f"<td>{_signed(r[c])}</td>" for c, _ in _CHANGES)
        cells += "".join(f"<td>{_signed(r[c])}</td>" for c, _ in _SYMMETRY)
        body.append(f"<tr><td class=l>{_e(r['stage'])}</td>{cells}</tr>")
    if not body:
        return "<p class=note>No steps recorded.</p>"
    return (f"<table class=changes>{head}{''.join(body)}</table><p class=note>Change from baseline in % "
            "of the baseline stage's mean; SI: left/right symmetry index 100·(L−R)/mean(L,R) of the "
            "stage means, in % (0 symmetric, + left larger).</p>")


def _events_html(rep: SessionReport) -> str:
    parts = ["<h2>Pain check-ins</h2>"]
    if rep.checkins:
        rows = "".join(
            f"<tr><td>{_f(ev.t_s / 60, 2)}</td><td class=l>{_e(ev.stage)}</td>"
            f"<td class=l>{_e(_ASKED.get(ev.fields.get('asked_at', ''), ev.fields.get('asked_at', '')))}</td>"
            f"<td>{_e(ev.fields.get('pain', '—'))}</td><td class=l>{_e(ev.fields.get('action', ''))}</td>"
            f"</tr>" for ev in rep.checkins)
        parts.append("<table><tr><th>time (min)</th><th class=l>stage</th><th class=l>asked at</th>"
                     f"<th>pain (0–10)</th><th class=l>action</th></tr>{rows}</table>")
    else:
        parts.append("<p>No pain rating was recorded.</p>")
    if rep.unanswered_checkins:
        parts.append(f"<p class=note>{len(rep.unanswered_checkins)} check-in request(s) were not "
                     "answered.</p>")
    parts.append("<h2>Safety and session events</h2>")
    shown = [ev for ev in rep.events if ev.event not in ("session_start",)]
    if shown:
        ev_rows: list[str] = []
        for ev in shown:
            detail = {k: v for k, v in ev.fields.items() if k != "event"}
            text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in detail.items() if v is not None)
            cls = ' style="color:#b00000;font-weight:bold"' if ev.event in SAFETY_EVENTS else ""
            ev_rows.append(f"<tr{cls}><td>{_f(ev.t_s / 60, 2)}</td><td class=l>{_e(ev.event)}</td>"
                           f"<td class=l>{_e(ev.stage)}</td><td class=l>{_e(text)}</td></tr>")
        parts.append("<table><tr><th>time (min)</th><th class=l>event</th><th class=l>stage</th>"
                     f"<th class=l>details</th></tr>{''.join(ev_rows)}</table>")
    else:
        parts.append("<p>No session events recorded.</p>")
    if not any(ev.event in SAFETY_EVENTS for ev in rep.events):
        parts.append("<p class=note>No safety stop or emergency stop.</p>")
    return "".join(parts)


def _recording_html(rep: SessionReport) -> str:
    rows = "".join(
        f"<tr><td class=l>{_e(s['source_id'])}</td><td class=l>{_e(s['kind'])}</td>"
        f"<td>{s['samples']}</td><td>{_f(s['rate_hz'], 0)}</td><td>{_f(s['measured_rate_hz'], 1)}</td>"
        f"<td>{_f(s['duration_s'], 1)}</td><td>{s['gaps']}</td><td>{_f(s['gap_s'], 2)}</td></tr>"
        for s in rep.streams)
    out = ["<h2>Recording</h2>",
           f"<p>File <code>{_e(rep.path.name)}</code>; "
           f"{'closed cleanly' if rep.complete else 'NOT closed (cut short)'}"
           f"; {len(rep.steps)} steps in the step table.</p>"]
    if rows:
        out.append("<table><tr><th class=l>stream</th><th class=l>kind</th><th>samples</th>"
                   "<th>nominal Hz</th><th>measured Hz</th><th>duration (s)</th><th>gaps</th>"
                   f"<th>gap time (s)</th></tr>{rows}</table>")
    ev = [e for e in rep.recording_events if e.get("kind") not in ("late_stream",)]
    if ev:
        items = "".join(f"<li>{_e(e.get('kind', ''))} {_e(e.get('source_id', ''))}: "
                        f"{_e(str(e.get('detail', ''))[:200])}</li>" for e in ev[:30])
        more = f"<li>… and {len(ev) - 30} more</li>" if len(ev) > 30 else ""
        out.append(f"<p>Recorder events ({len(ev)}):</p><ul class=note>{items}{more}</ul>")
    return "".join(out)


def render_session_html(rep: SessionReport) -> str:
    """The session report as one self-contained HTML page (inline SVG plots, print CSS)."""
    sess = "—"
    if rep.session_number is not None:
        sess = f"{rep.session_number}" + (f" of {rep.programme_sessions}" if rep.programme_sessions else "")
        if rep.session_label:
            sess += f" ({rep.session_label})"
    date = rep.date_utc
    try:
        date = _dt.datetime.fromisoformat(rep.date_utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        pass
    speed = _f(rep.speed_m_s, 2, " m/s")
    if math.isfinite(rep.measured_speed_m_s):
        speed += f" (measured {rep.measured_speed_m_s:.2f} m/s)"
    status = {"complete": "completed", "stopped": f"ended early ({rep.end_reason})",
              "cut short": "cut short (file not closed)"}[rep.status]
    info = [("Participant", rep.participant_id), ("Protocol", rep.protocol_name or "—"),
            ("Programme", rep.programme_name or "—"), ("Session", sess), ("Date", date or "—"),
            ("Treadmill speed", speed), ("Body mass", _f(rep.body_mass_kg, 1, " kg")),
            ("Duration", _f((rep.t_end_s - rep.t0_s) / 60, 1, " min")), ("Status", status)]
    info_html = "".join(f"<tr><td><b>{_e(k)}</b></td><td>{_e(v)}</td></tr>" for k, v in info)
    warnings = "".join(f"<div class=warn>{_e(w)}</div>" for w in rep.warnings())
    if not warnings:
        warnings = "<div class=ok>Session completed as planned.</div>"
    dists = [plot_distributions(rep, "cadence", "Cadence", "steps/min"),
             plot_distributions(rep, "valr_bw_per_s", "VALR", "BW/s"),
             plot_distributions(rep, "tibial_peak_g", "Tibial peak", "g"),
             plot_distributions(rep, "contact_s", "Contact time", "s")]
    dist_html = "".join(f"<figure>{d}</figure>" for d in dists if d)
    curve = plot_force_curves(rep)
    body = [
        f"<h1>Gait retraining session report: {_e(rep.participant_id)}</h1>",
        f"<table class=info>{info_html}</table>", warnings,
        "<h2>Stages</h2>", _stage_table_html(rep.rows),
        "<p class=note>Values are mean ± SD over the steps whose strike falls in the stage. Cadence is "
        "60 / step time per step; 'in band' counts steps whose rolling cadence (as fed back) was inside "
        "the band. VALR/VILR after Milner et al. 2006 (13 % of stance when there is no impact peak, "
        "Blackmore et al. 2016); steps with a foot on both belts are left out of force metrics.</p>",
        "<h2>Change from baseline and symmetry</h2>", _change_table_html(rep.rows),
        _events_html(rep),
        "<h2>Over the session</h2>",
        f"<figure>{plot_cadence(rep)}<figcaption class=note>Dots: per-step cadence; line: rolling "
        "cadence; green: target (dashed) and tolerance band; grey: stages.</figcaption></figure>",
        f"<figure>{plot_valr(rep)}<figcaption class=note>Dots: per-step VALR; dark red: stage mean; "
        "grey dashed: baseline; orange dashed: loading-rate feedback limit.</figcaption></figure>",
        "<h2>Per stage</h2>", f"<div class=figs>{dist_html or '<p>No steps to show.</p>'}"
        f"{'<figure>' + curve + '</figure>' if curve else ''}</div>",
        "<p class=note>Boxes: quartiles; line: median; dot: mean; whiskers: 5th–95th percentile. Force "
        "curve: vertical ground reaction force from the raw force streams, each contact resampled from "
        "strike to toe-off, mean ± SD per stage.</p>",
        _recording_html(rep),
        f"<p class=note>labsuite report, generated {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}"
        f" from {_e(rep.path.name)}.</p>",
    ]
    title = f"Session report {rep.participant_id} {rep.protocol_name} {sess}"
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")


# ---- programme ------------------------------------------------------------------------------------

PROGRAMME_COLUMNS: tuple[Column, ...] = (
    Column("session_number", "", "programme session number (empty when not given)"),
    Column("file", "", "session file name"),
    Column("date_utc", "", "session start (UTC)"),
    Column("status", "", "complete, stopped (ended early) or cut short (file not closed)"),
    Column("end_reason", "", "session_end reason"),
    Column("feedback_on_fraction", "", "feedback level of the training (cadence) stages"),
    Column("training_s", "s", "time in cadence stages"),
    Column("baseline_cadence_spm", "steps/min", "baseline stage cadence"),
    Column("training_cadence_spm", "steps/min", "cadence over all cadence stages"),
    Column("retention_cadence_spm", "steps/min", "cadence over retention stages"),
    Column("retention_in_band_pct", "%", "retention steps in the band"),
    Column("baseline_valr_bw_per_s", "BW/s", "baseline stage VALR"),
    Column("training_valr_bw_per_s", "BW/s", "VALR over cadence stages"),
    Column("retention_valr_bw_per_s", "BW/s", "VALR over retention stages"),
    Column("retention_cadence_change_pct", "%", "retention cadence vs this session's baseline"),
    Column("retention_valr_change_pct", "%", "retention VALR vs this session's baseline"),
    Column("max_pain", "0-10", "highest pain rating of the session"),
)
PROGRAMME_COLUMN_NAMES = tuple(c.name for c in PROGRAMME_COLUMNS)


def _kind_stats(rep: SessionReport, kind: str) -> tuple[float, float, float, float]:
    """Cadence (mean of per-step), VALR (mean), in-band % and time over every stage of one kind."""
    stages = [st for st in rep.stages if st.kind == kind]
    if not stages:
        return math.nan, math.nan, math.nan, 0.0
    parts = [steps_in_stage(rep.steps, st) for st in stages]
    steps = np.concatenate(parts) if parts else np.empty(0, dtype=STEP_DTYPE)
    valid = steps[~(steps["crossover"] >= 1)]
    rows = [r for r in rep.rows if r["kind"] == kind]
    n_band = [(r["in_band_pct"], r["n_steps"]) for r in rows if math.isfinite(r["in_band_pct"])]
    in_band = (sum(p * n for p, n in n_band) / sum(n for _, n in n_band)
               if n_band and sum(n for _, n in n_band) else math.nan)
    return (_mean(step_cadence_spm(steps)), _mean(valid["valr_bw_per_s"]), in_band,
            float(sum(st.end_s - st.start_s for st in stages)))


def programme_table(reports: Sequence[SessionReport]) -> list[dict[str, Any]]:
    """One row per session (keys :data:`PROGRAMME_COLUMN_NAMES`), in session order."""
    rows = []
    for rep in reports:
        base_cad, base_valr, _, _ = _kind_stats(rep, "baseline")
        tr_cad, tr_valr, _, tr_s = _kind_stats(rep, "cadence")
        re_cad, re_valr, re_band, _ = _kind_stats(rep, "retention")
        fb = [r["feedback_on_fraction"] for r in rep.rows if r["kind"] == "cadence"
              and math.isfinite(r["feedback_on_fraction"])]
        pains = [int(ev.fields["pain"]) for ev in rep.checkins if ev.fields.get("pain") is not None]
        rows.append({
            "session_number": rep.session_number, "file": rep.path.name, "date_utc": rep.date_utc,
            "status": rep.status, "end_reason": rep.end_reason,
            "feedback_on_fraction": float(np.mean(fb)) if fb else math.nan, "training_s": tr_s,
            "baseline_cadence_spm": base_cad, "training_cadence_spm": tr_cad,
            "retention_cadence_spm": re_cad, "retention_in_band_pct": re_band,
            "baseline_valr_bw_per_s": base_valr, "training_valr_bw_per_s": tr_valr,
            "retention_valr_bw_per_s": re_valr,
            "retention_cadence_change_pct": _pct_change(re_cad, base_cad),
            "retention_valr_change_pct": _pct_change(re_valr, base_valr),
            "max_pain": max(pains) if pains else math.nan,
        })
    return rows


def session_files(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders (their ``*.h5`` files) and files into a sorted list; ConfigError naming a bad one."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(p.glob("*.h5"))
            if not found:
                raise ConfigError(f"{p}: folder holds no session files (*.h5)")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError(f"{p}: no such session file or folder")
    if not out:
        raise ConfigError("no session files given")
    return list(dict.fromkeys(out))


def load_programme(inputs: Sequence[str | os.PathLike[str]]) -> list[SessionReport]:
    """Read the sessions of one participant's programme, ordered by session number then date.

    ConfigError when the files belong to different participants (a report mixing two people is
    never what a clinician wants); ArchiveError naming a file that is not a session file.
    """
    reports = []
    for f in session_files(inputs):
        try:
            reports.append(load_session_report(f, curves=False))
        except ArchiveError as exc:
            raise ArchiveError(f"programme report: {exc}") from None
    people = sorted({r.participant_id for r in reports})
    if len(people) > 1:
        listing = "; ".join(f"{r.path.name}: {r.participant_id}" for r in reports)
        raise ConfigError(f"programme report: the files belong to {len(people)} participants "
                          f"({', '.join(people)}); give one participant's sessions ({listing})")
    return sorted(reports, key=lambda r: (r.session_number if r.session_number is not None else 10**6,
                                          r.date_utc))


def _programme_plot(rows: Sequence[Mapping[str, Any]], keys: Sequence[tuple[str, str, str]],
                    title: str, y_label: str, extra: Sequence[float] = ()) -> str:
    xs = np.arange(1, len(rows) + 1, dtype=float)
    series = [np.array([r[k] for r in rows], dtype=float) for k, _, _ in keys]
    y = _robust_range(series, extra)
    plot = SvgPlot(440, 250, (0.5, len(rows) + 0.5), y, title=title, x_label="session",
                   y_label=y_label)
    for (_, _label, colour), ys in zip(keys, series, strict=True):
        plot.line(xs, ys, colour, 1.8)
        plot.dots(xs, ys, colour, 7.0, 1.0)
    for i, (_, label, colour) in enumerate(keys):
        plot.text(plot.w - plot.right - 6, plot.top + 14 + 13 * i, label, anchor="end", size=10,
                  colour=colour, data=False)
    return plot.render(x_ticks=False).replace("</svg>", "".join(
        f'<text x="{float(plot.px(x)):.1f}" y="{plot.h - plot.bottom + 16}" font-size="10" '
        f'text-anchor="middle" fill="#444">{_e(_session_tick(r, i))}</text>'
        for i, (x, r) in enumerate(zip(xs, rows, strict=True))) + "</svg>")


def _session_tick(row: Mapping[str, Any], i: int) -> str:
    n = row.get("session_number")
    return str(n) if n is not None else f"#{i + 1}"


def render_programme_html(reports: Sequence[SessionReport]) -> str:
    """Progress across a programme's sessions as one self-contained HTML page."""
    rows = programme_table(reports)
    first = reports[0]
    body_rows: list[str] = []
    for r, rep in zip(rows, reports, strict=True):
        fb = r["feedback_on_fraction"]
        status = r["status"] + (": " + r["end_reason"] if r["status"] == "stopped" else "")
        body_rows.append(
            f"<tr><td>{_e(_session_tick(r, len(body_rows)))}</td><td class=l>{_e(r['date_utc'][:10])}</td>"
            f"<td class=l>{_e(rep.session_label)}</td>"
            f"<td class=l>{_e(status)}</td>"
            f"<td>{'—' if not math.isfinite(fb) else f'{100 * fb:.0f} %'}</td>"
            f"<td>{_f(r['training_s'] / 60, 1)}</td>"
            f"<td>{_f(r['baseline_cadence_spm'])}</td><td>{_f(r['training_cadence_spm'])}</td>"
            f"<td>{_f(r['retention_cadence_spm'])}</td><td>{_f(r['retention_in_band_pct'], 0, ' %')}</td>"
            f"<td>{_f(r['baseline_valr_bw_per_s'])}</td><td>{_f(r['training_valr_bw_per_s'])}</td>"
            f"<td>{_f(r['retention_valr_bw_per_s'])}</td>"
            f"<td>{_signed(r['retention_cadence_change_pct'])}</td>"
            f"<td>{_signed(r['retention_valr_change_pct'])}</td><td>{_f(r['max_pain'], 0)}</td></tr>")
    table = ("<table class=prog><tr><th>#</th><th class=l>date</th><th class=l>plan</th>"
             "<th class=l>status</th><th>feed&shy;back</th><th>train&shy;ing (min)</th>"
             "<th colspan=3>cadence (steps/min)<br>baseline · training · retention</th>"
             "<th>reten&shy;tion in band</th>"
             "<th colspan=3>VALR (BW/s)<br>baseline · training · retention</th>"
             "<th>reten&shy;tion cad. Δ%</th><th>reten&shy;tion VALR Δ%</th><th>max pain</th></tr>"
             + "".join(body_rows) + "</table>")
    cad_plot = _programme_plot(rows, (("baseline_cadence_spm", "baseline", "#555"),
                                      ("training_cadence_spm", "training", "#1f77b4"),
                                      ("retention_cadence_spm", "retention", "#2ca02c")),
                               "Cadence per session", "cadence (steps/min)")
    valr_plot = _programme_plot(rows, (("baseline_valr_bw_per_s", "baseline", "#555"),
                                       ("training_valr_bw_per_s", "training", "#d62728"),
                                       ("retention_valr_bw_per_s", "retention", "#ff7f0e")),
                                "Loading rate (VALR) per session", "VALR (BW/s)")
    fb_rows = [{**r, "feedback_pct": 100 * r["feedback_on_fraction"]} for r in rows]
    fb_plot = _programme_plot(fb_rows, (("feedback_pct", "feedback on", "#9467bd"),),
                              "Feedback level per session", "feedback on (% of time)", (0.0, 100.0))
    stopped = [r for r in rows if r["status"] != "complete"]
    warn = "".join(f"<div class=warn>Session {_e(_session_tick(r, 0))} ({_e(r['file'])}) was "
                   f"{_e(r['status'])}{': ' + _e(r['end_reason']) if r['end_reason'] else ''}.</div>"
                   for r in stopped)
    protocols = sorted({rep.protocol_name for rep in reports if rep.protocol_name})
    proto_note = (f"<div class=warn>The sessions ran different protocols: {_e(', '.join(protocols))}."
                  "</div>" if len(protocols) > 1 else "")
    title = f"Programme report {first.participant_id}"
    body = [
        f"<h1>Gait retraining programme: {_e(first.participant_id)}</h1>",
        f"<table class=info><tr><td><b>Programme</b></td><td>{_e(first.programme_name or '—')}</td></tr>"
        f"<tr><td><b>Protocol</b></td><td>{_e(', '.join(protocols) or '—')}</td></tr>"
        f"<tr><td><b>Sessions</b></td><td>{len(reports)}"
        f"{' of ' + str(first.programme_sessions) if first.programme_sessions else ''}</td></tr></table>",
        warn, proto_note, "<h2>Sessions</h2>", table,
        "<p class=note>Cadence: mean of per-step cadence over all steps of the stages of that kind; "
        "VALR: mean over valid steps; Δ%: retention relative to the same session's baseline; feedback: "
        "share of the training time with cues on.</p>",
        f"<h2>Progress</h2><div class=figs><figure>{cad_plot}</figure><figure>{valr_plot}</figure>"
        f"<figure>{fb_plot}</figure></div>",
        f"<p class=note>labsuite report --programme, {len(reports)} files: "
        f"{_e(', '.join(r.path.name for r in reports))}.</p>",
    ]
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")
