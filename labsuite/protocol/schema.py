"""Protocol files: the YAML schema, its cross-field rules and a loader whose errors name file, path and line.

A protocol file is read and validated here before anything starts; the stage machine
(:mod:`labsuite.protocol.machine`) only ever sees a validated :class:`Protocol`. The reference for
authors is ``docs/protocols.md``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from labsuite.audio import clicks
from labsuite.errors import ConfigError
from labsuite.yamlfile import KEY_MARK, Loc, format_path, node_positions, parse_yaml, read_text

SCHEMA_ID = "labsuite-protocol/1"

# Plausible limits: anything outside is a typo or an impossible target, never a study design.
MIN_CADENCE_SPM = 60.0
MAX_CADENCE_SPM = 240.0
MAX_TARGET_PERCENT = 30.0
MAX_BAND_PERCENT = 20.0
MAX_SPEED_M_S = 8.0
MAX_STAGE_S = 4 * 3600.0
MAX_STEPS_PER_S = MAX_CADENCE_SPM / 60.0
PAIN_MAX = 10

_NAME = r"^[A-Za-z0-9_-]{1,40}$"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# ---- cues -------------------------------------------------------------------------------------

class Metronome(_Strict):
    """A metronome at the stage's target cadence (``spm: target``) or at a fixed rate, and its click.

    ``sound`` (woodblock or tone), ``volume_db`` (dB re full scale, the click's peak), ``ear``
    (both, left, right, or alternate: one ear per step) and ``tone_hz`` (the tone's pitch) are
    played by the audio metronome (labsuite.audio.clicks.ClickSettings, the same limits);
    ``flash`` also flashes the participant display on every beat.
    """

    spm: Literal["target"] | Annotated[float, Field(ge=MIN_CADENCE_SPM, le=MAX_CADENCE_SPM)] = "target"
    sound: Literal["woodblock", "tone"] = "woodblock"
    volume_db: Annotated[float, Field(ge=clicks.MIN_VOLUME_DB, le=clicks.MAX_VOLUME_DB)] = \
        clicks.DEFAULT_VOLUME_DB
    ear: Literal["both", "left", "right", "alternate"] = "both"
    tone_hz: Annotated[float, Field(ge=clicks.MIN_TONE_HZ, le=clicks.MAX_TONE_HZ)] = clicks.DEFAULT_TONE_HZ
    flash: bool = False

    def click(self) -> clicks.ClickSettings:
        """The click these settings ask the audio metronome for."""
        return clicks.ClickSettings(sound=self.sound, volume_db=self.volume_db, ear=self.ear,
                                    tone_hz=self.tone_hz)


class LoadingRateCue(_Strict):
    """Loading-rate feedback: keep VALR at or below a percentage of the baseline VALR."""

    max_percent_of_baseline: Annotated[float, Field(gt=0, le=100)]


class TibialShockCue(_Strict):
    """Tibial-shock feedback: keep peak tibial acceleration below a % of baseline or a value in g."""

    max_percent_of_baseline: Annotated[float, Field(gt=0, le=100)] | None = None
    max_g: Annotated[float, Field(gt=0, le=30)] | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> TibialShockCue:
        if (self.max_percent_of_baseline is None) == (self.max_g is None):
            raise ValueError("give exactly one of max_percent_of_baseline or max_g")
        return self


class Fading(_Strict):
    """Faded feedback: cues are on for the first ``on_fraction`` of every ``period_s``."""

    on_fraction: Annotated[float, Field(ge=0, le=1)]
    period_s: Annotated[float, Field(gt=0, le=3600)] = 60.0


class Cues(_Strict):
    """The feedback given during a stage."""

    metronome: Metronome | None = None
    visual_band: bool = False
    loading_rate: LoadingRateCue | None = None
    tibial_shock: TibialShockCue | None = None
    fading: Fading | None = None

    @property
    def any(self) -> bool:
        """True when at least one cue is given."""
        return bool(self.metronome or self.visual_band or self.loading_rate or self.tibial_shock)


# ---- stages -----------------------------------------------------------------------------------

PositiveS = Annotated[float, Field(gt=0, le=MAX_STAGE_S)]
Speed = Annotated[float, Field(gt=0, le=MAX_SPEED_M_S)]
StepCount = Annotated[int, Field(ge=1, le=100_000)]


class DriftRule(_Strict):
    """End or pause a stage when a metric drifts: the mean of its last ``window_s`` against its first.

    The first window starts 10 s into the stage (the belt ramp and the approach to the target);
    the rule looks once both windows are full, and fires once per stage.
    """

    metric: Literal["cadence", "valr", "contact", "tibial_peak"]
    max_change_percent: Annotated[float, Field(gt=0, le=100)]
    window_s: Annotated[float, Field(ge=10, le=600)] = 60.0
    action: Literal["end", "pause"] = "end"


DRIFT_SETTLE_S = 10.0


class _Stage(_Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    duration_s: PositiveS
    instructions: str = ""
    checkin: bool | None = None


# What a % target is relative to: this session's own baseline stage, or the programme's first
# baseline (kept in the participant's programme state file, labsuite/programme_state.py).
SESSION_BASELINE = "session_baseline"
PROGRAMME_BASELINE = "programme_baseline"
BASELINE_OF = (SESSION_BASELINE, PROGRAMME_BASELINE)
PROGRESSION = "progression"  # target_percent: the programme's current progression step


class _Target(_Strict):
    target_spm: Annotated[float, Field(ge=MIN_CADENCE_SPM, le=MAX_CADENCE_SPM)] | None = None
    target_percent: (Annotated[float, Field(ge=-MAX_TARGET_PERCENT, le=MAX_TARGET_PERCENT)]
                     | Literal["progression"] | None) = None
    of: Literal["session_baseline", "programme_baseline"] | None = None
    band_percent: Annotated[float, Field(gt=0, le=MAX_BAND_PERCENT)] | None = None
    band_spm: Annotated[float, Field(gt=0)] | None = None

    @property
    def baseline_of(self) -> str:
        """What ``target_percent`` is relative to (``of``; this session's baseline by default)."""
        return self.of or SESSION_BASELINE

    def _check_target(self) -> None:
        if self.of is not None and self.target_percent is None:
            raise ValueError("'of' says what target_percent is relative to; give target_percent "
                             "or remove 'of'")
        if self.target_spm is not None and self.target_percent is not None:
            raise ValueError("give target_spm or target_percent, not both")
        if self.band_percent is not None and self.band_spm is not None:
            raise ValueError("give band_percent or band_spm, not both")
        has_target = self.target_spm is not None or self.target_percent is not None
        if not has_target and (self.band_percent is not None or self.band_spm is not None):
            raise ValueError("a tolerance band needs a target (target_spm or target_percent)")
        if self.band_spm is not None and self.target_spm is not None and self.band_spm >= self.target_spm:
            raise ValueError(f"band_spm {self.band_spm:g} is as wide as the target "
                             f"{self.target_spm:g} spm itself; expected a band narrower than the target")
        if self.band_spm is not None and self.band_spm > MAX_CADENCE_SPM * MAX_BAND_PERCENT / 100:
            raise ValueError(f"band_spm {self.band_spm:g} is wider than any plausible tolerance; "
                             f"expected at most {MAX_CADENCE_SPM * MAX_BAND_PERCENT / 100:g} spm")

    @property
    def has_target(self) -> bool:
        """True when the stage has a cadence target."""
        return self.target_spm is not None or self.target_percent is not None


class QuietStandingStage(_Stage):
    """Belt stopped, participant standing still: plates tared before, body weight measured."""

    kind: Literal["quiet_standing"]


class BaselineStage(_Stage):
    """Preferred running/walking: cadence and loading rate measured over the last N steps."""

    kind: Literal["baseline"]
    speed_m_s: Speed | None = None
    measure_last_steps: Annotated[int, Field(ge=5, le=10_000)] = 30
    until_steps: StepCount | None = None

    @model_validator(mode="after")
    def _enough_time(self) -> BaselineStage:
        most = self.duration_s * MAX_STEPS_PER_S
        if self.measure_last_steps > most:
            raise ValueError(f"measure_last_steps {self.measure_last_steps} cannot fit in duration_s "
                             f"{self.duration_s:g} (at most {int(most)} steps even at "
                             f"{MAX_CADENCE_SPM:g} spm); expected a longer stage or fewer steps")
        if self.until_steps is not None and self.until_steps < self.measure_last_steps:
            raise ValueError(f"until_steps {self.until_steps} ends the stage before "
                             f"measure_last_steps {self.measure_last_steps} steps were seen")
        return self


class CadenceStage(_Target, _Stage):
    """Training: a cadence target (absolute or % of baseline) with a band, and feedback cues."""

    kind: Literal["cadence"]
    speed_m_s: Speed | None = None
    cues: Cues = Cues()
    until_steps: StepCount | None = None
    until_in_band_steps: StepCount | None = None
    drift: DriftRule | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CadenceStage:
        self._check_target()
        _check_drift(self)
        if self.until_steps is not None and self.until_in_band_steps is not None:
            raise ValueError("give until_steps or until_in_band_steps, not both")
        if not self.has_target:
            if self.until_in_band_steps is not None:
                raise ValueError("until_in_band_steps needs a cadence target")
            if isinstance(self.cues.metronome, Metronome) and self.cues.metronome.spm == "target":
                raise ValueError("cues.metronome.spm 'target' needs a cadence target; "
                                 "give target_spm/target_percent or a metronome spm")
            if self.cues.visual_band:
                raise ValueError("cues.visual_band needs a cadence target")
            if not self.cues.any:
                raise ValueError("a cadence stage needs a cadence target or a feedback cue")
        if self.cues.fading is not None and not self.cues.any:
            raise ValueError("cues.fading has no cue to fade; add a cue or remove fading")
        return self


class RestStage(_Stage):
    """Belt stopped: rest between bouts (a check-in is usual here)."""

    kind: Literal["rest"]


class RetentionStage(_Target, _Stage):
    """No feedback: does the participant keep the new cadence? A target only scores the stage."""

    kind: Literal["retention"]
    speed_m_s: Speed | None = None
    until_steps: StepCount | None = None
    drift: DriftRule | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RetentionStage:
        self._check_target()
        _check_drift(self)
        return self


def _check_drift(stage: CadenceStage | RetentionStage) -> None:
    rule = stage.drift
    if rule is not None and DRIFT_SETTLE_S + 2 * rule.window_s > stage.duration_s:
        raise ValueError(f"drift.window_s {rule.window_s:g}: two windows after the first "
                         f"{DRIFT_SETTLE_S:g} s do not fit in duration_s {stage.duration_s:g}; "
                         "expected a shorter window or a longer stage")


Stage = Annotated[
    QuietStandingStage | BaselineStage | CadenceStage | RestStage | RetentionStage,
    Field(discriminator="kind"),
]
STAGE_MODELS: dict[str, type[_Stage]] = {
    "quiet_standing": QuietStandingStage,
    "baseline": BaselineStage,
    "cadence": CadenceStage,
    "rest": RestStage,
    "retention": RetentionStage,
}
MOVING_KINDS = ("baseline", "cadence", "retention")


# ---- session-level blocks ---------------------------------------------------------------------

class Participant(_Strict):
    """Participant fields the protocol may fix (the id itself comes from the command line)."""

    body_mass_kg: Annotated[float, Field(ge=20, le=250)] | None = None


class Safety(_Strict):
    """Belt ramps and watchdogs."""

    accel_m_s2: Annotated[float, Field(gt=0, le=3)] = 0.5
    stop_decel_m_s2: Annotated[float, Field(gt=0, le=5)] = 1.5
    # 0.4 s, so the stop command is out within 0.5 s of the last sample (20 ms ticks, chunk latency)
    force_timeout_s: Annotated[float, Field(gt=0, le=5)] = 0.4
    no_contact_timeout_s: Annotated[float, Field(gt=0, le=30)] = 3.0
    max_speed_m_s: Annotated[float, Field(gt=0, le=MAX_SPEED_M_S)] = 6.0
    # A device whose data stop pauses the session (belt ramped down); once it is back the session
    # resumes on the operator's confirmation (or by itself with auto_resume, for scripted studies),
    # and ends for safety when it is not resumed within this time.
    device_resume_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    auto_resume: bool = False


class Checkins(_Strict):
    """Symptom check-ins: pain 0-10 asked at stage boundaries; rules that pause or stop."""

    at_start: bool = True
    at_stage_boundaries: bool = True
    pause_at: Annotated[int, Field(ge=1, le=PAIN_MAX)] | None = 3
    stop_at: Annotated[int, Field(ge=1, le=PAIN_MAX)] | None = 5
    stop_on_rise: Annotated[int, Field(ge=1, le=PAIN_MAX)] | None = 2

    @model_validator(mode="after")
    def _ordered(self) -> Checkins:
        if self.pause_at is not None and self.stop_at is not None and self.pause_at > self.stop_at:
            raise ValueError(f"pause_at {self.pause_at} is above stop_at {self.stop_at}; "
                             "expected pause_at <= stop_at")
        return self


class SessionPlan(_Strict):
    """One session of a programme: overrides of stage durations and feedback fading."""

    label: str = ""
    duration_s: dict[Annotated[str, Field(pattern=_NAME)], PositiveS] = {}
    feedback_on_fraction: dict[Annotated[str, Field(pattern=_NAME)],
                               Annotated[float, Field(ge=0, le=1)]] = {}


class Progression(_Strict):
    """Cadence steps between sessions: advance when the last retention met the criterion.

    ``steps_percent`` are the steps in order (% of the baseline named by the stage's ``of``);
    the programme starts at the first. Before each session: advance one step when the last
    session's retention (no cues) had at least ``advance_in_band_percent`` of its steps in the
    band, hold otherwise, and go one step back (``on_pain``: ``step_back``) or hold (``hold``)
    when a pain rule fired in the last session (a pause or a stop for pain).
    """

    steps_percent: Annotated[list[Annotated[float, Field(ge=-MAX_TARGET_PERCENT,
                                                         le=MAX_TARGET_PERCENT)]],
                             Field(min_length=1, max_length=20)]
    advance_in_band_percent: Annotated[float, Field(gt=0, le=100)] = 80.0
    on_pain: Literal["step_back", "hold"] = "step_back"


class Rechecks(_Strict):
    """Recheck sessions after the training: no cues, short, compared with the retrained target.

    Due ``after_days`` after the last training session. A recheck runs the file's
    quiet-standing stages, then one retention stage of ``duration_s`` at the retrained target
    (the last training session's retention target) with ``band_percent``. It flags a regression
    when the runner lost more than ``max_gain_lost_percent`` of the cadence gain (retrained target
    minus programme baseline) or VALR rose more than ``max_valr_rise_percent`` above the last
    training session's retention VALR.
    """

    after_days: Annotated[list[Annotated[float, Field(gt=0, le=730)]],
                          Field(min_length=1, max_length=20)]
    duration_s: PositiveS = 120.0
    band_percent: Annotated[float, Field(gt=0, le=MAX_BAND_PERCENT)] = 3.0
    speed_m_s: Speed | None = None
    max_gain_lost_percent: Annotated[float, Field(gt=0, le=100)] = 50.0
    max_valr_rise_percent: Annotated[float, Field(gt=0, le=200)] = 10.0

    @model_validator(mode="after")
    def _ordered(self) -> Rechecks:
        if list(self.after_days) != sorted(self.after_days):
            raise ValueError(f"after_days {list(self.after_days)} are not in order; expected "
                             "increasing days after the last training session")
        return self


class Programme(_Strict):
    """A plan of sessions; a run names which one it is (``--session N``) or runs a recheck."""

    name: str
    weeks: Annotated[float, Field(gt=0, le=52)] | None = None
    sessions: Annotated[list[SessionPlan], Field(min_length=1, max_length=200)]
    progression: Progression | None = None
    rechecks: Rechecks | None = None


class SimLearning(_Strict):
    """How the virtual participant learns a cued cadence and keeps it between sessions."""

    per_step: Annotated[float, Field(ge=0, le=0.1)] = 0.0
    kept_between_sessions: Annotated[float, Field(ge=0, le=1)] = 1.0
    half_life_days: Annotated[float, Field(gt=0, le=3650)] = 30.0


class SimFatigue(_Strict):
    """How the virtual participant tires: per minute of running in a session."""

    cadence_spm_per_min: Annotated[float, Field(ge=-20, le=20)] = 0.0
    impact_percent_per_min: Annotated[float, Field(ge=-50, le=50)] = 0.0


class Simulation(_Strict):
    """How the simulated participant behaves when the protocol runs with ``--simulate``."""

    mode: Literal["run", "walk"] = "run"
    strike: Literal["rearfoot", "forefoot"] = "rearfoot"
    preferred_cadence_spm: Annotated[float, Field(ge=MIN_CADENCE_SPM, le=MAX_CADENCE_SPM)] | None = None
    body_mass_kg: Annotated[float, Field(ge=20, le=250)] = 70.0
    single_belt: bool = False
    learning: SimLearning = SimLearning()
    fatigue: SimFatigue = SimFatigue()


class Protocol(_Strict):
    """A whole protocol file."""

    schema_: Literal["labsuite-protocol/1"] = Field(alias="schema")
    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: str = ""
    reference: str = ""
    speed_m_s: Speed | None = None
    # The belt waits for the operator's Start before it first moves; true lets a scripted study
    # start it unattended (recorded in the file as a start_authorised marker with auto: true).
    auto_start: bool = False
    participant: Participant = Participant()
    safety: Safety = Safety()
    checkins: Checkins = Checkins()
    simulation: Simulation = Simulation()
    programme: Programme | None = None
    stages: Annotated[list[Stage], Field(min_length=1, max_length=500)]

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _cross_field(self) -> Protocol:
        _check_protocol(self)
        return self

    @property
    def metronome_cues(self) -> tuple[Metronome, ...]:
        """The metronome cues of the stages that give one, in stage order (empty: no metronome)."""
        return tuple(s.cues.metronome for s in self.stages
                     if isinstance(s, CadenceStage) and s.cues.metronome is not None)

    def stage_speed_m_s(self, index: int) -> float:
        """Belt speed of stage ``index`` in m/s (0 for stages with the belt stopped)."""
        stage = self.stages[index]
        if stage.kind not in MOVING_KINDS:
            return 0.0
        speed = getattr(stage, "speed_m_s", None) or self.speed_m_s
        assert speed is not None  # guaranteed by _check_protocol
        return float(speed)

    def for_session(self, session: int | None) -> Protocol:
        """Return the protocol as run in programme session ``session`` (1-based); ConfigError if none."""
        if self.programme is None:
            if session not in (None, 1):
                raise ConfigError(f"protocol {self.name!r} has no programme; --session {session} "
                                  "makes no sense (expected no --session)")
            return self
        n = len(self.programme.sessions)
        if session is None:
            raise ConfigError(f"protocol {self.name!r} is a programme of {n} sessions: "
                              f"give --session 1..{n}")
        if not 1 <= session <= n:
            raise ConfigError(f"--session {session}: protocol {self.name!r} has sessions 1..{n}")
        plan = self.programme.sessions[session - 1]
        stages = []
        for stage in self.stages:
            update: dict[str, Any] = {}
            if stage.name in plan.duration_s:
                update["duration_s"] = plan.duration_s[stage.name]
            if stage.name in plan.feedback_on_fraction and isinstance(stage, CadenceStage):
                period = stage.cues.fading.period_s if stage.cues.fading else 60.0
                fading = Fading(on_fraction=plan.feedback_on_fraction[stage.name], period_s=period)
                update["cues"] = stage.cues.model_copy(update={"fading": fading})
            stages.append(stage.model_copy(update=update) if update else stage)
        return self.model_copy(update={"stages": stages})


RECHECK_STAGE = "recheck"


def recheck_protocol(p: Protocol, *, target_spm: float) -> Protocol:
    """The protocol of a recheck session: the file's weigh-ins, then one no-cue run at ``target_spm``.

    ConfigError when the file plans no rechecks (``programme.rechecks``).
    """
    rc = p.programme.rechecks if p.programme is not None else None
    if rc is None:
        raise ConfigError(f"protocol {p.name!r} plans no rechecks; expected programme.rechecks "
                          "in the file")
    if not (math.isfinite(target_spm) and MIN_CADENCE_SPM <= target_spm <= MAX_CADENCE_SPM):
        raise ConfigError(f"recheck target {target_spm!r} spm: expected "
                          f"{MIN_CADENCE_SPM:g}-{MAX_CADENCE_SPM:g} steps/min")
    stages: list[Any] = [s for s in p.stages if s.kind == "quiet_standing"]
    stages.append(RetentionStage(
        name=RECHECK_STAGE, kind="retention", duration_s=rc.duration_s, target_spm=target_spm,
        band_percent=rc.band_percent, speed_m_s=rc.speed_m_s,
        instructions="Run as you normally do now; there is no click and no display."))
    return p.model_copy(update={"stages": stages})


def _check_protocol(p: Protocol) -> None:
    """Rules that span fields; each raises with the path of the offending field."""
    seen: dict[str, int] = {}
    baseline_before = False
    for i, stage in enumerate(p.stages):
        where = f"stages[{i}]"
        if stage.name in seen:
            raise _PathError(f"{where}.name", f"stage name {stage.name!r} is used twice "
                             f"(also stages[{seen[stage.name]}]); expected unique names")
        seen[stage.name] = i
        if stage.kind in MOVING_KINDS:
            speed = getattr(stage, "speed_m_s", None) or p.speed_m_s
            if speed is None:
                raise _PathError(f"{where}.speed_m_s", f"stage {stage.name!r} moves the belt but "
                                 "no speed is given; expected speed_m_s here or at the top level")
            if speed > p.safety.max_speed_m_s:
                field = f"{where}.speed_m_s" if getattr(stage, "speed_m_s", None) else "speed_m_s"
                raise _PathError(field, f"speed {speed:g} m/s exceeds safety.max_speed_m_s "
                                 f"{p.safety.max_speed_m_s:g}")
        if isinstance(stage, (CadenceStage, RetentionStage)):
            if stage.target_percent is not None and not baseline_before \
                    and stage.baseline_of == SESSION_BASELINE:
                raise _PathError(f"{where}.target_percent", "a % cadence target needs a baseline "
                                 "stage before it; expected a stage of kind baseline earlier, "
                                 "an absolute target_spm, or 'of: programme_baseline'")
            if stage.target_percent == PROGRESSION and (
                    p.programme is None or p.programme.progression is None):
                raise _PathError(f"{where}.target_percent", "target_percent 'progression' needs "
                                 "programme.progression (the cadence steps); expected a number "
                                 "or a programme with a progression")
            if stage.band_spm is not None and stage.target_percent is not None:
                # the smallest plausible baseline (and the lowest step) makes the widest band
                low = MIN_CADENCE_SPM * (1 + _lowest_percent(p, stage.target_percent) / 100)
                if stage.band_spm >= low:
                    raise _PathError(f"{where}.band_spm", f"band ±{stage.band_spm:g} spm is as wide "
                                     "as the target itself; expected a narrower band")
        if isinstance(stage, CadenceStage):
            for cue in ("loading_rate", "tibial_shock"):
                c = getattr(stage.cues, cue)
                if c is not None and c.max_percent_of_baseline is not None and not baseline_before:
                    raise _PathError(f"{where}.cues.{cue}.max_percent_of_baseline",
                                     "a target relative to baseline needs a baseline stage before it")
        if stage.kind == "baseline":
            baseline_before = True
    rc = p.programme.rechecks if p.programme is not None else None
    if rc is not None:
        speed = rc.speed_m_s or p.speed_m_s
        if speed is None:
            raise _PathError("programme.rechecks.speed_m_s", "a recheck runs on the belt but no "
                             "speed is given; expected speed_m_s here or at the top level")
        if speed > p.safety.max_speed_m_s:
            raise _PathError("programme.rechecks.speed_m_s", f"speed {speed:g} m/s exceeds "
                             f"safety.max_speed_m_s {p.safety.max_speed_m_s:g}")
    if p.programme is not None:
        for k, plan in enumerate(p.programme.sessions):
            for field in ("duration_s", "feedback_on_fraction"):
                for name in getattr(plan, field):
                    if name not in seen:
                        raise _PathError(f"programme.sessions[{k}].{field}.{name}",
                                         f"no stage is named {name!r}; expected one of {sorted(seen)}")
                    stage = p.stages[seen[name]]
                    if field == "feedback_on_fraction" and not (
                            isinstance(stage, CadenceStage) and stage.cues.any):
                        raise _PathError(f"programme.sessions[{k}].{field}.{name}",
                                         f"stage {name!r} gives no feedback cue to fade")


def _lowest_percent(p: Protocol, target_percent: float | str) -> float:
    """A stage's % target, the lowest progression step for ``progression``."""
    if isinstance(target_percent, str):
        prog = p.programme.progression if p.programme is not None else None
        return min(prog.steps_percent) if prog is not None else 0.0
    return float(target_percent)


class _PathError(ValueError):
    """A cross-field rule broken at a known field path (turned into a located error)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


# ---- loading ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProtocolIssue:
    """One problem in a protocol file: field path, line/column (1-based, 0 if unknown), message."""

    path: str
    line: int
    column: int
    message: str

    def format(self, file: str) -> str:
        """Render as ``file:line:col: path: message``."""
        where = f"{file}:{self.line}:{self.column}" if self.line else file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ProtocolError(ConfigError):
    """A protocol file is invalid; ``issues`` lists every problem found."""

    def __init__(self, file: str, issues: Sequence[ProtocolIssue]) -> None:
        self.file = file
        self.issues = tuple(issues)
        lines = [i.format(file) for i in self.issues]
        head = f"{file}: invalid protocol ({len(lines)} problem{'s' if len(lines) != 1 else ''})"
        super().__init__("\n".join([head, *("  " + x for x in lines)]))


def parse_protocol(text: str, file: str = "<protocol>") -> Protocol:
    """Validate protocol ``text``; ProtocolError listing every problem with path and line."""
    try:
        node, data = parse_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = " ".join(x for x in (exc.context, exc.problem) if x)
        raise ProtocolError(file, [ProtocolIssue("", mark.line + 1 if mark else 0,
                                                 mark.column + 1 if mark else 0,
                                                 f"YAML syntax error: {msg}")]) from None
    except yaml.YAMLError as exc:
        raise ProtocolError(file, [ProtocolIssue("", 0, 0, f"YAML error: {exc}")]) from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ProtocolError(file, [ProtocolIssue("", 1, 1, f"expected a mapping of protocol keys "
                                                 f"(schema, name, stages, ...), got {got}")])
    positions = node_positions(node)
    try:
        return Protocol.model_validate(data)
    except ValidationError as exc:
        issues = [_issue(err, positions) for err in exc.errors(include_url=False)]
        raise ProtocolError(file, _dedupe(issues)) from None


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol file; ConfigError if unreadable, ProtocolError if invalid."""
    p = Path(path)
    return parse_protocol(read_text(p, "protocol file"), str(p))


def _dedupe(issues: list[ProtocolIssue]) -> list[ProtocolIssue]:
    """Drop repeats and merge the per-member errors of one union field into one message."""
    out: list[ProtocolIssue] = []
    for i in issues:
        if i in out:
            continue
        same = next((k for k, o in enumerate(out) if o.path == i.path and i.path), None)
        if same is not None:
            o = out[same]
            out[same] = ProtocolIssue(o.path, o.line, o.column, f"{o.message}; or {i.message}")
            continue
        out.append(i)
    return out


def _clean_loc(loc: Sequence[str | int]) -> list[str | int]:
    """Drop pydantic's union-member tags (stage kinds, 'float', 'literal[...]') from a location."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(part, str):
            if i > 0 and isinstance(loc[i - 1], int) and part in STAGE_MODELS and out[:1] == ["stages"]:
                continue
            if part.startswith(("literal[", "function-", "constrained-")) or part in (
                    "float", "int", "str", "bool", "none", "dict", "list"):
                continue
            if part == "schema_":
                part = "schema"
            if part == "[key]":
                continue
        out.append(part)
    return out


def _issue(err: Any, positions: dict[Loc, tuple[int, int]]) -> ProtocolIssue:
    kind = err["type"]
    loc = _clean_loc(err["loc"])
    ctx = err.get("ctx") or {}
    message = err["msg"]
    if kind == "value_error" and isinstance(ctx.get("error"), _PathError):
        pe = ctx["error"]
        path = pe.path
        message = pe.message
        line, col = _lookup(positions, _parse_path(path))
        return ProtocolIssue(path, line, col, message)
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    got = err.get("input")
    if kind == "extra_forbidden":
        key = loc[-1]
        allowed = _allowed_keys(err["loc"][:-1])
        hint = ""
        close = difflib.get_close_matches(str(key), allowed, n=1)
        if close:
            hint = f"; did you mean {close[0]!r}?"
        message = f"unknown key {key!r}{hint} (allowed here: {', '.join(allowed)})"
        line, col = positions.get((*loc, KEY_MARK), _lookup(positions, loc))
        return ProtocolIssue(format_path(loc), line, col, message)
    if kind == "missing":
        message = "required field is missing"
    elif kind == "union_tag_invalid":
        message = f"unknown stage kind {ctx.get('tag')!r}; expected one of {', '.join(STAGE_MODELS)}"
        loc = [*loc, "kind"]
    elif kind == "union_tag_not_found":
        message = f"stage has no kind; expected kind: one of {', '.join(STAGE_MODELS)}"
    elif kind == "literal_error" and loc == ["schema"]:
        message = f"expected schema: {SCHEMA_ID!r}, got {got!r}"
    elif kind not in ("value_error",) and "input" in err and not isinstance(got, (dict, list)):
        message = f"{message} (got {got!r})"
    line, col = _lookup(positions, loc)
    return ProtocolIssue(format_path(loc), line, col, message)


def _parse_path(path: str) -> list[str | int]:
    out: list[str | int] = []
    for chunk in path.replace("[", ".[").split("."):
        if not chunk:
            continue
        out.append(int(chunk[1:-1]) if chunk.startswith("[") else chunk)
    return out


def _lookup(positions: dict[Loc, tuple[int, int]], loc: Sequence[str | int]) -> tuple[int, int]:
    """Position of the deepest existing prefix of ``loc`` (a missing key points at its parent)."""
    loc = tuple(loc)
    while loc:
        if loc in positions:
            return positions[loc]
        loc = loc[:-1]
    return positions.get((), (0, 0))


def _allowed_keys(raw_loc: Sequence[str | int]) -> list[str]:
    """Return the field names accepted at ``raw_loc`` (pydantic's location, stage-kind tags included)."""
    model: Any = Protocol
    for part in raw_loc:
        if model is None:
            break
        if isinstance(part, int):
            continue
        if model == "stages":
            model = STAGE_MODELS.get(part)
            continue
        if model is Protocol and part == "stages":
            model = "stages"
            continue
        if not hasattr(model, "model_fields"):
            return []
        field = model.model_fields.get(part) or model.model_fields.get(part + "_")
        model = _model_of(field.annotation) if field is not None else None
    return _field_names(model) if model != "stages" else []


def _field_names(model: Any) -> list[str]:
    if model is None or not hasattr(model, "model_fields"):
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_of(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        m = _model_of(arg)
        if m is not None:
            return m
    return None


def stage_kind_fields(kind: str) -> list[str]:
    """Field names of stage kind ``kind`` (used in messages and the docs)."""
    return _field_names(STAGE_MODELS[kind])


def nan_if_none(value: float | None) -> float:
    """Return ``value`` as float, NaN for None."""
    return math.nan if value is None else float(value)
