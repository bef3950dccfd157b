"""The session stage machine: a plain synchronous object driven by the LSL clock and step records.

``feed(now_s, steps)`` (and the operator/safety methods) return :class:`Action` lists — markers and
treadmill commands, already JSON-encoded — that :mod:`labsuite.protocol.session` publishes over LSL.
It knows nothing of LSL, threads or terminals, so every rule is unit-testable with plain arrays.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labsuite import markers as mk
from labsuite.constants import GRAVITY_M_S2
from labsuite.errors import ConfigError
from labsuite.protocol import progression as prog
from labsuite.protocol.belt import BeltPlan, BeltWatch, OffSpeed
from labsuite.protocol.schema import (
    DRIFT_SETTLE_S,
    PROGRAMME_BASELINE,
    PROGRESSION,
    RECHECK_STAGE,
    BaselineStage,
    CadenceStage,
    Metronome,
    Protocol,
    RetentionStage,
)
from labsuite.stages import StageRecord
from labsuite.steps import PATTERN_NAMES, STEP_DTYPE, metric_values
from labsuite.streams import messages as msg

DEFAULT_BAND_PERCENT = 3.0
SUMMARY_LAST_STEPS = 30
MIN_BASELINE_STEPS = 5
# A weigh-in outside this range, or further than WEIGH_IN_TOLERANCE from the given mass, stops the
# session before the belt moves (empty plates, a participant half off them, a wrong file).
WEIGH_IN_RANGE_KG = (20.0, 250.0)
WEIGH_IN_TOLERANCE = 0.10
# The emergency stop's ramp as the session counts it: at once (the treadmill brakes at its own rate).
_AT_ONCE_M_S2 = 1e6

PAUSE_AWAITING_START = "awaiting_start"
PAUSE_BELT_FAULT = "belt_fault"

# Who makes the beats: the audio metronome role (its clicks, stamped with their DAC times, are the
# beats; the session only says the tempo) or the session's own timer (no sound: --no-sound).
BEATS_AUDIO = "audio"
BEATS_TIMER = "timer"
# While the audio metronome plays, its state is said again this often: a metronome role that was
# restarted (it reads only markers sent after it connected) picks the beat up within this time.
METRONOME_ANNOUNCE_S = 1.0

STATE_IDLE = "idle"
STATE_RUNNING = "running"
STATE_PAUSED = "paused"
STATE_FINISHED = "finished"
# the lost "device" of the force watchdog (force data from any plate stopped)
FORCE = "force"


@dataclass(frozen=True)
class Action:
    """One thing to publish: ``channel`` is 'marker' or 'command'; ``text`` the JSON; ``t_s`` LSL time.

    ``marker`` is the event itself for a marker (decoded from ``text`` when not given), None for
    a command.
    """

    channel: str
    name: str
    text: str
    t_s: float
    marker: mk.Marker | None = None

    def __post_init__(self) -> None:
        if self.marker is None and self.channel == "marker":
            object.__setattr__(self, "marker", mk.decode(self.text))

    @property
    def fields(self) -> dict[str, Any]:
        """The decoded JSON object."""
        return msg.decode(self.text)


@dataclass
class _Stats:
    """Steps seen in the current stage (arrays grow by concatenation: a few per second)."""

    steps: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=STEP_DTYPE))
    # (strike time, verdict) per scored step, so steps can be taken back by strike time
    in_band: list[tuple[float, bool]] = field(default_factory=list)
    consecutive_in_band: int = 0
    below_valr: list[tuple[float, bool]] = field(default_factory=list)
    below_tibial: list[tuple[float, bool]] = field(default_factory=list)
    # intervals (start, end; end inf while open) whose steps are not the stage's: pauses, and
    # the belt off its commanded speed (``off_speed`` True)
    left_out: list[tuple[float, float, bool]] = field(default_factory=list)
    steps_off_speed: int = 0
    belt_faults: int = 0
    drift_fired: bool = False

    def keep(self, steps: np.ndarray) -> tuple[np.ndarray, int]:
        """The steps struck outside every left-out interval, and how many off speed were dropped."""
        keep = np.ones(len(steps), dtype=bool)
        off = np.zeros(len(steps), dtype=bool)
        for t0, t1, off_speed in self.left_out:
            inside = (steps["strike_s"] >= t0) & (steps["strike_s"] < t1)
            keep &= ~inside
            if off_speed:
                off |= inside
        return steps[keep], int(np.count_nonzero(off))

    def take_back(self, since_s: float) -> int:
        """Forget the steps struck from ``since_s`` on (the belt was off speed); return how many."""
        gone = self.steps["strike_s"] >= since_s
        self.steps = self.steps[~gone]
        for name in ("in_band", "below_valr", "below_tibial"):
            setattr(self, name, [(t, v) for t, v in getattr(self, name) if t < since_s])
        self.consecutive_in_band = 0
        return int(np.count_nonzero(gone))

    @staticmethod
    def fraction(verdicts: list[tuple[float, bool]]) -> float:
        """The fraction of verdicts that are True."""
        return float(np.mean([v for _, v in verdicts]))


def _finite_mean(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    return float(v.mean()) if len(v) else math.nan


def cadence_from_steps(steps: np.ndarray) -> float:
    """Cadence in steps/min as 60 / mean step time of the given steps (NaN without valid steps)."""
    step_s = steps["step_s"]
    step_s = step_s[np.isfinite(step_s) & (step_s > 0)]
    return float(60.0 / step_s.mean()) if len(step_s) else math.nan


def _valid_loading(steps: np.ndarray) -> np.ndarray:
    """Keep the steps whose loading metrics are valid (a foot on both belts invalidates them)."""
    return steps[~(steps["crossover"] >= 1)]


class SessionMachine:
    """Run one protocol session: stages, cues, check-ins, operator actions and watchdogs.

    ``protocol`` must already be resolved for its programme session (:meth:`Protocol.for_session`).
    Times are LSL seconds. Call :meth:`start` once, then :meth:`feed` often (every 20-50 ms, with or
    without new steps) so timers, beats and watchdogs run; :meth:`note_force` whenever force data
    arrive.
    """

    def __init__(self, protocol: Protocol, *, programme_session: int | None = None,
                 participant: str = "", auto_start: str | None = None,
                 expected_mass_kg: float | None = None, belt_feedback: bool = False,
                 beats: str = BEATS_TIMER, auto_resume: bool = False,
                 context: prog.ProgrammeContext | None = None) -> None:
        if beats not in (BEATS_TIMER, BEATS_AUDIO):
            raise ConfigError(f"session beats: expected {BEATS_TIMER!r} or {BEATS_AUDIO!r}, got {beats!r}")
        self.protocol = protocol
        self.beats = beats
        self.programme_session = programme_session
        self.participant = participant
        # after a lost device is back: resume without the operator (the protocol or --auto-resume)
        self.auto_resume = bool(auto_resume or protocol.safety.auto_resume)
        self._lost: dict[str, float] = {}  # device -> when it went missing (LSL s)
        self._device_pause_s = math.nan  # when a lost device paused the session
        self.context = context
        _check_context(protocol, context)
        self.state = STATE_IDLE
        self.stage_index = -1
        # every marker published, folded by the same reducer the console and the report use:
        # stage records and pending check-ins are read from it
        self.view = mk.SessionState()
        self.end_reason = ""
        self.baseline_cadence_spm = math.nan
        self.baseline_valr_bw_per_s = math.nan
        self.baseline_tibial_g = math.nan
        self.body_mass_kg = math.nan if protocol.participant.body_mass_kg is None else float(
            protocol.participant.body_mass_kg)
        # the mass the weigh-in is checked against: given to the run, else the protocol's
        self.expected_mass_kg = float(expected_mass_kg) if expected_mass_kg is not None \
            else self.body_mass_kg
        # who lets the belt move without the operator's Start (None: the operator must press it)
        self.auto_start = auto_start if auto_start else ("protocol" if protocol.auto_start else None)
        self.start_authorised = False
        self.pain: list[tuple[float, int, str]] = []  # (time, pain 0-10, reason)
        self._checkin_id = 0
        self._pause_reason = ""
        self._stage_start_s = math.nan
        self._active_s = 0.0
        self._paused_s = 0.0
        self._last_s = math.nan
        self._stats = _Stats()
        self._target_spm = math.nan
        self._band = (math.nan, math.nan)
        # belt: every command as a ramp; with belt_feedback the treadmill's measured speed is
        # compared with it (note_belt) and a change nobody commanded pauses the stage
        self._plan = BeltPlan(protocol.safety.accel_m_s2)
        self.belt_feedback = belt_feedback
        self._belt_watch = BeltWatch(self._plan)
        self._moving_since = math.nan
        self._last_force_s = math.nan
        self._last_contact_s = math.nan
        self._force_samples: list[float] = []
        # cues
        self._cue: mk.Cue | None = None  # the cue state last published
        self._metronome_spm: float | None = None
        self._metronome: mk.Metronome = mk.Metronome()  # the state last published
        self._metronome_said_s = math.nan
        self._next_beat_s = math.nan
        self._beat_n = 0

    # ---- public state ----------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """True once the session has ended (all stages done, aborted or stopped)."""
        return self.state == STATE_FINISHED

    @property
    def paused(self) -> bool:
        """True while paused (by the operator or a check-in rule)."""
        return self.state == STATE_PAUSED

    @property
    def stage(self) -> Any:
        """The current stage model (None before start and after the end)."""
        if 0 <= self.stage_index < len(self.protocol.stages) and self.state != STATE_FINISHED:
            return self.protocol.stages[self.stage_index]
        return None

    @property
    def target_cadence_spm(self) -> float:
        """The current stage's resolved cadence target (NaN when none)."""
        return self._target_spm

    @property
    def band_spm(self) -> tuple[float, float]:
        """The current stage's tolerance band (low, high) in steps/min (NaN when none)."""
        return self._band

    @property
    def lost_devices(self) -> dict[str, float]:
        """Devices whose data stopped and are not back, with the LSL time they went missing."""
        return dict(self._lost)

    @property
    def pending_checkins(self) -> tuple[int, ...]:
        """Ids of check-ins asked and not yet answered."""
        return self.view.pending_checkins

    @property
    def records(self) -> list[StageRecord]:
        """The stages run so far, as published in their stage_end markers."""
        return list(self.view.records)

    def belt_speed_m_s(self, now_s: float) -> float:
        """Return the belt speed expected from the commands sent (ramps included), m/s."""
        return self._plan.at(now_s)

    @property
    def awaiting_start(self) -> bool:
        """True while the belt waits for the operator's Start."""
        return self.state == STATE_PAUSED and self._pause_reason == PAUSE_AWAITING_START

    def stage_time_left_s(self) -> float:
        """Active time left in the current stage (NaN when none)."""
        stage = self.stage
        return math.nan if stage is None else max(0.0, stage.duration_s - self._active_s)

    def live(self) -> dict[str, Any]:
        """Return a snapshot for progress displays: stage, time left, steps, cadence vs target, VALR."""
        stage = self.stage
        steps = self._stats.steps[-10:]
        valid = _valid_loading(steps)
        return {
            "state": self.state,
            "stage": stage.name if stage is not None else "",
            "kind": stage.kind if stage is not None else "",
            "index": self.stage_index,
            "time_left_s": self.stage_time_left_s(),
            "steps": len(self._stats.steps),
            "cadence_spm": cadence_from_steps(steps),
            "target_spm": self._target_spm,
            "band_spm": self._band,
            "in_band_run": self._stats.consecutive_in_band,
            "valr_bw_per_s": _finite_mean(valid["valr_bw_per_s"]),
            "baseline_valr_bw_per_s": self.baseline_valr_bw_per_s,
            "tibial_peak_g": _finite_mean(valid["tibial_peak_g"]),
            "feedback_on": bool(self._cue is not None and self._cue.feedback_on),
            "pause_reason": self._pause_reason,
            "awaiting_start": self.awaiting_start,
            "belt_measured_m_s": self._belt_watch.measured_m_s,
            "belt_commanded_m_s": self._plan.at(self._last_s) if math.isfinite(self._last_s)
            else math.nan,
            "steps_off_speed": self._stats.steps_off_speed,
        }

    # ---- driving -------------------------------------------------------------------------------
    def start(self, now_s: float) -> list[Action]:
        """Start the session: session_start marker, the opening check-in, the first stage."""
        if self.state != STATE_IDLE:
            raise ConfigError(f"session already {self.state}; start() is called once")
        p = self.protocol
        out = [self._marker(now_s, mk.SessionStart(
            protocol=p.name, participant=self.participant,
            programme=p.programme.name if p.programme else None,
            programme_session=self.programme_session,
            programme_sessions=len(p.programme.sessions) if p.programme else None,
            stages=len(p.stages), beats=self.beats if p.metronome_cues else None,
            auto_resume=self.auto_resume))]
        ctx = self.context
        if ctx is not None:
            d, base, rc = ctx.decision, ctx.baseline, ctx.recheck
            out.append(self._marker(now_s, mk.ProgrammeDecision(
                kind=ctx.kind, action=d.action,
                step=d.step_index + 1 if d.step_index is not None else None,
                step_percent=d.step_percent, reason=d.reason, sessions_done=ctx.sessions_done,
                recheck=rc.number if rc is not None else None,
                baseline_cadence_spm=base.cadence_spm if base is not None else math.nan,
                baseline_valr_bw_per_s=base.valr_bw_per_s if base is not None else math.nan,
                retrained_target_spm=rc.retrained_target_spm if rc is not None else math.nan)))
        self.state = STATE_RUNNING
        self._last_s = now_s
        self._last_force_s = now_s  # the force watchdog counts from the start
        if p.checkins.at_start:
            out += self._ask(now_s, "session_start")
        out += self._begin_stage(now_s, 0)
        return out

    def feed(self, now_s: float, steps: np.ndarray | None = None) -> list[Action]:
        """Advance to ``now_s`` with the step records that arrived since the last call."""
        out: list[Action] = []
        if self.state in (STATE_IDLE, STATE_FINISHED):
            return out
        dt = max(0.0, now_s - self._last_s) if math.isfinite(self._last_s) else 0.0
        self._last_s = now_s
        if steps is not None and len(steps):
            if steps.dtype != STEP_DTYPE:
                raise ConfigError(f"feed(): steps must have dtype STEP_DTYPE, got {steps.dtype}")
            self._last_contact_s = now_s
            # a step that arrives during a pause was struck before it (or is dropped as struck in it)
            out += self._take_steps(now_s, steps)
        if self.state == STATE_PAUSED:
            self._paused_s += dt
            out += self._watchdogs(now_s)
            limit = self.protocol.safety.device_resume_timeout_s
            if self.state == STATE_PAUSED and now_s - self._device_pause_s > limit:
                what = ", ".join(self._lost) or self._pause_reason
                out += [self._marker(now_s, mk.SafetyStop(
                    reason="device_lost", device=what,
                    detail=f"not resumed within {limit:g} s of losing {what}"))]
                out += self._finish(now_s, "safety_stop:device_lost", stage_reason="safety_stop")
            return out
        self._active_s += dt
        out += self._watchdogs(now_s)
        if self.state != STATE_RUNNING:
            return out
        # beats due so far belong to the stage as it was; a new stage starts with its own cues
        out += self._beats(now_s)
        out += self._announce_metronome(now_s)
        out += self._drift_rule(now_s)
        if self.state != STATE_RUNNING:
            return out
        out += self._maybe_advance(now_s)
        if self.state == STATE_RUNNING:
            out += self._update_cues(now_s)
        return out

    def note_force(self, now_s: float, vertical_force_n: float = math.nan) -> list[Action]:
        """Force data arrived at ``now_s``; ``vertical_force_n`` is the total |Fz| (for weighing)."""
        self._last_force_s = now_s
        if FORCE in self._lost and now_s > self._lost[FORCE]:
            return self.device_back(now_s, FORCE)
        stage = self.stage
        if stage is not None and stage.kind == "quiet_standing" and self.state == STATE_RUNNING \
                and math.isfinite(vertical_force_n) and self._active_s >= stage.duration_s / 2:
            # the second half only: the participant has settled after stepping on
            self._force_samples.append(abs(vertical_force_n))
        return []

    def note_belt(self, ts: np.ndarray, speeds_m_s: np.ndarray) -> list[Action]:
        """Treadmill samples arrived: measured belt speeds (one column per belt) at times ``ts``."""
        if self.state in (STATE_IDLE, STATE_FINISHED) or not len(ts):
            return []
        found = self._belt_watch.samples(ts, speeds_m_s)
        return [] if found is None else self._belt_fault(float(ts[-1]), found)

    def note_treadmill_event(self, t_s: float, kind: str, detail: str) -> list[Action]:
        """The treadmill driver stopped the belt by itself (``kind``: its event, e.g. watchdog_stop)."""
        if self.state in (STATE_IDLE, STATE_FINISHED):
            return []
        found = self._belt_watch.event(t_s, kind, detail)
        return [] if found is None else self._belt_fault(t_s, found)

    # ---- operator ------------------------------------------------------------------------------
    def pause(self, now_s: float, *, reason: str = "operator", source: str = "api") -> list[Action]:
        """Pause: stage clock frozen, metronome off, belt ramped to a stop."""
        out = [self._marker(now_s, mk.Operator(action="pause", source=source))] \
            if reason == "operator" else []
        if self.state != STATE_RUNNING:
            return out
        self.state = STATE_PAUSED
        self._pause_reason = reason
        self._stats.left_out.append((now_s, math.inf, False))
        out.append(self._marker(now_s, mk.Paused(reason=reason, stage=self.stage.name)))
        out += self._set_metronome(now_s, None)
        out += self._belt(now_s, 0.0)
        self._stats.consecutive_in_band = 0
        return out

    def start_belt(self, now_s: float, *, source: str = "api") -> list[Action]:
        """The operator's Start: the belt waiting for it ramps to the stage speed (else nothing)."""
        out = [self._marker(now_s, mk.Operator(action="start", source=source))]
        if not self.awaiting_start:
            return out
        self.start_authorised = True
        out.append(self._marker(now_s, mk.StartAuthorised(source=source, auto=False,
                                                          stage=self.stage.name)))
        return out + self._unpause(now_s)

    def resume(self, now_s: float, *, source: str = "api") -> list[Action]:
        """Resume after a pause: belt back to the stage speed, cues on again.

        A belt waiting for its first Start is not resumed: only :meth:`start_belt` starts it; nor
        is a session paused for a lost device that is not back (the request is recorded).
        """
        out = [self._marker(now_s, mk.Operator(action="resume", source=source))]
        if self.state != STATE_PAUSED or self.awaiting_start or self._lost:
            return out
        return out + self._unpause(now_s)

    def _unpause(self, now_s: float) -> list[Action]:
        out: list[Action] = []
        self.state = STATE_RUNNING
        self._pause_reason = ""
        self._close_left_out(now_s)
        self._belt_watch.clear(now_s)
        self._device_pause_s = math.nan
        out.append(self._marker(now_s, mk.Resumed(stage=self.stage.name)))
        out += self._belt(now_s, self.protocol.stage_speed_m_s(self.stage_index))
        self._cue = None  # republish the cue state
        out += self._update_cues(now_s)
        return out

    def _close_left_out(self, now_s: float) -> None:
        self._stats.left_out = [(t0, now_s if t1 == math.inf else t1, off)
                                for t0, t1, off in self._stats.left_out]

    def device_lost(self, now_s: float, device: str, detail: str, *,
                    reason: str = "device_lost") -> list[Action]:
        """A device's data stopped (its driver died or stalled): belt stopped, session paused.

        The belt ramps down at the safety stop rate; the stage clock stops and steps are not
        counted until the session resumes (:meth:`device_back`, then the operator); it ends for
        safety when not resumed within ``safety.device_resume_timeout_s``.
        """
        if self.state not in (STATE_RUNNING, STATE_PAUSED) or device in self._lost:
            return []
        self._lost[device] = now_s
        s = self.protocol.safety
        out = [self._marker(now_s, mk.SafetyStop(reason=reason, detail=detail, device=device))]
        if self._plan.target_m_s > 0 or self.belt_speed_m_s(now_s) > 0:
            out.insert(0, self._command(now_s, msg.CMD_STOP, decel_m_s2=s.stop_decel_m_s2, reason=reason))
            out.append(self._marker(now_s, mk.Belt(speed_m_s=0.0, accel_m_s2=s.stop_decel_m_s2)))
            self._plan.command(now_s, 0.0, s.stop_decel_m_s2)
        if not math.isfinite(self._device_pause_s):
            self._device_pause_s = now_s
        if self.state == STATE_RUNNING:
            out += self.pause(now_s, reason=reason)
        elif not self.awaiting_start:  # a belt still waiting for Start keeps waiting for it
            self._pause_reason = reason
        return out

    def device_back(self, now_s: float, device: str) -> list[Action]:
        """A lost device is back; with none left lost the session resumes (auto) or asks the operator."""
        if device not in self._lost:
            return []
        lost_at = self._lost.pop(device)
        out = [self._marker(now_s, mk.DeviceBack(device=device, lost_at_s=lost_at, down_s=now_s - lost_at))]
        if self._lost or self.state != STATE_PAUSED or self.awaiting_start:
            return out
        if self.auto_resume:
            return out + self.resume(now_s, source="auto_resume")
        return [*out, self._marker(now_s, mk.DecisionRequired(reason="device_back",
                                                              options=("resume", "abort")))]

    def skip(self, now_s: float, *, source: str = "api") -> list[Action]:
        """End the current stage now (reason 'skipped') and go to the next."""
        out = [self._marker(now_s, mk.Operator(action="skip", source=source))]
        if self.state not in (STATE_RUNNING, STATE_PAUSED):
            return out
        if self.state == STATE_PAUSED:
            self.state = STATE_RUNNING
            self._pause_reason = ""
            self._belt_watch.clear(now_s)
            out.append(self._marker(now_s, mk.Resumed(stage=self.stage.name)))
        return out + self._end_stage(now_s, "skipped")

    def abort(self, now_s: float, *, source: str = "api") -> list[Action]:
        """End the session now: belt ramped to a stop, stage ended as 'aborted'."""
        out = [self._marker(now_s, mk.Operator(action="abort", source=source))]
        return out + self._finish(now_s, "aborted", stage_reason="aborted")

    def emergency_stop(self, now_s: float, *, source: str = "api") -> list[Action]:
        """Emergency stop: the command first, then the markers; the session ends."""
        out = [self._command(now_s, msg.CMD_EMERGENCY_STOP, source=source),
               self._marker(now_s, mk.EmergencyStop(source=source))]
        self._plan.command(now_s, 0.0, _AT_ONCE_M_S2)
        return out + self._finish(now_s, "emergency_stop", stage_reason="safety_stop", stop_belt=False)

    def request_checkin(self, now_s: float, *, source: str = "api") -> list[Action]:
        """Ask for a pain rating now (on request)."""
        out = [self._marker(now_s, mk.Operator(action="checkin", source=source))]
        return out + self._ask(now_s, "request")

    def answer_pain(self, now_s: float, pain: int, *, checkin_id: int | None = None,
                    source: str = "api") -> list[Action]:
        """Record a pain rating 0-10 and apply the file's rules (pause, or stop the session)."""
        if isinstance(pain, bool) or not isinstance(pain, (int, np.integer)) or not 0 <= pain <= 10:
            raise ConfigError(f"pain rating: expected an integer 0-10, got {pain!r}")
        pain = int(pain)
        if checkin_id is None:  # the checkin marker below takes it off the pending list
            checkin_id = self.pending_checkins[0] if self.pending_checkins else 0
        rules = self.protocol.checkins
        first = self.pain[0][1] if self.pain else pain
        self.pain.append((now_s, pain, str(checkin_id)))
        action = "none"
        if rules.stop_at is not None and pain >= rules.stop_at:
            action = "stop"
        elif rules.stop_on_rise is not None and pain - first >= rules.stop_on_rise:
            action = "stop"
        elif rules.pause_at is not None and pain >= rules.pause_at:
            action = "pause"
        out = [self._marker(now_s, mk.Checkin(id=checkin_id, pain=pain, first_pain=first,
                                              action=action, source=source))]
        if self.state == STATE_FINISHED or self.state == STATE_IDLE:
            return out
        if action == "stop":
            out += self._finish(now_s, "pain_stop", stage_reason="pain_stop")
        elif action == "pause":
            out += self.pause(now_s, reason="pain")
            out.append(self._marker(now_s, mk.DecisionRequired(reason="pain", pain=pain,
                                                               options=("resume", "abort"))))
        return out

    # ---- internals: stages ------------------------------------------------------------------------
    def _begin_stage(self, now_s: float, index: int) -> list[Action]:
        p = self.protocol
        stage = p.stages[index]
        self.stage_index = index
        self._stage_start_s = now_s
        self._active_s = 0.0
        self._paused_s = 0.0
        self._stats = _Stats()
        self._force_samples = []
        self._target_spm, self._band = self._resolve_target(stage)
        speed = p.stage_speed_m_s(index)
        out = [self._marker(now_s, mk.StageStart(
            index=index, name=stage.name, kind=stage.kind, duration_s=stage.duration_s,
            target_cadence_spm=self._target_spm, band_low_spm=self._band[0],
            band_high_spm=self._band[1], belt_speed_m_s=speed, instructions=stage.instructions))]
        if speed > 0 and not self.start_authorised:
            if self.auto_start is None:
                # the belt never moves before the operator's Start: the stage waits, paused
                self.state = STATE_PAUSED
                self._pause_reason = PAUSE_AWAITING_START
                self._stats.left_out.append((now_s, math.inf, False))
                out.append(self._marker(now_s, mk.Paused(reason=PAUSE_AWAITING_START, stage=stage.name)))
                out.append(self._marker(now_s, mk.AwaitingStart(stage=stage.name, speed_m_s=speed)))
                return out
            self.start_authorised = True
            out.append(self._marker(now_s, mk.StartAuthorised(source=self.auto_start, auto=True,
                                                              stage=stage.name)))
        out += self._belt(now_s, speed)
        self._cue = None
        out += self._update_cues(now_s)
        return out

    def _resolve_target(self, stage: Any) -> tuple[float, tuple[float, float]]:
        if not isinstance(stage, (CadenceStage, RetentionStage)) or not stage.has_target:
            return math.nan, (math.nan, math.nan)
        if stage.target_spm is not None:
            target = float(stage.target_spm)
        else:
            percent = stage.target_percent
            if percent == PROGRESSION:
                percent = self.context.decision.step_percent if self.context is not None else math.nan
            base = self.baseline_cadence_spm
            ctx_base = self.context.baseline if self.context is not None else None
            if stage.baseline_of == PROGRAMME_BASELINE and ctx_base is not None:
                base = ctx_base.cadence_spm  # else the first session: its own baseline
            target = base * (1 + float(percent or 0.0) / 100)
        if stage.band_spm is not None:
            half = float(stage.band_spm)
        else:
            half = target * (stage.band_percent or DEFAULT_BAND_PERCENT) / 100
        return target, (target - half, target + half)

    def _drift_rule(self, now_s: float) -> list[Action]:
        """The stage's drift rule: the metric's last window vs its first; end or pause once."""
        stage = self.stage
        rule = getattr(stage, "drift", None)
        if rule is None or self._stats.drift_fired:
            return []
        t_first = self._stage_start_s + DRIFT_SETTLE_S
        if now_s - t_first < 2 * rule.window_s:
            return []
        steps = self._stats.steps
        values = metric_values(steps, rule.metric)
        strike = steps["strike_s"]
        first = values[(strike >= t_first) & (strike < t_first + rule.window_s)]
        last = values[strike >= now_s - rule.window_s]
        a, b = _finite_mean(first), _finite_mean(last)
        if not (math.isfinite(a) and math.isfinite(b)) or a == 0:
            return []
        change = 100.0 * (b / a - 1.0)
        if abs(change) < rule.max_change_percent:
            return []
        self._stats.drift_fired = True
        out = [self._marker(now_s, mk.Drift(stage=stage.name, metric=rule.metric, first_mean=a,
                                            last_mean=b, change_pct=change,
                                            limit_pct=rule.max_change_percent, action=rule.action))]
        if rule.action == "pause":
            out += self.pause(now_s, reason="drift")
            out.append(self._marker(now_s, mk.DecisionRequired(reason="drift", pain=None,
                                                               options=("resume", "skip", "abort"))))
            return out
        return out + self._end_stage(now_s, "drift")

    def _maybe_advance(self, now_s: float) -> list[Action]:
        stage = self.stage
        if stage is None:
            return []
        until_steps = getattr(stage, "until_steps", None)
        until_band = getattr(stage, "until_in_band_steps", None)
        if until_band is not None and self._stats.consecutive_in_band >= until_band:
            return self._end_stage(now_s, "in_band")
        if until_steps is not None and len(self._stats.steps) >= until_steps:
            return self._end_stage(now_s, "steps")
        if self._active_s >= stage.duration_s:
            return self._end_stage(now_s, "time")
        return []

    def _end_stage(self, now_s: float, reason: str) -> list[Action]:
        out: list[Action] = []
        stage = self.stage
        out += self._set_metronome(now_s, None)
        summary = self._summary()
        if isinstance(stage, BaselineStage) and reason not in ("aborted", "safety_stop", "pain_stop"):
            out += self._measure_baseline(now_s, stage)
        rc = self.context.recheck if self.context is not None else None
        if rc is not None and stage.name == RECHECK_STAGE and stage.kind == "retention" \
                and reason not in ("aborted", "safety_stop", "pain_stop"):
            out.append(self._recheck_result(now_s, rc))
        weigh_in_problem = ""
        if stage.kind == "quiet_standing" and reason not in ("aborted", "safety_stop", "pain_stop"):
            weigh_in_problem = self._weigh_in(now_s, reason, out, summary)
        record = StageRecord(
            index=self.stage_index, name=stage.name, kind=stage.kind,
            start_s=self._stage_start_s, end_s=now_s,
            target_cadence_spm=self._target_spm, band_low_spm=self._band[0],
            band_high_spm=self._band[1],
            belt_speed_m_s=self.protocol.stage_speed_m_s(self.stage_index),
            end_reason=reason, feedback_json=json.dumps(self._feedback_config(stage)),
            summary_json=json.dumps(_json_safe(summary)))
        out.append(self._marker(now_s, mk.StageEnd(record=record)))
        if reason in ("aborted", "safety_stop", "pain_stop", "interrupted"):
            return out
        if weigh_in_problem:
            # before the next stage: the belt never moves on a weigh-in that cannot be right
            out.append(self._marker(now_s, mk.SafetyStop(reason="implausible_weight",
                                                         detail=weigh_in_problem)))
            return out + self._finish(now_s, "safety_stop:implausible_weight", stage_reason=None)
        checkin = stage.checkin if stage.checkin is not None else self.protocol.checkins.at_stage_boundaries
        if checkin:
            out += self._ask(now_s, "stage_end")
        if isinstance(stage, BaselineStage) and not math.isfinite(self.baseline_cadence_spm):
            return out + self._finish(now_s, "baseline_failed", stage_reason=None)
        if self.stage_index + 1 < len(self.protocol.stages):
            return out + self._begin_stage(now_s, self.stage_index + 1)
        return out + self._finish(now_s, "completed", stage_reason=None)

    def _finish(self, now_s: float, reason: str, *, stage_reason: str | None,
                stop_belt: bool = True) -> list[Action]:
        if self.state in (STATE_FINISHED, STATE_IDLE):
            return []
        out: list[Action] = []
        if stop_belt:
            out += self._belt(now_s, 0.0)
        if stage_reason is not None and self.stage is not None:
            out += self._end_stage(now_s, stage_reason)
        out += self._set_metronome(now_s, None)
        self.state = STATE_FINISHED
        self.end_reason = reason
        out.append(self._marker(now_s, mk.SessionEnd(reason=reason, stages_run=len(self.records))))
        return out

    def _weigh_in(self, now_s: float, reason: str, out: list[Action], summary: dict[str, Any]) -> str:
        """Publish the weigh-in; return why it is implausible ('' when it is plausible)."""
        samples = self._force_samples
        low, high = WEIGH_IN_RANGE_KG
        if not samples:
            if reason == "skipped":
                return ""  # the operator skipped it before it measured: no weigh-in, no claim
            return ("the weigh-in read no force at all (no plate data in the second half of the "
                    "stage); the belt was not started")
        force_n = float(np.mean(samples))
        mass = force_n / GRAVITY_M_S2
        out.append(self._marker(now_s, mk.BodyWeight(mass_kg=round(mass, 2), force_n=round(force_n, 1),
                                                     samples=len(samples))))
        summary["body_mass_kg"] = mass
        measured = f"the weigh-in measured {mass:.1f} kg (mean vertical force {force_n:.1f} N over " \
                   f"{len(samples)} samples)"
        if not low <= mass <= high:
            return (f"{measured}: expected {low:g}-{high:g} kg; is the participant standing still on "
                    "the plates, and are they zeroed? The belt was not started")
        given = self.expected_mass_kg
        if math.isfinite(given) and abs(mass - given) > WEIGH_IN_TOLERANCE * given:
            return (f"{measured}: more than {100 * WEIGH_IN_TOLERANCE:g} % from the given "
                    f"{given:.1f} kg; check the participant and the plates. The belt was not started")
        self.body_mass_kg = mass
        return ""

    def _measure_baseline(self, now_s: float, stage: BaselineStage) -> list[Action]:
        steps = self._stats.steps[-stage.measure_last_steps:]
        if len(steps) < MIN_BASELINE_STEPS:
            return [self._marker(now_s, mk.Baseline(
                ok=False, n_steps=len(steps),
                detail=f"only {len(steps)} steps; at least {MIN_BASELINE_STEPS} needed"))]
        valid = _valid_loading(steps)
        self.baseline_cadence_spm = cadence_from_steps(steps)
        self.baseline_valr_bw_per_s = _finite_mean(valid["valr_bw_per_s"])
        self.baseline_tibial_g = _finite_mean(valid["tibial_peak_g"])
        return [self._marker(now_s, mk.Baseline(ok=True, n_steps=len(steps),
                                                cadence_spm=self.baseline_cadence_spm,
                                                valr_bw_per_s=self.baseline_valr_bw_per_s,
                                                tibial_peak_g=self.baseline_tibial_g,
                                                vilr_bw_per_s=_finite_mean(valid["vilr_bw_per_s"]),
                                                contact_s=_finite_mean(valid["contact_s"]),
                                                strike_pattern=_main_pattern(valid)))]

    def _recheck_result(self, now_s: float, plan: prog.RecheckPlan) -> Action:
        """The recheck's verdict from the steps of the second half of its run (past the ramp)."""
        steps = self._stats.steps
        half = steps[steps["strike_s"] >= self._stage_start_s + 0.5 * self._active_s] \
            if len(steps) else steps
        cadence = cadence_from_steps(half)
        valr = _finite_mean(_valid_loading(half)["valr_bw_per_s"])
        base = self.context.baseline if self.context is not None else None
        base_cad = base.cadence_spm if base is not None else math.nan
        v = prog.recheck_verdict(plan, base_cad, cadence, valr)
        return self._marker(now_s, mk.RecheckResult(
            number=plan.number, cadence_spm=cadence, valr_bw_per_s=valr,
            baseline_cadence_spm=base_cad, retrained_target_spm=plan.retrained_target_spm,
            retrained_valr_bw_per_s=plan.retrained_valr_bw_per_s, gain_lost_pct=v.gain_lost_pct,
            valr_rise_pct=v.valr_rise_pct, regression=v.regression, reason=v.reason))

    def _take_steps(self, now_s: float, steps: np.ndarray) -> list[Action]:
        stage = self.stage
        if stage is None:
            return []
        # a step struck before this stage began belongs to the previous one; one struck while the
        # stage was paused or the belt off its commanded speed belongs to none
        mine, off_speed = self._stats.keep(steps[~(steps["strike_s"] < self._stage_start_s)])
        self._stats.steps_off_speed += off_speed
        if not len(mine):
            return []
        self._stats.steps = np.concatenate([self._stats.steps, mine])
        valr_max, tib_max = self._loading_limits()
        for step in _valid_loading(mine):
            strike = float(step["strike_s"])
            if math.isfinite(valr_max) and math.isfinite(step["valr_bw_per_s"]):
                self._stats.below_valr.append((strike, bool(step["valr_bw_per_s"] <= valr_max)))
            if math.isfinite(tib_max) and math.isfinite(step["tibial_peak_g"]):
                self._stats.below_tibial.append((strike, bool(step["tibial_peak_g"] <= tib_max)))
        low, high = self._band
        for step in mine:
            if not math.isfinite(low):
                continue
            cad = float(step["cadence_spm"])
            if not math.isfinite(cad) and step["step_s"] > 0:
                cad = 60.0 / float(step["step_s"])
            ok = bool(low <= cad <= high)
            self._stats.in_band.append((float(step["strike_s"]), ok))
            self._stats.consecutive_in_band = self._stats.consecutive_in_band + 1 if ok else 0
        return []

    def _summary(self) -> dict[str, Any]:
        steps = self._stats.steps
        last = steps[-SUMMARY_LAST_STEPS:]
        valid = _valid_loading(last)
        valr = _finite_mean(valid["valr_bw_per_s"])
        tib = _finite_mean(valid["tibial_peak_g"])
        out: dict[str, Any] = {
            "n_steps": len(steps),
            "active_s": self._active_s,
            "paused_s": self._paused_s,
            "cadence_spm": cadence_from_steps(last),
            "cadence_all_spm": cadence_from_steps(steps),
            "valr_bw_per_s": valr,
            "vilr_bw_per_s": _finite_mean(valid["vilr_bw_per_s"]),
            "tibial_peak_g": tib,
            "valr_percent_of_baseline": 100 * valr / self.baseline_valr_bw_per_s,
            "tibial_percent_of_baseline": 100 * tib / self.baseline_tibial_g,
            "cadence_percent_of_baseline": 100 * cadence_from_steps(last) / self.baseline_cadence_spm,
        }
        if self._stats.in_band:
            out["in_band_fraction"] = self._stats.fraction(self._stats.in_band)
        valr_max, tib_max = self._loading_limits()
        if self._stats.below_valr:
            out["valr_max_bw_per_s"] = valr_max
            out["valr_below_max_fraction"] = self._stats.fraction(self._stats.below_valr)
        if self._stats.below_tibial:
            out["tibial_max_g"] = tib_max
            out["tibial_below_max_fraction"] = self._stats.fraction(self._stats.below_tibial)
        if self._stats.belt_faults:
            # the belt left its commanded speed: these steps are in no figure above
            out["belt_faults"] = self._stats.belt_faults
            out["steps_off_speed"] = self._stats.steps_off_speed
        if self.pain:
            out["last_pain"] = self.pain[-1][1]
        return out

    def _feedback_config(self, stage: Any) -> dict[str, Any]:
        cues = getattr(stage, "cues", None)
        return {} if cues is None else cues.model_dump(exclude_none=True)

    # ---- internals: cues -------------------------------------------------------------------------
    def _loading_limits(self) -> tuple[float, float]:
        """The stage's VALR (BW/s) and tibial (g) limits from its cues, NaN when it has none."""
        cues = getattr(self.stage, "cues", None)
        valr_max = tib_max = math.nan
        if cues is not None and cues.loading_rate is not None:
            valr_max = self.baseline_valr_bw_per_s * cues.loading_rate.max_percent_of_baseline / 100
        if cues is not None and cues.tibial_shock is not None:
            ts = cues.tibial_shock
            tib_max = ts.max_g if ts.max_g is not None else (
                self.baseline_tibial_g * (ts.max_percent_of_baseline or 0.0) / 100)
        return valr_max, tib_max

    def _feedback_on(self) -> bool:
        stage = self.stage
        cues = getattr(stage, "cues", None)
        if cues is None or not cues.any:
            return False
        if cues.fading is None:
            return True
        phase = (self._active_s % cues.fading.period_s) / cues.fading.period_s
        return phase < cues.fading.on_fraction

    def _update_cues(self, now_s: float) -> list[Action]:
        stage = self.stage
        cues = getattr(stage, "cues", None)
        on = self._feedback_on()
        metronome: float | None = None
        band: tuple[float, float] | None = None
        valr_max = tib_max = math.nan
        if on and cues is not None:
            valr_max, tib_max = self._loading_limits()
            if cues.metronome is not None:
                metronome = self._target_spm if cues.metronome.spm == "target" else float(cues.metronome.spm)
                if not math.isfinite(metronome):
                    metronome = None
            if cues.visual_band:
                band = self._band
        cue = mk.Cue(stage=stage.name, feedback_on=on, metronome_spm=metronome,
                     band_low_spm=band[0] if band else math.nan,
                     band_high_spm=band[1] if band else math.nan,
                     target_spm=self._target_spm if band else math.nan,
                     valr_max_bw_per_s=valr_max, tibial_max_g=tib_max)
        out: list[Action] = []
        # compared as published (NaN is null there, and equal to itself)
        if self._cue is None or cue.encode() != self._cue.encode():
            self._cue = cue
            out.append(self._marker(now_s, cue))
        out += self._set_metronome(now_s, metronome, cues.metronome if cues is not None else None)
        return out

    def _set_metronome(self, now_s: float, spm: float | None, cue: Metronome | None = None) -> list[Action]:
        click: dict[str, Any] = {}
        if spm is not None and cue is not None:
            click = {"sound": cue.sound, "volume_db": cue.volume_db, "ear": cue.ear,
                     "tone_hz": cue.tone_hz, "flash": cue.flash}
        state = mk.Metronome(spm=spm, **click)
        if state == self._metronome:
            return []
        self._metronome = state
        self._metronome_said_s = now_s
        previous = self._metronome_spm
        self._metronome_spm = spm
        if spm is not None and spm != previous:
            # keep the beat going when only the rate changes; start at once otherwise
            last_beat = self._next_beat_s - 60.0 / previous if previous else math.nan
            self._next_beat_s = last_beat + 60.0 / spm if math.isfinite(last_beat) else now_s
            self._next_beat_s = max(self._next_beat_s, now_s)
        return [self._marker(now_s, state)]

    def _announce_metronome(self, now_s: float) -> list[Action]:
        """Say the playing metronome's state again (audio beats only; see METRONOME_ANNOUNCE_S)."""
        if self.beats != BEATS_AUDIO or self._metronome.spm is None \
                or now_s - self._metronome_said_s < METRONOME_ANNOUNCE_S:
            return []
        self._metronome_said_s = now_s
        return [self._marker(now_s, dataclasses.replace(self._metronome, again=True))]

    def _beats(self, now_s: float) -> list[Action]:
        spm = self._metronome_spm
        if spm is None or self.beats != BEATS_TIMER:
            return []
        period = 60.0 / spm
        out = []
        # after a long stall, do not fire a burst of stale beats: resume the beat from now
        if now_s - self._next_beat_s > 2 * period:
            self._next_beat_s = now_s
        while self._next_beat_s <= now_s:
            self._beat_n += 1
            out.append(self._marker(self._next_beat_s, mk.Beat(n=self._beat_n, spm=spm,
                                                               clock=mk.BEAT_CLOCK_TIMER)))
            self._next_beat_s += period
        return out

    # ---- internals: belt and safety ---------------------------------------------------------------
    def _belt(self, now_s: float, speed_m_s: float) -> list[Action]:
        if speed_m_s == self._plan.target_m_s:
            return []
        s = self.protocol.safety
        current = self._plan.command(now_s, speed_m_s, s.accel_m_s2)
        if current == 0.0 and speed_m_s > 0:
            self._moving_since = now_s
        if speed_m_s > 0:
            cmd = self._command(now_s, msg.CMD_SPEED, right_m_s=speed_m_s, left_m_s=speed_m_s,
                                accel_m_s2=s.accel_m_s2)
        else:
            cmd = self._command(now_s, msg.CMD_STOP, decel_m_s2=s.accel_m_s2)
        return [cmd, self._marker(now_s, mk.Belt(speed_m_s=speed_m_s, accel_m_s2=s.accel_m_s2))]

    def _watchdogs(self, now_s: float) -> list[Action]:
        if self.belt_feedback:
            found = self._belt_watch.silent(now_s)
            if found is not None:
                return self._belt_fault(now_s, found)
        belt_to = self._plan.target_m_s
        if belt_to <= 0 and self.belt_speed_m_s(now_s) <= 0:
            return []
        s = self.protocol.safety
        if now_s - self._last_force_s > s.force_timeout_s and FORCE not in self._lost:
            # a dead or stalled plate driver pauses the session; it ends only if not resumed
            return self.device_lost(now_s, FORCE, f"no force data for {now_s - self._last_force_s:.2f} s "
                                    f"(limit {s.force_timeout_s:g} s) while the belt moves",
                                    reason="force_timeout")
        ramp_s = belt_to / s.accel_m_s2 if belt_to > 0 else 0.0
        since = max(self._last_contact_s if math.isfinite(self._last_contact_s) else -math.inf,
                    self._moving_since + ramp_s if math.isfinite(self._moving_since) else -math.inf)
        if belt_to > 0 and math.isfinite(since) and now_s - since > s.no_contact_timeout_s:
            return self._safety_stop(now_s, "no_contact",
                                     f"no foot contact for {now_s - since:.2f} s "
                                     f"(limit {s.no_contact_timeout_s:g} s) while the belt moves")
        return []

    def _safety_stop(self, now_s: float, reason: str, detail: str) -> list[Action]:
        s = self.protocol.safety
        out = [self._command(now_s, msg.CMD_STOP, decel_m_s2=s.stop_decel_m_s2, reason=reason),
               self._marker(now_s, mk.SafetyStop(reason=reason, detail=detail))]
        self._plan.command(now_s, 0.0, s.stop_decel_m_s2)
        return out + self._finish(now_s, f"safety_stop:{reason}", stage_reason="safety_stop",
                                  stop_belt=False)

    def _belt_fault(self, now_s: float, fault: OffSpeed) -> list[Action]:
        """A belt change nobody commanded: a safety event; the stage pauses; its steps are left out."""
        stage = self.stage
        self._stats.belt_faults += 1
        left_out = self._stats.take_back(fault.since_s)
        self._stats.steps_off_speed += left_out
        self._stats.left_out.append((fault.since_s, math.inf, True))
        out = [self._marker(now_s, mk.BeltFault(
            reason=fault.reason, detail=fault.detail, stage=stage.name if stage is not None else "",
            commanded_m_s=round(fault.commanded_m_s, 3), measured_m_s=round(fault.measured_m_s, 3),
            since_s=fault.since_s, steps_left_out=left_out))]
        if self.state == STATE_RUNNING:
            out += self.pause(now_s, reason=PAUSE_BELT_FAULT)
            out.append(self._marker(now_s, mk.DecisionRequired(reason=PAUSE_BELT_FAULT,
                                                               options=("resume", "abort"))))
        else:
            # paused already (or waiting for Start) with the belt commanded still: say so again
            s = self.protocol.safety
            out.insert(0, self._command(now_s, msg.CMD_STOP, decel_m_s2=s.stop_decel_m_s2,
                                        reason=PAUSE_BELT_FAULT))
            self._plan.command(now_s, 0.0, s.stop_decel_m_s2)
        return out

    # ---- internals: check-ins and encoding --------------------------------------------------------
    def _ask(self, now_s: float, reason: str) -> list[Action]:
        self._checkin_id += 1
        stage = self.stage
        return [self._marker(now_s, mk.CheckinRequest(
            id=self._checkin_id, reason=reason, stage=stage.name if stage is not None else None,
            question="pain 0-10"))]

    def marker(self, t_s: float, marker: mk.Marker) -> Action:
        """Publish a marker of the session's surroundings (a recording gap) in the session's order."""
        return self._marker(t_s, marker)

    def _marker(self, t_s: float, marker: mk.Marker) -> Action:
        self.view.apply(t_s, marker)
        return Action("marker", marker.event, marker.encode(), t_s, marker)

    def _command(self, t_s: float, name: str, **fields: Any) -> Action:
        return Action("command", name, msg.command(name, **fields), t_s)


def _main_pattern(steps: np.ndarray) -> str | None:
    """The most common strike pattern of the steps (None when none is known)."""
    codes = steps["strike_pattern"]
    codes = codes[np.isfinite(codes)].astype(int)
    if not len(codes):
        return None
    return PATTERN_NAMES[int(np.bincount(codes, minlength=len(PATTERN_NAMES)).argmax())]


def _check_context(protocol: Protocol, context: prog.ProgrammeContext | None) -> None:
    """ConfigError when a stage's target cannot be resolved from this session's programme state."""
    baseline_before = False
    for i, stage in enumerate(protocol.stages):
        if stage.kind == "baseline":
            baseline_before = True
        if not isinstance(stage, (CadenceStage, RetentionStage)) or stage.target_percent is None:
            continue
        if stage.target_percent == PROGRESSION and (context is None or context.decision.step_index is None):
            raise ConfigError(f"stages[{i}] {stage.name!r}: target_percent 'progression' needs the "
                              "programme's progression step (run it as a programme session)")
        has_base = context is not None and context.baseline is not None
        if stage.baseline_of == PROGRAMME_BASELINE and not has_base and not baseline_before:
            raise ConfigError(f"stages[{i}] {stage.name!r}: its target is relative to the programme "
                              "baseline, which is not measured yet, and no baseline stage comes "
                              "before it; run a session with a baseline stage first")


def _json_safe(obj: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf become None so summaries are valid JSON."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(v, (float, np.floating)):
            out[k] = float(v) if math.isfinite(v) else None
        elif isinstance(v, np.integer):
            out[k] = int(v)
        else:
            out[k] = v
    return out
