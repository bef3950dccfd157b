"""Every session event once: its name, its fields, encoding and decoding, and one reducer.

The stage machine (``protocol/machine.py``) builds these events and the session publishes them as
JSON strings on ``labsuite-session-<lab>-markers``; the recorder stores them; the console
(``feedback/feed.py``), the terminal (``cli/run.py``), the simulated participant and the report
read them back with :func:`decode` and fold them into a :class:`SessionState` with
:meth:`SessionState.apply`. Treadmill commands (speed, stop, emergency_stop, heartbeat, incline)
are not markers: they go to the treadmill driver on the commands stream and are defined in
:mod:`labsuite.streams.messages`, beside the JSON encoding both streams use; operator commands
(pause, skip, pain ...) are in :mod:`labsuite.protocol.operator`.

A new kind of event is one class here (``class X(Marker, event="x", group=...)`` with typed
fields and defaults) and, when it changes the state, one function under ``@_reduces(X)``.
Events of a safety group land in :attr:`SessionState.safety_events` and :attr:`SessionState.alert`
with no function at all; events this version does not know decode to :class:`Other`, are
counted and otherwise ignored, so older programs read newer files.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from labsuite.errors import DeviceError, LabsuiteError

# The stage pair's names live with the stage record, metronome and beat beside the treadmill
# commands, until the report (labsuite/report.py) reads markers through this module.
from labsuite.stages import EVENT_STAGE_END, EVENT_STAGE_START, STAGE_FIELD_NAMES, StageRecord
from labsuite.streams.messages import EVENT_BEAT, EVENT_METRONOME
from labsuite.streams.messages import decode as decode_json
from labsuite.streams.messages import encode as encode_json

# Groups: what an event is about. The report lists the session, measurement, operator and safety
# groups as session events; the console's event log lists every group but the frequent ones.
GROUP_SESSION = "session"
GROUP_STAGE = "stage"
GROUP_CUE = "cue"
GROUP_MEASUREMENT = "measurement"
GROUP_CHECKIN = "checkin"
GROUP_OPERATOR = "operator"
GROUP_SAFETY = "safety"
GROUP_BELT = "belt"
GROUP_OTHER = "other"

# Fields left out of one-line descriptions (long text a log line cannot hold).
_LONG_FIELDS = ("instructions", "summary_json", "feedback_json")

_EVENTS: dict[str, type[Marker]] = {}
_M = TypeVar("_M", bound="Marker")


# ---- field conversion (decoding is lenient: a bad value becomes the default and a problem) ---------

def _to_float(v: Any) -> float:
    if v is None:
        return math.nan
    if isinstance(v, (int, float)):  # bool is an int: true/false read as 1/0
        return float(v)
    raise ValueError("expected a number or null")


def _to_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
        raise ValueError("expected an integer")
    return int(v)


def _to_str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        raise ValueError("expected text")
    return str(v)


def _to_bool(v: Any) -> bool:
    if not isinstance(v, (bool, int)):
        raise ValueError("expected true or false")
    return bool(v)


def _optional(conv: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else conv(v)


def _to_str_tuple(v: Any) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)):
        raise ValueError("expected a list of text")
    return tuple(str(x) for x in v)


# Annotations as written in the classes below (this module postpones their evaluation).
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "float": _to_float, "int": _to_int, "str": _to_str, "bool": _to_bool,
    "float | None": _optional(_to_float), "int | None": _optional(_to_int),
    "str | None": _optional(_to_str), "tuple[str, ...]": _to_str_tuple,
}


# ---- the events ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Marker:
    """One session event. Subclasses name it (``event=``) and declare its fields with defaults.

    ``extra`` keeps fields this version does not know (a newer writer), ``problems`` the fields
    that could not be read (their default was used instead); neither takes part in equality.
    """

    EVENT: ClassVar[str] = ""
    GROUP: ClassVar[str] = GROUP_OTHER
    FREQUENT: ClassVar[bool] = False  # several a second (beats, cues, belt): no event-log line

    extra: Mapping[str, Any] = field(default_factory=dict, kw_only=True, compare=False, repr=False)
    problems: tuple[str, ...] = field(default=(), kw_only=True, compare=False, repr=False)

    def __init_subclass__(cls, *, event: str = "", group: str = GROUP_OTHER, frequent: bool = False,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.GROUP = group
        cls.FREQUENT = frequent
        if event:
            if event in _EVENTS:
                raise TypeError(f"marker event {event!r} is defined twice")
            cls.EVENT = event
            _EVENTS[event] = cls

    @property
    def event(self) -> str:
        """The event name (the ``event`` field of the JSON)."""
        return self.EVENT

    @property
    def safety(self) -> bool:
        """True for a safety event (a stop of the belt or the session for safety)."""
        return self.GROUP == GROUP_SAFETY

    def fields(self) -> dict[str, Any]:
        """The event's fields as a JSON-ready mapping (without ``event``), in declaration order."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("extra", "problems")}
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    def encode(self) -> str:
        """The marker as one compact JSON string (NaN as null), e.g. ``{"event":"beat","n":3,...}``."""
        return encode_json("event", self.event, **self.fields())

    def describe(self) -> str:
        """One line for an event log: ``name: field=value, ...`` (long text left out)."""
        text = ", ".join(f"{k}={v}" for k, v in self.fields().items() if k not in _LONG_FIELDS)
        return f"{self.event}: {text}"[:200]

    @classmethod
    def _from_fields(cls: type[_M], obj: Mapping[str, Any], *, strict: bool) -> _M:
        known = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("extra", "problems")}
        kwargs: dict[str, Any] = {}
        problems = []
        for name, f in known.items():
            if name not in obj:
                continue
            conv = _CONVERTERS[str(f.type)]
            try:
                kwargs[name] = conv(obj[name])
            except ValueError as exc:
                problem = f"{cls.EVENT} marker field {name!r}: {exc}, got {obj[name]!r}"
                if strict:
                    raise DeviceError(problem) from None
                problems.append(problem)
        extra = {k: v for k, v in obj.items() if k != "event" and k not in known}
        return cls(**kwargs, extra=extra, problems=tuple(problems))


@dataclass(frozen=True)
class Other(Marker):
    """A marker this version does not know (another program's, or a newer labsuite's)."""

    name: str = ""

    @property
    def event(self) -> str:
        """The event name as sent."""
        return self.name

    def fields(self) -> dict[str, Any]:
        """The fields as sent."""
        return dict(self.extra)


@dataclass(frozen=True)
class SessionStart(Marker, event="session_start", group=GROUP_SESSION):
    """The session began: protocol, participant, in a programme which session, who makes the beats."""

    protocol: str = ""
    participant: str = ""
    programme: str | None = None
    programme_session: int | None = None
    programme_sessions: int | None = None
    stages: int = 0
    # with a metronome cue: 'audio' (the beats are the audio metronome's clicks) or 'timer'
    # (--no-sound: the session's timer beats, nobody heard them); None without a metronome
    beats: str | None = None
    auto_resume: bool = False  # resumes by itself after a lost device is back (scripted studies)


@dataclass(frozen=True)
class SessionEnd(Marker, event="session_end", group=GROUP_SESSION):
    """The session ended.

    ``reason``: completed, aborted, baseline_failed, pain_stop, emergency_stop or
    ``safety_stop:<why>``.
    """

    reason: str = ""
    stages_run: int = 0


@dataclass(frozen=True)
class StageStart(Marker, event=EVENT_STAGE_START, group=GROUP_STAGE):
    """A stage began; targets are NaN (null) when the stage has none."""

    index: int = -1
    name: str = ""
    kind: str = ""
    duration_s: float = math.nan
    target_cadence_spm: float = math.nan
    band_low_spm: float = math.nan
    band_high_spm: float = math.nan
    belt_speed_m_s: float = math.nan
    instructions: str = ""


_STAGE_RECORD_DEFAULTS = {"index": -1, "name": "", "kind": "", "start_s": None, "end_s": None}


@dataclass(frozen=True)
class StageEnd(Marker, event=EVENT_STAGE_END, group=GROUP_STAGE):
    """A stage ended: the marker carries its whole :class:`~labsuite.stages.StageRecord`."""

    record: StageRecord = field(default_factory=lambda: StageRecord(-1, "", "", math.nan, math.nan))

    def fields(self) -> dict[str, Any]:
        """The record's fields (NaN as null)."""
        return {**self.record.to_marker_fields(),
                **{k: v for k, v in self.extra.items() if k not in self.record.to_marker_fields()}}

    @classmethod
    def _from_fields(cls: type[_M], obj: Mapping[str, Any], *, strict: bool) -> _M:
        problems: tuple[str, ...] = ()
        try:
            # lenient: a record missing its times still names the stage that ended
            record = StageRecord.from_marker(dict(obj) if strict else {**_STAGE_RECORD_DEFAULTS, **obj})
        except LabsuiteError as exc:  # StageRecord names the bad field
            if strict:
                raise DeviceError(str(exc)) from None
            record = StageRecord(-1, str(obj.get("name") or ""), "", math.nan, math.nan,
                                 end_reason=str(obj.get("end_reason") or ""))
            problems = (str(exc),)
        extra = {k: v for k, v in obj.items() if k != "event" and k not in STAGE_FIELD_NAMES}
        return cls(record=record, extra=extra, problems=problems)  # type: ignore[call-arg]


@dataclass(frozen=True)
class Cue(Marker, event="cue", group=GROUP_CUE, frequent=True):
    """What the participant is cued with now; published when it changes (fading switches it)."""

    stage: str = ""
    feedback_on: bool = False
    metronome_spm: float | None = None
    band_low_spm: float = math.nan
    band_high_spm: float = math.nan
    target_spm: float = math.nan
    valr_max_bw_per_s: float = math.nan
    tibial_max_g: float = math.nan


@dataclass(frozen=True)
class Metronome(Marker, event=EVENT_METRONOME, group=GROUP_CUE, frequent=True):
    """The metronome's state: ``spm`` None is off; the click the protocol asks for; the flash.

    Published when it changes and, while the audio metronome plays, again every few seconds with
    ``again`` true (a restarted metronome role picks the beat up from it). ``sound``, ``volume_db``,
    ``ear`` and ``tone_hz`` are the cue's click settings (None: the metronome's defaults);
    ``flash`` asks the participant display to flash on every beat.
    """

    spm: float | None = None
    sound: str | None = None
    volume_db: float | None = None
    ear: str | None = None
    tone_hz: float | None = None
    flash: bool = False
    again: bool = False


BEAT_CLOCK_DAC = "dac"  # a click of the audio metronome, stamped with its DAC time
BEAT_CLOCK_TIMER = "timer"  # the session's own timer (no sound: ``--no-sound``); nobody heard it


@dataclass(frozen=True)
class Beat(Marker, event=EVENT_BEAT, group=GROUP_CUE, frequent=True):
    """One metronome beat, stamped with the time it is heard (its DAC time) or, silent, is due.

    ``clock`` says which: ``dac`` (the audio metronome role's click; ``dac_lsl_s`` is the same
    time, ``lead_s`` how long before it the click was written, ``segment`` the device-timing
    segment) or ``timer`` (the session's timer with ``--no-sound``: no click was played).
    """

    n: int | None = None
    spm: float = math.nan
    clock: str = ""
    ear: str | None = None
    sound: str | None = None
    dac_lsl_s: float | None = None
    lead_s: float | None = None
    segment: int | None = None

    def fields(self) -> dict[str, Any]:
        """The fields, without those that do not apply to this beat's clock (None, or no clock)."""
        return {k: v for k, v in super().fields().items() if v is not None and not (k == "clock" and not v)}


@dataclass(frozen=True)
class BeatDisrupted(Marker, event="beat_disrupted", group=GROUP_CUE):
    """The audio metronome's timing broke while beat ``n`` was in flight: its time may be wrong.

    Published by the audio role (an underflow, a stalled sound server), stamped when it became
    known; ``hindsight_dac_lsl_s`` is the time the beat marker had reported.
    """

    n: int | None = None
    hindsight_dac_lsl_s: float = math.nan


@dataclass(frozen=True)
class Baseline(Marker, event="baseline", group=GROUP_MEASUREMENT):
    """The baseline measured at the end of a baseline stage (``ok`` false: too few steps)."""

    ok: bool = False
    n_steps: int = 0
    cadence_spm: float = math.nan
    valr_bw_per_s: float = math.nan
    tibial_peak_g: float = math.nan
    detail: str = ""
    vilr_bw_per_s: float = math.nan
    contact_s: float = math.nan
    strike_pattern: str | None = None  # the most common pattern of the steps (None: not known)


@dataclass(frozen=True)
class ProgrammeDecision(Marker, event="programme", group=GROUP_SESSION):
    """Where this session stands in its programme, published right after ``session_start``.

    ``kind`` training or recheck; ``action`` (labsuite/protocol/progression.py): fixed, first,
    advance, hold, step_back or recheck; ``step`` the progression step (1-based) and its
    ``step_percent``; the programme baseline this session's ``of: programme_baseline`` targets use
    (NaN in the first session: its own baseline becomes the programme's).
    """

    kind: str = ""
    action: str = ""
    step: int | None = None
    step_percent: float = math.nan
    reason: str = ""
    sessions_done: int = 0
    recheck: int | None = None
    baseline_cadence_spm: float = math.nan
    baseline_valr_bw_per_s: float = math.nan
    retrained_target_spm: float = math.nan


@dataclass(frozen=True)
class Drift(Marker, event="drift", group=GROUP_MEASUREMENT):
    """A stage's drift rule fired: the metric's last window against its first; ``action`` end or pause."""

    stage: str = ""
    metric: str = ""
    first_mean: float = math.nan
    last_mean: float = math.nan
    change_pct: float = math.nan
    limit_pct: float = math.nan
    action: str = ""


@dataclass(frozen=True)
class RecheckResult(Marker, event="recheck", group=GROUP_MEASUREMENT):
    """A recheck's verdict at the end of its run: gain lost, VALR rise and the regression flag."""

    number: int = 0
    cadence_spm: float = math.nan
    valr_bw_per_s: float = math.nan
    baseline_cadence_spm: float = math.nan
    retrained_target_spm: float = math.nan
    retrained_valr_bw_per_s: float = math.nan
    gain_lost_pct: float = math.nan
    valr_rise_pct: float = math.nan
    regression: bool = False
    reason: str = ""


@dataclass(frozen=True)
class BodyWeight(Marker, event="body_weight", group=GROUP_MEASUREMENT):
    """The weigh-in of a quiet-standing stage: mean vertical force and the mass it means."""

    mass_kg: float = math.nan
    force_n: float = math.nan
    samples: int = 0


@dataclass(frozen=True)
class CheckinRequest(Marker, event="checkin_request", group=GROUP_CHECKIN):
    """A pain rating 0-10 is asked for; ``reason``: session_start, stage_end or request."""

    id: int = 0
    reason: str = ""
    stage: str | None = None
    question: str = ""


@dataclass(frozen=True)
class Checkin(Marker, event="checkin", group=GROUP_CHECKIN):
    """A pain rating was given; ``action`` is what the protocol's rules made of it."""

    id: int | None = None
    pain: int | None = None
    first_pain: int | None = None
    action: str = ""
    source: str = ""


@dataclass(frozen=True)
class Operator(Marker, event="operator", group=GROUP_OPERATOR):
    """The operator asked for something (pause, resume, skip, abort, checkin)."""

    action: str = ""
    source: str = ""


@dataclass(frozen=True)
class Paused(Marker, event="paused", group=GROUP_OPERATOR):
    """The session paused: stage clock frozen, metronome off, belt ramped down.

    ``reason``: operator, pain, ...
    """

    reason: str = ""
    stage: str = ""


@dataclass(frozen=True)
class Resumed(Marker, event="resumed", group=GROUP_OPERATOR):
    """The session resumed after a pause."""

    stage: str = ""


@dataclass(frozen=True)
class DecisionRequired(Marker, event="operator_decision_required", group=GROUP_OPERATOR):
    """The session waits for the operator to choose one of ``options`` (after a pain pause)."""

    reason: str = ""
    pain: int | None = None
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class SafetyStop(Marker, event="safety_stop", group=GROUP_SAFETY):
    """A safety rule stopped the belt (force_timeout, no_contact, device_lost, ...).

    ``device``: the role or data that went missing (``force``, ``sim-fp-left``, ``recorder``) when
    the stop is for a lost device; the session then pauses until it is back, else it ends.
    """

    reason: str = ""
    detail: str = ""
    device: str = ""


@dataclass(frozen=True)
class DeviceBack(Marker, event="device_back", group=GROUP_SESSION):
    """A device that went missing is back (its data flow again); ``down_s`` how long it was gone."""

    device: str = ""
    lost_at_s: float = math.nan
    down_s: float = math.nan


@dataclass(frozen=True)
class RecordingGap(Marker, event="recording_gap", group=GROUP_SESSION):
    """The recorder was restarted: it records again in part ``part`` (``file``) of the session.

    ``lost_at_s`` is when the session saw it die and ``gap_s`` the time until it recorded again:
    what the streams sent in between is not in the session's files, except the session's own
    markers of that time, which ``missed`` repeats (each as published, JSON, with its ``t_s``).
    """

    part: int = 0
    file: str = ""
    lost_at_s: float = math.nan
    gap_s: float = math.nan
    missed: tuple[str, ...] = ()


@dataclass(frozen=True)
class BeltFault(Marker, event="belt_fault", group=GROUP_SAFETY):
    """The belt left the speed the session commanded without being told to; the stage pauses.

    ``reason``: off_speed (the measured speed said so), treadmill_silent (no belt speed while it
    should run: the driver stopped or died) or the treadmill driver's own event
    (treadmill_watchdog_stop, treadmill_feedback_fault ...). Steps struck from ``since_s`` on are
    left out of baselines and targets.
    """

    reason: str = ""
    detail: str = ""
    stage: str = ""
    commanded_m_s: float = math.nan
    measured_m_s: float = math.nan
    since_s: float = math.nan
    steps_left_out: int = 0


@dataclass(frozen=True)
class AwaitingStart(Marker, event="awaiting_start", group=GROUP_OPERATOR):
    """The belt is about to move for ``stage`` and waits for the operator's Start."""

    stage: str = ""
    speed_m_s: float = math.nan


@dataclass(frozen=True)
class StartAuthorised(Marker, event="start_authorised", group=GROUP_OPERATOR):
    """The belt may move: the operator pressed Start, or a scripted study lets it start by itself.

    ``source``: gui, cli ... for the operator's Start; with ``auto`` true, who allowed it
    (``--auto-start``, ``protocol``).
    """

    source: str = ""
    auto: bool = False
    stage: str = ""


@dataclass(frozen=True)
class EmergencyStop(Marker, event="emergency_stop", group=GROUP_SAFETY):
    """The emergency stop was sent to the treadmill (``source``: cli, gui, api ...)."""

    source: str = ""


@dataclass(frozen=True)
class Belt(Marker, event="belt", group=GROUP_BELT, frequent=True):
    """The belt speed the session commanded (m/s) and the ramp it asked for (m/s²)."""

    speed_m_s: float = math.nan
    accel_m_s2: float = math.nan


# ---- decoding ------------------------------------------------------------------------------------

def from_fields(obj: Mapping[str, Any], *, strict: bool = False) -> Marker:
    """The marker of a decoded JSON object (``{"event": name, ...}``); :class:`Other` if unknown.

    Lenient by default: a field that cannot be read keeps its default and is named in
    ``marker.problems``. ``strict=True`` raises DeviceError naming the event and the field instead.
    """
    name = obj.get("event")
    cls = _EVENTS.get(name) if isinstance(name, str) else None
    if cls is None:
        return Other(name=str(name if name is not None else ""),
                     extra={k: v for k, v in obj.items() if k != "event"})
    return cls._from_fields(obj, strict=strict)


def decode(text: str, *, strict: bool = False) -> Marker:
    """Decode one marker string; DeviceError naming the text if it is not a JSON object.

    Plain text from another LSL program becomes an :class:`Other` named by that text.
    """
    return from_fields(decode_json(text), strict=strict)


def decode_recorded(rows: Iterable[Mapping[str, Any]]) -> list[tuple[float, Marker]]:
    """Decode recorded markers (rows with ``time_s`` and ``text``, as a session file keeps them).

    Returns (time_s, marker) pairs in the rows' order; a malformed marker is left out (it stays in
    the file: readers show what they can read).
    """
    out = []
    for row in rows:
        try:
            marker = decode(str(row["text"]))
        except DeviceError:
            continue
        out.append((float(row["time_s"]), marker))
    return out


def event_kinds() -> dict[str, type[Marker]]:
    """Every event this version knows, by name (the vocabulary of ``docs/protocols.md``)."""
    return dict(_EVENTS)


# ---- the reducer ---------------------------------------------------------------------------------

_STAGE = {"stage": True}  # fields reset when a stage starts


@dataclass
class SessionState:
    """What the markers said about a session so far; fold markers in with :meth:`apply`.

    Times are LSL seconds (the markers' timestamps). Fields marked per stage are reset when a
    stage starts; the others hold for the whole session.
    """

    state: str = "waiting"  # waiting, running, paused, finished
    protocol: str = ""
    start: SessionStart | None = None
    start_s: float = math.nan
    end: SessionEnd | None = None
    end_reason: str = ""
    # the stage now
    stage_index: int = field(metadata=_STAGE, default=-1)
    stage_name: str = field(metadata=_STAGE, default="")
    stage_kind: str = field(metadata=_STAGE, default="")
    stage_duration_s: float = field(metadata=_STAGE, default=math.nan)
    stage_start_s: float = field(metadata=_STAGE, default=math.nan)
    target_spm: float = field(metadata=_STAGE, default=math.nan)
    band_spm: tuple[float, float] = field(metadata=_STAGE, default=(math.nan, math.nan))
    belt_speed_m_s: float = field(metadata=_STAGE, default=math.nan)  # the stage's belt speed
    instructions: str = field(metadata=_STAGE, default="")
    paused_s: float = field(metadata=_STAGE, default=0.0)  # closed pauses in this stage
    paused_since_s: float = field(metadata=_STAGE, default=math.nan)
    pause_reason: str = field(metadata=_STAGE, default="")
    decision: DecisionRequired | None = field(metadata=_STAGE, default=None)
    # cues
    feedback_on: bool = field(metadata=_STAGE, default=False)
    cue_band: tuple[float, float] | None = field(metadata=_STAGE, default=None)
    cue_target_spm: float = field(metadata=_STAGE, default=math.nan)
    valr_max_bw_per_s: float = field(metadata=_STAGE, default=math.nan)
    tibial_max_g: float = field(metadata=_STAGE, default=math.nan)
    metronome_spm: float | None = field(metadata=_STAGE, default=None)
    metronome_flash: bool = field(metadata=_STAGE, default=False)  # the display flashes on beats
    beat_n: int = 0
    beat_s: float = math.nan  # LSL time of the last beat
    belt_command_m_s: float = math.nan  # the last speed the session commanded
    awaiting_start: bool = False  # the belt waits for the operator's Start
    start_authorised: StartAuthorised | None = None
    # check-ins and measurements
    pending_checkins: tuple[int, ...] = ()
    requests: tuple[tuple[float, CheckinRequest], ...] = ()
    checkins: tuple[tuple[float, Checkin], ...] = ()
    baseline: Baseline | None = None
    body_weight: BodyWeight | None = None
    programme: ProgrammeDecision | None = None
    recheck: RecheckResult | None = None
    # what happened
    records: tuple[StageRecord, ...] = ()
    safety_events: tuple[tuple[float, Marker], ...] = ()
    alert: str = field(metadata=_STAGE, default="")
    events: tuple[tuple[float, Marker], ...] = ()  # every marker that is not FREQUENT
    unknown: int = 0  # markers of kinds this version does not know
    problems: int = 0  # markers with fields that could not be read

    def apply(self, t_s: float, marker: Marker) -> None:
        """Fold one marker stamped ``t_s`` into the state."""
        if marker.problems:
            self.problems += 1
        if isinstance(marker, Other):
            self.unknown += 1
        if not marker.FREQUENT:
            self.events = (*self.events, (t_s, marker))
        reduce = _REDUCERS.get(type(marker))
        if reduce is not None:
            reduce(self, t_s, marker)
        if marker.safety:
            self.safety_events = (*self.safety_events, (t_s, marker))
            self.alert = marker.describe()

    def copy(self) -> SessionState:
        """A copy for another thread (the tuples inside are shared: they never change)."""
        return dataclasses.replace(self)

    # ---- derived ---------------------------------------------------------------------------
    @property
    def stages_done(self) -> tuple[tuple[str, str], ...]:
        """(name, end_reason) of every stage ended so far."""
        return tuple((r.name, r.end_reason) for r in self.records)

    @property
    def baseline_valr_bw_per_s(self) -> float:
        """The baseline VALR (BW/s), NaN until a baseline was measured."""
        return self.baseline.valr_bw_per_s if self.baseline is not None and self.baseline.ok else math.nan

    def active_s(self, now_s: float) -> float:
        """Active (unpaused) time in the current stage at LSL time ``now_s``."""
        if not math.isfinite(self.stage_start_s):
            return math.nan
        paused = self.paused_s + (now_s - self.paused_since_s if math.isfinite(self.paused_since_s)
                                  else 0.0)
        return max(0.0, now_s - self.stage_start_s - paused)

    def time_left_s(self, now_s: float) -> float:
        """Stage time left at ``now_s`` (NaN when no stage)."""
        return max(0.0, self.stage_duration_s - self.active_s(now_s))

    def _close_pause(self, t_s: float) -> None:
        if math.isfinite(self.paused_since_s):
            self.paused_s += max(0.0, t_s - self.paused_since_s)
        self.paused_since_s = math.nan


def replay(markers: Iterable[tuple[float, Marker]]) -> SessionState:
    """The state after a whole stream of (LSL time, marker), e.g. a session file's markers."""
    state = SessionState()
    for t_s, marker in markers:
        state.apply(t_s, marker)
    return state


_REDUCERS: dict[type[Marker], Callable[[SessionState, float, Any], None]] = {}
_R = TypeVar("_R", bound=Callable[..., None])


def _reduces(cls: type[Marker]) -> Callable[[_R], _R]:
    def register(fn: _R) -> _R:
        _REDUCERS[cls] = fn
        return fn
    return register


@_reduces(SessionStart)
def _session_start(s: SessionState, t_s: float, m: SessionStart) -> None:
    s.state, s.protocol, s.start, s.start_s = "running", m.protocol, m, t_s


@_reduces(StageStart)
def _stage_start(s: SessionState, t_s: float, m: StageStart) -> None:
    for f in dataclasses.fields(s):
        if f.metadata.get("stage"):
            setattr(s, f.name, f.default)
    if s.state != "finished":
        s.state = "running"
    s.stage_index, s.stage_name, s.stage_kind = m.index, m.name, m.kind
    s.stage_duration_s, s.stage_start_s = m.duration_s, t_s
    s.target_spm, s.band_spm = m.target_cadence_spm, (m.band_low_spm, m.band_high_spm)
    s.belt_speed_m_s, s.instructions = m.belt_speed_m_s, m.instructions


@_reduces(StageEnd)
def _stage_end(s: SessionState, t_s: float, m: StageEnd) -> None:
    s.records = (*s.records, m.record)


@_reduces(Cue)
def _cue(s: SessionState, t_s: float, m: Cue) -> None:
    low, high = m.band_low_spm, m.band_high_spm
    s.feedback_on = m.feedback_on
    s.cue_band = (low, high) if math.isfinite(low) and math.isfinite(high) else None
    s.cue_target_spm, s.metronome_spm = m.target_spm, m.metronome_spm
    s.valr_max_bw_per_s, s.tibial_max_g = m.valr_max_bw_per_s, m.tibial_max_g


@_reduces(Metronome)
def _metronome(s: SessionState, t_s: float, m: Metronome) -> None:
    s.metronome_spm, s.metronome_flash = m.spm, m.flash and m.spm is not None


@_reduces(Beat)
def _beat(s: SessionState, t_s: float, m: Beat) -> None:
    s.beat_n = m.n if m.n is not None else s.beat_n + 1
    s.beat_s = t_s


@_reduces(Belt)
def _belt(s: SessionState, t_s: float, m: Belt) -> None:
    s.belt_command_m_s = m.speed_m_s


@_reduces(AwaitingStart)
def _awaiting_start(s: SessionState, t_s: float, m: AwaitingStart) -> None:
    s.awaiting_start = True


@_reduces(StartAuthorised)
def _start_authorised(s: SessionState, t_s: float, m: StartAuthorised) -> None:
    s.awaiting_start, s.start_authorised = False, m


@_reduces(Paused)
def _paused(s: SessionState, t_s: float, m: Paused) -> None:
    s.state, s.paused_since_s, s.pause_reason = "paused", t_s, m.reason


@_reduces(Resumed)
def _resumed(s: SessionState, t_s: float, m: Resumed) -> None:
    s._close_pause(t_s)
    s.state, s.pause_reason, s.decision = "running", "", None


@_reduces(DecisionRequired)
def _decision(s: SessionState, t_s: float, m: DecisionRequired) -> None:
    s.decision = m


@_reduces(CheckinRequest)
def _checkin_request(s: SessionState, t_s: float, m: CheckinRequest) -> None:
    s.pending_checkins = (*s.pending_checkins, m.id)
    s.requests = (*s.requests, (t_s, m))


@_reduces(Checkin)
def _checkin(s: SessionState, t_s: float, m: Checkin) -> None:
    pending = list(s.pending_checkins)
    if m.id in pending:
        pending.remove(m.id)
    elif m.id is None and pending:
        pending.pop(0)  # an answer that names no check-in answers the oldest
    s.pending_checkins = tuple(pending)
    s.checkins = (*s.checkins, (t_s, m))


@_reduces(Baseline)
def _baseline(s: SessionState, t_s: float, m: Baseline) -> None:
    s.baseline = m


@_reduces(ProgrammeDecision)
def _programme(s: SessionState, t_s: float, m: ProgrammeDecision) -> None:
    s.programme = m


@_reduces(RecheckResult)
def _recheck(s: SessionState, t_s: float, m: RecheckResult) -> None:
    s.recheck = m


@_reduces(BodyWeight)
def _body_weight(s: SessionState, t_s: float, m: BodyWeight) -> None:
    s.body_weight = m


@_reduces(SessionEnd)
def _session_end(s: SessionState, t_s: float, m: SessionEnd) -> None:
    s.state, s.end, s.end_reason = "finished", m, m.reason
    s.feedback_on, s.metronome_spm, s.metronome_flash, s.decision = False, None, False, None
    s.awaiting_start = False
    s._close_pause(t_s)
