"""Reading a session file for its report: stages (rebuilt when cut short), steps, events, force curves.

Reads through :mod:`labsuite.archive.reader`, folds the markers with :mod:`labsuite.markers` (the
one list of session events and its reducer), and hands :class:`SessionReport` to the charts and the
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

from labsuite import markers as mk
from labsuite.archive.reader import open_session
from labsuite.constants import GRAVITY_M_S2
from labsuite.errors import ConfigError, LabsuiteError
from labsuite.plates import PlateGeometry, plate_axes
from labsuite.protocol.schema import parse_protocol
from labsuite.report.drift import add_drift_to_stage_rows, drift_rows
from labsuite.report.tables import stage_table, steps_in_stage
from labsuite.stages import StageRecord
from labsuite.steps import STEP_DTYPE
from labsuite.streams.contracts import KIND_FORCE_PLATE, KIND_TREADMILL

MOVING_KINDS = ("baseline", "cadence", "retention")

# Groups of markers the page lists as session events (the markers module's groups).
_SHOWN_GROUPS = (mk.GROUP_SESSION, mk.GROUP_MEASUREMENT, mk.GROUP_OPERATOR, mk.GROUP_SAFETY)
_ENDING_EVENTS = (mk.BodyWeight, mk.Baseline, mk.RecheckResult, mk.SessionEnd)  # published as a stage ends
_END_TOLERANCE_S = 0.5

@dataclass(frozen=True)
class Event:
    """One marker worth showing: time from the session start (s), event name, its fields.

    ``safety``: a stop of the belt or the session for safety (the markers' safety group).
    """

    t_s: float
    event: str
    fields: dict[str, Any]
    stage: str = ""
    safety: bool = False


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
    parts: int = 1  # files the session was recorded in (a restarted recorder adds one)
    belt_faults: int = 0  # times the belt left its commanded speed by itself (belt_fault markers)
    drift: tuple[dict[str, Any], ...] = ()  # labsuite.report.drift rows: stage x metric
    programme: dict[str, Any] | None = None  # the `programme` marker's fields (a programme session)
    recheck: dict[str, Any] | None = None  # the `recheck` marker's fields (a recheck's verdict)

    @property
    def status(self) -> str:
        """The session's state: 'complete', 'stopped', 'incomplete' or 'cut short'.

        'stopped': ended early by a rule or the operator; 'incomplete': recorded in parts with
        gaps between them; 'cut short': the file was not closed.
        """
        if not self.complete:
            return "incomplete" if self.parts > 1 else "cut short"
        if self.end_reason and self.end_reason != "completed":
            return "stopped"
        return "complete"

    def warnings(self) -> list[str]:
        """Plain-language statements about how the session ended, for the top of the page."""
        out = []
        if not self.complete and self.parts > 1:
            out.append(f"This session was recorded in {self.parts} files: the recorder was "
                       "restarted, and the data between them are missing (see the session file note "
                       "below).")
        elif not self.complete:
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
        parts = len(sess.parts)
        participant = str(attrs.get("participant_id", ""))
        mass_kg = float(attrs.get("mass_kg", math.nan))
        stream_info, plates, treadmill, (data_start, data_end) = _stream_summary(
            sess, need_plates=curves)

    decoded = mk.decode_recorded(markers)
    state = mk.replay(decoded)
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
    if state.start is not None:
        t0 = state.start_s
    elif stages:
        t0 = stages[0].start_s
    elif len(steps):
        t0 = float(steps["strike_s"][0])
    else:
        t0 = 0.0
    drift = drift_rows(stages, steps)
    rows = add_drift_to_stage_rows(stage_table(stages, steps, t0_s=t0), drift)
    programme = state.programme.fields() if state.programme is not None else None
    recheck = state.recheck.fields() if state.recheck is not None else None

    start = state.start
    protocol_name, programme_name, session_label, n_sessions = _protocol_info(attrs, start)
    session_number = int(attrs.get("session_number", -1))
    if session_number < 0 and start is not None and start.programme_session is not None:
        session_number = start.programme_session
    if n_sessions is None and start is not None and start.programme_sessions is not None:
        n_sessions = start.programme_sessions
    if not math.isfinite(mass_kg) and state.body_weight is not None:
        mass_kg = state.body_weight.mass_kg
    # the last baseline that was measured (a later failed one does not undo it)
    measured = [m for _, m in state.events if isinstance(m, mk.Baseline) and m.ok]
    base_valr = measured[-1].valr_bw_per_s if measured else math.nan

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

    asked = {r.id: r for _, r in state.requests}
    checkins = []
    for t, c in state.checkins:
        request = asked.get(c.id) if c.id is not None else None
        fields = {**c.fields(), "asked_at": request.reason if request is not None else ""}
        checkins.append(Event(t - t0, c.event, fields, (request.stage if request is not None else "")
                              or stage_at(t)))
    unanswered = [Event(t - t0, r.event, r.fields(), r.stage or stage_at(t))
                  for t, r in state.requests if r.id in state.pending_checkins]
    events = [Event(t - t0, m.event, m.fields(), stage_at(t, ending=isinstance(m, _ENDING_EVENTS)),
                    m.safety) for t, m in state.events if m.GROUP in _SHOWN_GROUPS]

    faults = [(t, m) for t, m in state.safety_events if isinstance(m, mk.BeltFault)]
    if faults:
        what = "; ".join(f"{t - t0:.1f} s into the session in {m.stage or 'no stage'} ({m.reason}, "
                         f"{_fmt_speed(m.measured_m_s)} measured, {_fmt_speed(m.commanded_m_s)} "
                         f"commanded)" for t, m in faults[:5])
        left_out = sum(int(json.loads(st.summary_json or "{}").get("steps_off_speed", 0) or 0)
                       for st in stages if st.summary_json)
        notes.insert(0, f"The belt left the speed the session commanded {len(faults)} time"
                     f"{'s' if len(faults) > 1 else ''} without being told to: {what}. Each paused "
                     f"its stage; the {left_out} steps taken then are left out of the baselines, "
                     "targets and stage figures.")
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
        end_reason=state.end_reason,
        t0_s=t0, t_end_s=t_end if math.isfinite(t_end) else t0, stages=tuple(stages), steps=steps,
        rows=tuple(rows), checkins=tuple(checkins), unanswered_checkins=tuple(unanswered),
        events=tuple(events), recording_events=rec_events, streams=tuple(stream_info),
        curves=curves_out, baseline_valr_bw_per_s=base_valr, notes=tuple(notes), parts=parts,
        belt_faults=len(faults), drift=tuple(drift), programme=programme, recheck=recheck)


def _fmt_speed(v: float) -> str:
    return f"{v:.2f} m/s" if math.isfinite(v) else "no speed"


def _complete_stages(recorded: list[StageRecord], decoded: list[tuple[float, mk.Marker]],
                     t_end: float, attrs: Mapping[str, Any]) -> list[StageRecord]:
    """Add the stage that started but never ended (a crash or a kill), ended at ``t_end``."""
    stages = sorted(recorded, key=lambda s: s.start_s)
    last_end = stages[-1].end_s if stages else -math.inf
    starts = [(t, m) for t, m in decoded if isinstance(m, mk.StageStart) and t >= last_end]
    ended = {(s.index, round(s.start_s, 6)) for s in stages}
    if starts and math.isfinite(t_end):
        t, start = starts[-1]
        if (start.index, round(t, 6)) not in ended and t_end > t:
            stages.append(StageRecord(
                index=start.index if start.index >= 0 else len(stages), name=start.name or "?",
                kind=start.kind, start_s=t, end_s=math.nextafter(t_end, math.inf),
                target_cadence_spm=start.target_cadence_spm, band_low_spm=start.band_low_spm,
                band_high_spm=start.band_high_spm, belt_speed_m_s=start.belt_speed_m_s,
                end_reason="interrupted", feedback_json=_stage_feedback_json(attrs, start.name)))
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


def _protocol_info(attrs: Mapping[str, Any], start: mk.SessionStart | None
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
        name = name or start.protocol
        programme = programme or (start.programme or "")
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
