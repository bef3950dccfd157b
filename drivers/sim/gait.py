"""The virtual participant of the simulated gait lab: plans foot contacts, renders plate and IMU samples.

A participant process runs a :class:`GaitPlanner` and ships its :class:`PlannedStep` records as LSL
float vectors; each simulated device process renders its own samples from those records with the
stateless :func:`render_plate` / :func:`render_imu`. :func:`simulate_offline` does both in one call.

Physiology and the sources behind the numbers:

* Cadence and contact time: running cadence ~160-180 steps/min at 3-3.5 m/s, contact ~0.22-0.26 s
  (Fukuchi et al. 2017, PeerJ 5:e3298, RBDS; Heiderscheit et al. 2011, MSSE 43:296); walking
  ~100-120 steps/min at 1.2-1.4 m/s with ~60 % stance per stride, hence double support (Perry &
  Burnfield, Gait Analysis, 2nd ed.).
* Vertical force: running = impact pulse (rearfoot, ~1.5-2 BW at ~10-15 % of stance) + an active
  bump of ~2.3-2.8 BW (Clark, Ryan & Weyand 2017, J Exp Biol 220:247; Lieberman et al. 2010, Nature
  463:531 for forefoot strikes without an impact peak); walking = M shape, two peaks ~1.1 BW. The
  active amplitude is set from the vertical impulse balance (mean vertical force = body weight).
* Loading rate falls as cadence rises: the impact rise time scales with (cadence / preferred)^2.2
  and its amplitude with ^-1.5, so VALR is ~16 % lower at +7.5 % and ~20 % lower at +10 % cadence
  (Heiderscheit et al. 2011; Willy et al. 2016, Scand J Med Sci Sports 26:197). Cadence follows a
  metronome with a first-order lag over tens of steps (Bood et al. 2013, PLoS One 8:e76716, on
  metronome tracking) and a belt-speed change within a few steps.
* AP force: braking then propulsion with zero net impulse per step at steady speed (Cavanagh &
  Lafortune 1980, J Biomech 13:397).
* Tibial peak acceleration rises with loading rate, ~4-10 g in rearfoot runners (Hennig & Lafortune
  1991, J Appl Biomech 7:303; Crowell & Davis 2011, Clin Biomech 26:78).
* True VALR and impact peak follow Milner et al. (2006, MSSE 38:323): slope between 20 % and 80 % of
  the impact peak; without an impact peak (first local maximum within 20 % of stance) the 13 %-of-
  stance fallback of Blackmore et al. (2016, Clin Biomech 36:56). Both on the noise-free force.

Frames: lab x anterior (the belt moves towards -x), y medio-lateral (+ left), z up; GRF is the
reaction on the body (Fz > 0 in stance). IMU: x along the tibia towards the knee, y anterior, z to
the participant's left (right-handed), so gz is minus the rate of the shank angle (foot ahead > 0).
"""

from __future__ import annotations

import bisect
import math
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from labsuite import checks as check
from labsuite.errors import ConfigError, DeviceError
from labsuite.streams.contracts import BELTS

from . import waveforms as wf

MODES = ("run", "walk")
STRIKES = ("rearfoot", "forefoot")
FEET = ("left", "right")
KINDS = ("step", "stand")

G_M_S2 = wf.G_M_S2
STOP_SPEED_M_S = 0.2  # below this belt speed the participant stands instead of stepping
STAND_BLOCK_S = 0.25  # standing is planned in blocks of this length (weight shift, COP sway)
STAND_COP_FRAC = 0.45  # standing COP sits this far along the foot from the heel
STAND_SHANK_RAD = 0.03
SPEED_ADAPTATION_STEPS = 3.0  # preferred cadence follows a belt-speed change within a few steps
METHOD_IMPACT_PEAK = 0
METHOD_STANCE_13PCT = 1
IMPACT_WINDOW_FRAC = 0.20  # an impact peak is a local maximum within the first 20 % of stance
FALLBACK_FRAC = 0.13  # Blackmore et al. 2016
NOISE_TICKS_PER_S = 10_000  # noise is keyed by the sample time on a 0.1 ms grid (<= 10 kHz)


def default_cadence_spm(mode: str, speed_m_s: float) -> float:
    """Typical preferred cadence (steps/min) at a speed: linear fits to the ranges cited above."""
    v = min(max(speed_m_s, 0.5), 8.0)
    if mode == "run":
        return 140.0 + 9.0 * v  # 167 at 3.0 m/s, 171.5 at 3.5 m/s (RBDS 162-171)
    return 64.0 + 35.0 * min(v, 2.2)  # 109.5 at 1.3 m/s


def _duty(mode: str, speed_m_s: float) -> float:
    """Contact time over step time at the preferred cadence (running < 1: flight; walking > 1)."""
    if mode == "run":
        return min(max(0.66 - 0.04 * (speed_m_s - 3.0), 0.45), 0.85)
    return min(max(1.24 - 0.06 * (speed_m_s - 1.3), 1.1), 1.4)


# ---- settings --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParticipantSettings:
    """Who is on the treadmill and how they move; validated on construction.

    ``speed_m_s`` None means typical for the mode (3.0 m/s running, 1.3 m/s walking); 0 starts
    standing. ``preferred_cadence_spm`` None means typical for mode and speed
    (:func:`default_cadence_spm`); when given, it is the preferred cadence at the initial speed and
    scales with speed like the default. ``plate_noise_n`` is the SD of each force component's noise;
    ``variability_cv`` the step-to-step CV of force and impact parameters, ``step_time_cv`` that of
    step times; ``adaptation_steps`` the time constant (steps) of the approach to a commanded cadence.
    ``lookahead_s``: the planner hands out steps whose strike is at most this far ahead.
    ``crossover_fraction``: share of steps that land across the gap of a split belt, part of their
    force on the other belt (for testing cross-over flags; 0 by default).

    Learning and fatigue (all off by default): ``habit_spm`` is the cadence change learned in
    earlier sessions (steps/min above preferred) that the runner keeps without cues;
    ``learning_per_step`` the share of the gap between that habit and the metronome's demand closed
    at every cued step (0.004: about two thirds of the way in 250 steps). Without cues the runner
    returns to preferred + habit, not to preferred. ``fatigue_cadence_spm_per_min`` drifts the
    preferred cadence and ``fatigue_impact_pct_per_min`` steepens the impact (its rise time shortens
    by that % per minute of running in the session, the peak unchanged): the true VALR (Milner's
    20-80 % slope on the whole force) rises about 0.7 times as fast, tibial shock with it.
    """

    mass_kg: float = 70.0
    mode: str = "run"
    speed_m_s: float | None = None
    preferred_cadence_spm: float | None = None
    strike: str = "rearfoot"
    single_belt: bool = False
    plate_noise_n: float = 7.0
    imu_noise_m_s2: float = 0.3
    gyro_noise_rad_s: float = 0.03
    seed: int = 0
    variability_cv: float = 0.04
    step_time_cv: float = 0.02
    adaptation_steps: float = 12.0
    foot_length_m: float = 0.26
    step_width_m: float = 0.14
    lookahead_s: float = 0.5
    crossover_fraction: float = 0.0
    habit_spm: float = 0.0
    learning_per_step: float = 0.0
    fatigue_cadence_spm_per_min: float = 0.0
    fatigue_impact_pct_per_min: float = 0.0

    def __post_init__(self) -> None:
        where = "participant setting "
        check.one_of(where, "mode", self.mode, MODES)
        check.one_of(where, "strike", self.strike, STRIKES)
        check.flag(where, "single_belt", self.single_belt)
        check.integer(where, "seed", self.seed, low=0, high=2**63 - 1)
        for name, lo, hi in (("mass_kg", 20.0, 250.0), ("plate_noise_n", 0.0, 50.0),
                             ("imu_noise_m_s2", 0.0, 10.0), ("gyro_noise_rad_s", 0.0, 5.0),
                             ("variability_cv", 0.0, 0.2), ("step_time_cv", 0.0, 0.1),
                             ("adaptation_steps", 1.0, 200.0), ("foot_length_m", 0.15, 0.35),
                             ("step_width_m", 0.07, 0.4), ("lookahead_s", 0.05, 5.0),
                             ("crossover_fraction", 0.0, 0.5), ("habit_spm", -40.0, 40.0),
                             ("learning_per_step", 0.0, 0.1),
                             ("fatigue_cadence_spm_per_min", -20.0, 20.0),
                             ("fatigue_impact_pct_per_min", -50.0, 50.0)):
            check.number(where, name, getattr(self, name), low=lo, high=hi)
        check.number(where, "speed_m_s", self.speed_m_s, low=0.0,
                     high=2.5 if self.mode == "walk" else 8.0, optional=True)
        check.number(where, "preferred_cadence_spm", self.preferred_cadence_spm, low=60.0,
                     high=240.0, optional=True)
        if self.mode == "walk" and self.strike != "rearfoot":
            raise ConfigError("participant setting strike: walking is simulated heel-first only; "
                              "use strike='rearfoot' with mode='walk'")
        if self.preferred_cadence_spm is not None:
            lo, hi = (140.0, 220.0) if self.mode == "run" else (70.0, 140.0)
            if not lo <= self.preferred_cadence_spm <= hi:
                raise ConfigError(f"participant setting preferred_cadence_spm: {self.mode} "
                                  f"cadence should be in [{lo}, {hi}] steps/min, "
                                  f"got {self.preferred_cadence_spm!r}")

    @property
    def initial_speed_m_s(self) -> float:
        """Belt speed at the start (m/s): ``speed_m_s`` or the mode's typical speed."""
        if self.speed_m_s is not None:
            return float(self.speed_m_s)
        return 3.0 if self.mode == "run" else 1.3

    @property
    def weight_n(self) -> float:
        """Body weight in newtons."""
        return float(self.mass_kg) * G_M_S2

    def preferred_cadence_at(self, speed_m_s: float) -> float:
        """Preferred cadence (steps/min) at a belt speed, honouring ``preferred_cadence_spm``."""
        base = default_cadence_spm(self.mode, speed_m_s)
        if self.preferred_cadence_spm is None:
            return base
        v0 = self.initial_speed_m_s if self.initial_speed_m_s >= STOP_SPEED_M_S else (
            3.0 if self.mode == "run" else 1.3)
        return float(self.preferred_cadence_spm) * base / default_cadence_spm(self.mode, v0)


# ---- the planned step record -------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedStep:
    """One planned foot contact (``kind='step'``) or one foot's quiet-standing block (``'stand'``).

    Times are absolute seconds on the planner's clock. ``next_strike_s`` is when this foot's next
    record starts (the end of its swing). True metrics (``peak_bw``, impact peak, ``valr_bw_per_s``
    with ``valr_method`` 0 impact peak / 1 13 % of stance, ``tibial_peak_g``) are measured on the
    noise-free template; NaN where not applicable (e.g. standing). ``foot_x_m``/``foot_y_m``: heel
    position in the lab frame at strike. The remaining fields are the waveform's shape parameters.
    Standing blocks use ``load_start_bw``/``load_end_bw`` (this foot's share of body weight) and
    ``cop_dx_start_m``/``cop_dx_end_m`` (AP sway), interpolated smoothly over the block.
    ``other_belt_share`` > 0 marks a cross-over step: that fraction of the foot's force lands on the
    other belt of a split-belt treadmill.
    """

    kind: str
    foot: str
    index: int
    strike_s: float
    toe_off_s: float
    contact_s: float
    next_strike_s: float
    step_s: float
    cadence_spm: float
    speed_m_s: float
    peak_bw: float
    impact_present: bool
    impact_bw: float
    impact_s: float
    valr_bw_per_s: float
    valr_method: int
    tibial_peak_g: float
    foot_x_m: float
    foot_y_m: float
    foot_length_m: float
    imp_amp_bw: float = 0.0
    imp_rise_s: float = math.nan
    imp_decay_s: float = math.nan
    b1_amp_bw: float = 0.0
    b1_a: float = 2.0
    b1_b: float = 2.0
    b2_amp_bw: float = 0.0
    b2_a: float = 2.0
    b2_b: float = 2.0
    brake_bw: float = 0.0
    brake_end_frac: float = 0.5
    prop_bw: float = 0.0
    ml_bw: float = 0.0
    tz_peak_nm: float = 0.0
    cop_start_frac: float = STAND_COP_FRAC
    cop_end_frac: float = STAND_COP_FRAC
    cop_shape_k: float = 1.0
    shank_strike_rad: float = STAND_SHANK_RAD
    shank_toe_off_rad: float = STAND_SHANK_RAD
    next_shank_rad: float = STAND_SHANK_RAD
    shock_peak_s: float = 0.02
    shock_amp_m_s2: float = 0.0
    load_start_bw: float = math.nan
    load_end_bw: float = math.nan
    cop_dx_start_m: float = 0.0
    cop_dx_end_m: float = 0.0
    other_belt_share: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DeviceError(f"planned step field kind: expected one of {KINDS}, got {self.kind!r}")
        if self.foot not in FEET:
            raise DeviceError(f"planned step field foot: expected one of {FEET}, got {self.foot!r}")

    def to_vector(self) -> np.ndarray:
        """Return the record as a flat float64 vector in ``PLANNED_STEP_FIELDS`` order.

        ``kind`` is 0 step / 1 stand, ``foot`` 0 left / 1 right, booleans 0/1. Send it as a
        double-precision LSL sample: absolute times do not survive float32.
        """
        out = np.empty(len(PLANNED_STEP_FIELDS), dtype=np.float64)
        for i, name in enumerate(PLANNED_STEP_FIELDS):
            value = getattr(self, name)
            if name == "kind":
                value = KINDS.index(value)
            elif name == "foot":
                value = FEET.index(value)
            out[i] = float(value)
        return out

    @classmethod
    def from_vector(cls, vector: Sequence[float] | np.ndarray) -> PlannedStep:
        """Rebuild a record from :meth:`to_vector` output; DeviceError naming the bad field."""
        v = np.asarray(vector, dtype=np.float64).ravel()
        if v.size != len(PLANNED_STEP_FIELDS):
            raise DeviceError(f"planned step vector: expected {len(PLANNED_STEP_FIELDS)} values "
                              f"({', '.join(PLANNED_STEP_FIELDS[:3])}, ...), got {v.size}")
        kw: dict[str, Any] = {}
        for i, name in enumerate(PLANNED_STEP_FIELDS):
            x = float(v[i])
            if name in ("kind", "foot", "index", "impact_present", "valr_method"):
                if not math.isfinite(x) or x != round(x):
                    raise DeviceError(f"planned step vector field {name} (index {i}): expected "
                                      f"an integer code, got {x!r}")
                code = round(x)
                if name == "kind":
                    if code not in (0, 1):
                        raise DeviceError(f"planned step vector field kind (index {i}): expected "
                                          f"0 (step) or 1 (stand), got {x!r}")
                    kw[name] = KINDS[code]
                elif name == "foot":
                    if code not in (0, 1):
                        raise DeviceError(f"planned step vector field foot (index {i}): expected "
                                          f"0 (left) or 1 (right), got {x!r}")
                    kw[name] = FEET[code]
                elif name == "impact_present":
                    kw[name] = bool(code)
                else:
                    kw[name] = code
            else:
                if name in _REQUIRED_FINITE and not math.isfinite(x):
                    raise DeviceError(f"planned step vector field {name} (index {i}): expected a "
                                      f"finite number, got {x!r}")
                kw[name] = x
        return cls(**kw)


PLANNED_STEP_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PlannedStep))
_COL = {name: i for i, name in enumerate(PLANNED_STEP_FIELDS)}
_REQUIRED_FINITE = frozenset(("strike_s", "toe_off_s", "contact_s", "next_strike_s", "speed_m_s",
                              "foot_x_m", "foot_y_m", "foot_length_m"))


def steps_to_array(steps: Iterable[PlannedStep]) -> np.ndarray:
    """Stack records into a (k, len(PLANNED_STEP_FIELDS)) float64 array (rows = to_vector())."""
    rows = [s.to_vector() for s in steps]
    if not rows:
        return np.empty((0, len(PLANNED_STEP_FIELDS)))
    return np.vstack(rows)


def prune_records(rows: Sequence[PlannedStep] | np.ndarray, t0_s: float) -> np.ndarray:
    """Keep the records a renderer still needs for samples at or after ``t0_s`` (as an array).

    A record whose foot has struck again before ``t0_s`` can no longer touch those samples; a live
    device process prunes its received records with this so rendering stays cheap.
    """
    arr = _as_rows(rows)
    return arr[arr[:, _COL["next_strike_s"]] >= t0_s]


def array_to_steps(rows: np.ndarray) -> list[PlannedStep]:
    """Inverse of :func:`steps_to_array`."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(PLANNED_STEP_FIELDS))
    return [PlannedStep.from_vector(r) for r in rows]


# ---- true metrics on the noise-free template ---------------------------------------------------

def milner_valr(tau_s: np.ndarray, f_bw: np.ndarray, contact_s: float
                ) -> tuple[float, int, float, float]:
    """VALR (BW/s) of one contact by Milner et al. 2006, with the 13 % fallback.

    Returns (valr, method, impact_bw, impact_tau_s); impact values NaN when there is no impact peak
    (no local maximum within the first 20 % of stance). The slope is 0.6 x reference / (t80 - t20),
    t20 and t80 the first (linearly interpolated) crossings of 20 % and 80 % of the reference force.
    """
    n_win = int(np.searchsorted(tau_s, IMPACT_WINDOW_FRAC * contact_s))
    mid = f_bw[1:n_win]
    is_max = (mid > f_bw[:n_win - 1]) & (mid >= f_bw[2:n_win + 1]) if n_win > 1 else mid > 0
    hits = np.flatnonzero(is_max)
    imp_i = int(hits[0]) + 1 if hits.size else -1
    if imp_i > 0:
        ref, ref_tau, method = float(f_bw[imp_i]), float(tau_s[imp_i]), METHOD_IMPACT_PEAK
    else:
        ref_tau = FALLBACK_FRAC * contact_s
        ref, method = float(np.interp(ref_tau, tau_s, f_bw)), METHOD_STANCE_13PCT
    end = int(np.searchsorted(tau_s, ref_tau)) + 1
    t20 = _first_crossing(tau_s[:end], f_bw[:end], 0.2 * ref)
    t80 = _first_crossing(tau_s[:end], f_bw[:end], 0.8 * ref)
    valr = 0.6 * ref / (t80 - t20) if t80 > t20 else math.nan
    if imp_i > 0:
        return valr, method, ref, ref_tau
    return valr, method, math.nan, math.nan


def _first_crossing(t: np.ndarray, f: np.ndarray, level: float) -> float:
    above = np.nonzero(f >= level)[0]
    if above.size == 0:
        return math.nan
    j = int(above[0])
    if j == 0:
        return float(t[0])
    return float(t[j - 1] + (level - f[j - 1]) * (t[j] - t[j - 1]) / (f[j] - f[j - 1]))


def _shank_axes_stance(tau_s: np.ndarray, contact_s: float, strike_rad: float, toe_off_rad: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gravity + rotation specific force (ax, ay) and shank angle rate during stance."""
    theta, d1, d2 = wf.shank_kinematics(tau_s / contact_s, contact_s, strike_rad, toe_off_rad)
    ax = G_M_S2 * np.cos(theta) - wf.SENSOR_ABOVE_ANKLE_M * d1 * d1
    ay = G_M_S2 * np.sin(theta) - wf.SENSOR_ABOVE_ANKLE_M * d2
    return ax, ay, d1


# ---- the planner -----------------------------------------------------------------------------

@dataclass
class _Commands:
    """A time line of (at_s, value) commands; the value in effect at t is the last with at_s <= t."""

    initial: Any
    times: list[float] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)

    def add(self, at_s: float, value: Any) -> None:
        i = bisect.bisect_right(self.times, at_s)
        self.times.insert(i, at_s)
        self.values.insert(i, value)

    def at(self, t_s: float) -> Any:
        i = bisect.bisect_right(self.times, t_s)
        return self.initial if i == 0 else self.values[i - 1]

    def at_many(self, t_s: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(np.asarray(self.times, dtype=float), t_s, "right") - 1
        values = np.array([self.initial, *self.values], dtype=float)
        return values[idx + 1]


class GaitPlanner:
    """Plans the participant's foot contacts; the only stateful part of the virtual participant.

    Call :meth:`plan_until` with the current time; each record is returned once, in strike order,
    as soon as its strike is within ``settings.lookahead_s``. Commands (:meth:`set_target_cadence`,
    :meth:`set_belt_speed`) apply to steps whose strike is at or after ``at_s`` and that are not yet
    committed: the planner commits up to two steps beyond the lookahead (a step must know when its
    foot lands again), so a live command acts within about a second, as a person's would. The same
    settings, commands and calls give the same records, however :meth:`plan_until` is chunked.
    """

    def __init__(self, settings: ParticipantSettings, start_time_s: float = 0.0) -> None:
        if not isinstance(settings, ParticipantSettings):
            raise ConfigError("GaitPlanner settings: expected a ParticipantSettings, "
                              f"got {type(settings).__name__}")
        if not math.isfinite(start_time_s):
            raise ConfigError(f"GaitPlanner start_time_s: expected a finite time, got {start_time_s!r}")
        self.settings = settings
        self.start_time_s = float(start_time_s)
        self._rng = np.random.default_rng([int(settings.seed), 0x6A17])
        self._cadence = _Commands(None)
        self._speed = _Commands(settings.initial_speed_m_s)
        self._queue: deque[dict[str, Any]] = deque()
        self._index = 0
        self._horizon_s = -math.inf
        # Participant state, advanced at each commit.
        self._last_step: dict[str, Any] | None = None
        self._last_stand_end_s: float | None = None
        self._next_foot = "left"
        self._offset_spm = 0.0
        self._pref_spm: float | None = None
        self._x_com_m = 0.0
        self._load_left = 0.5
        self._cop_dx = {"left": 0.0, "right": 0.0}
        self._standing = False
        self._stand_ramped_out = False
        self.habit_spm = float(settings.habit_spm)  # learned offset, carried to the next session
        self._run_s = 0.0  # running time so far (drives fatigue)

    # ---- commands ---------------------------------------------------------------------------
    def set_target_cadence(self, spm: float | None, at_s: float) -> None:
        """Command a metronome cadence (steps/min) from ``at_s`` on; None returns to preferred."""
        if spm is not None:
            if isinstance(spm, bool) or not isinstance(spm, (int, float, np.integer, np.floating)) \
                    or not 60.0 <= float(spm) <= 240.0:
                raise ConfigError(f"target cadence spm: expected None or 60-240 steps/min, got {spm!r}")
            spm = float(spm)
        self._cadence.add(self._time(at_s, "target cadence at_s"), spm)

    def set_belt_speed(self, m_s: float, at_s: float) -> None:
        """Tell the participant the belt speed (m/s) from ``at_s`` on; below 0.2 m/s they stand."""
        limit = 2.5 if self.settings.mode == "walk" else 8.0
        if isinstance(m_s, bool) or not isinstance(m_s, (int, float, np.integer, np.floating)) \
                or not 0.0 <= float(m_s) <= limit:
            raise ConfigError(f"belt speed m_s: expected 0-{limit} m/s for {self.settings.mode} "
                              f"mode, got {m_s!r}")
        self._speed.add(self._time(at_s, "belt speed at_s"), float(m_s))

    def belt_speed_at(self, t_s: np.ndarray) -> np.ndarray:
        """Belt speed (m/s) in effect at each time, from the commands received so far."""
        return self._speed.at_many(np.asarray(t_s, dtype=float))

    @staticmethod
    def _time(at_s: float, what: str) -> float:
        if isinstance(at_s, bool) or not isinstance(at_s, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(at_s)):
            raise ConfigError(f"{what}: expected a finite time in seconds, got {at_s!r}")
        return float(at_s)

    @property
    def horizon_s(self) -> float:
        """Every record with strike <= this time has been returned (-inf before the first call)."""
        return self._horizon_s

    # ---- planning ---------------------------------------------------------------------------
    def plan_until(self, t_s: float) -> list[PlannedStep]:
        """Return the records not yet returned whose strike is <= ``t_s`` + lookahead."""
        horizon = float(t_s) + self.settings.lookahead_s
        if horizon <= self._horizon_s:
            return []
        self._horizon_s = horizon
        out: list[PlannedStep] = []
        while True:
            if not self._queue:
                self._commit()
            rec = self._queue[0]
            if rec["strike_s"] > horizon:
                break
            nxt = self._next_same_foot(rec["foot"])
            self._queue.popleft()
            rec["next_strike_s"] = float(nxt["strike_s"])
            rec["next_shank_rad"] = float(nxt.get("shank_strike_rad", STAND_SHANK_RAD))
            rec["index"] = self._index
            self._index += 1
            out.append(PlannedStep(**rec))
        return out

    def _next_same_foot(self, foot: str) -> dict[str, Any]:
        while True:
            for i in range(1, len(self._queue)):
                if self._queue[i]["foot"] == foot:
                    return self._queue[i]
            self._commit()

    def _commit(self) -> None:
        """Decide the next event (a step or a standing block) and append its record(s)."""
        if self._last_step is None and self._last_stand_end_s is None:
            t_next = self.start_time_s
        elif self._standing:
            assert self._last_stand_end_s is not None
            t_next = self._last_stand_end_s
        else:
            assert self._last_step is not None
            t_next = self._last_step["strike_s"] + self._last_step["step_s"]
        speed = float(self._speed.at(t_next))
        if self._standing and not self._stand_ramped_out:
            # Still loaded from standing: one more block, which unloads if the belt runs by its end.
            self._commit_stand(t_next)
        elif speed < STOP_SPEED_M_S:
            if not self._standing and self._last_step is not None:
                # The last contact finishes, then both feet come down: a small hop into standing.
                t_next = self._last_step["toe_off_s"]
            self._commit_stand(t_next)
        else:
            self._commit_step(t_next, speed)

    def _commit_stand(self, start_s: float) -> None:
        s = self.settings
        end_s = start_s + STAND_BLOCK_S
        # Load ramps in after stepping (or after a block that unloaded), out before stepping again.
        ramp_in = self._stand_ramped_out if self._standing else self._last_step is not None
        ramp_out = float(self._speed.at(end_s)) >= STOP_SPEED_M_S
        rng = self._rng
        load_l0 = self._load_left
        load_l1 = 0.5 + 0.85 * (load_l0 - 0.5) + rng.normal(0.0, 0.02)
        load_l1 = min(max(load_l1, 0.3), 0.7)
        self._load_left = load_l1
        self._x_com_m *= 0.98
        for foot, sign in (("left", 1.0), ("right", -1.0)):
            dx0 = self._cop_dx[foot]
            dx1 = 0.85 * dx0 + rng.normal(0.0, 0.003)
            self._cop_dx[foot] = dx1
            l0 = load_l0 if foot == "left" else 1.0 - load_l0
            l1 = load_l1 if foot == "left" else 1.0 - load_l1
            rec = _stand_record(
                foot=foot, start_s=start_s, end_s=end_s,
                load_start=0.0 if ramp_in else l0, load_end=0.0 if ramp_out else l1,
                heel_x=self._x_com_m - STAND_COP_FRAC * s.foot_length_m,
                y=sign * 0.5 * s.step_width_m, foot_length=s.foot_length_m,
                dx0=dx0, dx1=dx1)
            self._queue.append(rec)
        self._standing = True
        self._stand_ramped_out = ramp_out
        self._last_stand_end_s = end_s

    def _commit_step(self, strike_s: float, speed: float) -> None:
        s = self.settings
        rng = self._rng
        cv = s.variability_cv
        foot = self._next_foot
        self._next_foot = "right" if foot == "left" else "left"
        self._standing = False
        # Cadence = preferred at this speed (followed within a few steps, as on a ramping belt) +
        # an offset that approaches the metronome's demand to first order over tens of steps with
        # a small random drift (people do not lock on at once).
        pref_now = s.preferred_cadence_at(speed)
        if self._pref_spm is None:
            self._pref_spm = pref_now
        self._pref_spm += (pref_now - self._pref_spm) / SPEED_ADAPTATION_STEPS
        run_min = self._run_s / 60.0
        pref = self._pref_spm + s.fatigue_cadence_spm_per_min * run_min
        target = self._cadence.at(strike_s)
        if target is None:
            goal = self.habit_spm  # what was learned stays without cues
        else:
            goal = target - pref
            self.habit_spm += s.learning_per_step * (target - self._pref_spm - self.habit_spm)
        self._offset_spm += (goal - self._offset_spm) / s.adaptation_steps
        self._offset_spm += rng.normal(0.0, 0.25)
        cadence = pref + self._offset_spm
        t_nom = 60.0 / cadence
        t_pref = 60.0 / pref
        step_s = t_nom * (1.0 + rng.normal(0.0, s.step_time_cv))
        self._run_s += step_s
        q = cadence / pref  # cadence relative to preferred: drives loading rate
        tired = max(0.2, 1.0 + s.fatigue_impact_pct_per_min / 100.0 * run_min)
        run = s.mode == "run"
        # Contact time shortens less than the step time when cadence rises (Heiderscheit 2011).
        contact = _duty(s.mode, speed) * t_pref * (t_nom / t_pref) ** 0.5
        if run:
            contact = min(contact * (1.0 + rng.normal(0.0, 0.5 * cv)), 0.92 * step_s)
        else:
            # Toe-off follows the other foot's strike (at strike + step_s) by the double support,
            # so the two contacts overlap by a consistent time whatever the step-time jitter.
            double_s = (_duty(s.mode, speed) - 1.0) * t_nom * (1.0 + rng.normal(0.0, cv))
            contact = step_s + max(double_s, 0.05 * t_nom)
        e = lambda scale=1.0: 1.0 + rng.normal(0.0, scale * cv)  # noqa: E731
        rec: dict[str, Any] = {"kind": "step", "foot": foot, "strike_s": strike_s,
                               "toe_off_s": strike_s + contact, "contact_s": contact,
                               "step_s": step_s, "cadence_spm": 60.0 / step_s,
                               "speed_m_s": speed, "foot_length_m": s.foot_length_m}
        shape: dict[str, float] = {}
        if run and s.strike == "rearfoot":
            # Impact scales with speed (Hennig & Lafortune 1991); clamp for belt ramps and jogging.
            u = min(max(speed / 3.0, 0.6), 2.0)
            # fatigue steepens the impact (a shorter rise at the same peak): VALR rises with it
            rise = 0.028 * q**2.2 * u**-0.5 * e() / tired
            shape.update(imp_amp_bw=1.05 * q**-1.5 * u**0.5 * e(), imp_rise_s=rise,
                         imp_decay_s=0.9 * rise * e(0.5), b1_a=1.6, b1_b=1.4,
                         cop_start_frac=0.06, cop_end_frac=0.85, cop_shape_k=3.0,
                         brake_end_frac=0.45, shank_strike_rad=0.18 * e(2.0),
                         shank_toe_off_rad=-0.8 * e(), shock_peak_s=0.8 * rise)
        elif run:
            shape.update(imp_amp_bw=0.0, b1_a=1.4 * e(0.5), b1_b=1.6 * e(0.5),
                         cop_start_frac=0.70, cop_end_frac=0.88, cop_shape_k=1.0,
                         brake_end_frac=0.5, shank_strike_rad=0.05 * e(2.0),
                         shank_toe_off_rad=-0.8 * e(), shock_peak_s=0.03 * e())
        else:
            shape.update(imp_amp_bw=0.0, b1_a=1.8, b1_b=5.75, b2_a=5.75, b2_b=1.8,
                         cop_start_frac=0.04, cop_end_frac=0.9, cop_shape_k=1.3,
                         brake_end_frac=0.5, shank_strike_rad=0.3 * e(),
                         shank_toe_off_rad=-0.6 * e(), shock_peak_s=0.025 * e())
        # Vertical impulse balance: the contact carries the body for one step time.
        imp_area = wf.vertical_impulse_bw_s(contact, shape.get("imp_amp_bw", 0.0),
                                            shape.get("imp_rise_s", 1.0),
                                            shape.get("imp_decay_s", 1.0), 0.0, 2.0, 2.0,
                                            0.0, 2.0, 2.0)
        if run:
            k1 = wf.beta_bump_area(shape["b1_a"], shape["b1_b"])
            shape["b1_amp_bw"] = (step_s - imp_area) / (k1 * contact)
        else:
            k1 = wf.beta_bump_area(shape["b1_a"], shape["b1_b"])
            k2 = wf.beta_bump_area(shape["b2_a"], shape["b2_b"])
            amp = step_s / ((k1 + k2) * contact)
            skew = rng.normal(0.0, cv)
            # Keep the impulse while letting the two peaks differ step to step.
            shape["b1_amp_bw"] = amp * (1.0 + skew * k2 / k1)
            shape["b2_amp_bw"] = amp * (1.0 - skew)
        brake = (0.38 * (speed / 3.0) ** 0.7 if run else 0.2 * speed / 1.3) * e()
        fb = shape["brake_end_frac"]
        shape.update(brake_bw=brake, prop_bw=brake * fb / (1.0 - fb),  # zero net AP impulse
                     ml_bw=(0.07 if run else 0.05) * e(2.0),
                     tz_peak_nm=(0.008 if run else 0.005) * s.weight_n * e(2.0))
        rec.update(shape)
        self._true_metrics(rec)
        # Foot placement: centre the contact under the body, which drifts slowly on the belt.
        self._x_com_m = 0.9 * self._x_com_m + rng.normal(0.0, 0.01)
        mid_frac = float(wf.cop_along_foot(np.array([0.5]), rec["cop_start_frac"],
                                           rec["cop_end_frac"], rec["cop_shape_k"])[0])
        rec["foot_x_m"] = (self._x_com_m + 0.5 * speed * contact - mid_frac * s.foot_length_m
                           + rng.normal(0.0, 0.015))
        sign = 1.0 if foot == "left" else -1.0
        y = 0.5 * s.step_width_m + rng.normal(0.0, 0.012)
        rec["foot_y_m"] = sign * max(y, 0.035)  # stay on its own belt (y > 0 left)
        # Drawn only when asked for, so other settings keep their random sequence.
        if s.crossover_fraction > 0.0 and rng.random() < s.crossover_fraction:
            rec["foot_y_m"] = sign * 0.005  # straddling the gap between the belts
            rec["other_belt_share"] = rng.uniform(0.2, 0.5)
        self._queue.append(rec)
        self._last_step = rec

    def _true_metrics(self, rec: dict[str, Any]) -> None:
        """Measure peak, impact peak, VALR and set the tibial shock on the noise-free template."""
        contact = rec["contact_s"]
        tau = np.linspace(0.0, contact, 4001)
        f = wf.vertical_bw(tau, contact, rec.get("imp_amp_bw", 0.0), rec.get("imp_rise_s", 1.0),
                           rec.get("imp_decay_s", 1.0), rec["b1_amp_bw"], rec["b1_a"],
                           rec["b1_b"], rec.get("b2_amp_bw", 0.0), rec.get("b2_a", 2.0),
                           rec.get("b2_b", 2.0))
        valr, method, imp_bw, imp_tau = milner_valr(tau, f, contact)
        rec.update(peak_bw=float(f.max()), impact_present=method == METHOD_IMPACT_PEAK,
                   impact_bw=imp_bw, impact_s=rec["strike_s"] + imp_tau,
                   valr_bw_per_s=valr, valr_method=method)
        # Tibial peak rises with loading rate (r ~ 0.6-0.8 in the cited studies), with scatter.
        peak_g = (1.2 + 0.08 * valr) * (1.0 + self._rng.normal(0.0, 0.08))
        rec["tibial_peak_g"] = peak_g
        t_pk = np.array([rec["shock_peak_s"]])
        base_ax, _, _ = _shank_axes_stance(t_pk, contact, rec["shank_strike_rad"],
                                           rec["shank_toe_off_rad"])
        rec["shock_amp_m_s2"] = peak_g * G_M_S2 - float(base_ax[0])


def _stand_record(*, foot: str, start_s: float, end_s: float, load_start: float, load_end: float,
                  heel_x: float, y: float, foot_length: float, dx0: float, dx1: float
                  ) -> dict[str, Any]:
    nan = math.nan
    return {"kind": "stand", "foot": foot, "strike_s": start_s, "toe_off_s": end_s,
            "contact_s": end_s - start_s, "step_s": nan, "cadence_spm": nan, "speed_m_s": 0.0,
            "peak_bw": max(load_start, load_end), "impact_present": False, "impact_bw": nan,
            "impact_s": nan, "valr_bw_per_s": nan, "valr_method": METHOD_STANCE_13PCT,
            "tibial_peak_g": nan, "foot_x_m": heel_x, "foot_y_m": y,
            "foot_length_m": foot_length, "load_start_bw": load_start, "load_end_bw": load_end,
            "cop_dx_start_m": dx0, "cop_dx_end_m": dx1}


# ---- rendering -------------------------------------------------------------------------------

def _as_rows(steps: Sequence[PlannedStep] | np.ndarray) -> np.ndarray:
    if isinstance(steps, np.ndarray):
        rows = np.asarray(steps, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(PLANNED_STEP_FIELDS):
            raise ConfigError(f"steps array: expected shape (k, {len(PLANNED_STEP_FIELDS)}), "
                              f"got {rows.shape}")
        return rows
    return steps_to_array(steps)


def _check_times(t: np.ndarray, what: str) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1:
        raise ConfigError(f"{what} t: expected a 1-D array of sample times (s), got shape {t.shape}")
    if t.size and not np.all(np.isfinite(t)):
        raise ConfigError(f"{what} t: sample times must be finite")
    if t.size > 1 and np.any(np.diff(t) < 0.0):
        raise ConfigError(f"{what} t: sample times must be non-decreasing")
    return t


def _stream_keys(seed: int, stream: str, n: int) -> np.ndarray:
    """Return n well-mixed 64-bit keys for (seed, stream): one per uniform draw of each channel."""
    base = (int(seed) * 0x9E3779B97F4A7C15 + zlib.crc32(stream.encode()) * 0x100000001B3) \
        & 0xFFFFFFFFFFFFFFFF
    return _splitmix64(np.uint64(base) + np.arange(1, n + 1, dtype=np.uint64)
                       * np.uint64(0xD1B54A32D192ED03))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # Array arithmetic on uint64 wraps modulo 2**64 as the algorithm requires.
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sample_noise(seed: int, stream: str, t: np.ndarray, n_channels: int) -> np.ndarray:
    """Standard-normal noise (n, n_channels) that is a pure function of (seed, stream, sample time).

    The sample time is quantised to 0.1 ms and hashed (splitmix64, a counter-based generator) with a
    key per (seed, stream, channel); Box-Muller turns two hashes into one normal value. So two
    processes, or two chunkings, rendering the same times draw the same noise.
    """
    t = np.asarray(t, dtype=np.float64)
    ticks = np.rint(t * NOISE_TICKS_PER_S).astype(np.int64).view(np.uint64)
    keys = _stream_keys(seed, stream, 2 * n_channels)
    h = _splitmix64(_splitmix64(ticks[:, None] + keys[None, :]))
    u = (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    u1 = u[:, :n_channels] + 0.5 / 9007199254740992.0  # in (0, 1): log is finite
    u2 = u[:, n_channels:]
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _smooth(u: np.ndarray) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(u, 0.0, 1.0))


def render_plate(steps: Sequence[PlannedStep] | np.ndarray, t: np.ndarray, belt: str,
                 settings: ParticipantSettings, *, noise: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one belt plate at sample times ``t`` (s): lab-frame GRF on the body, COP and free moment.

    ``belt`` 'left' / 'right' takes that foot's contacts only, 'single' both feet (one plate). Returns
    ``grf_lab`` (n, 3) N, ``cop_lab`` (n, 2) m (0, 0 where nothing loads the plate) and ``tz`` (n,)
    N*m, the free moment about the COP. Noise (``settings.plate_noise_n`` SD, each force component)
    depends only on (seed, belt, t). ``steps`` must hold every record with strike <= t[-1] (older
    ones whose contact ended before t[0] may be dropped), as records or a :func:`steps_to_array`
    array.
    """
    check.one_of("render_plate ", "belt", belt, BELTS)
    t = _check_times(t, "render_plate")
    rows = _as_rows(steps)
    n = t.size
    fz = np.zeros(n)
    fx = np.zeros(n)
    fy = np.zeros(n)
    mx_cop = np.zeros(n)  # sum of Fz_i * x_i
    my_cop = np.zeros(n)  # sum of Fz_i * y_i
    tz = np.zeros(n)  # sum of free moments + sum (x_i Fy_i - y_i Fx_i), shifted to the COP below
    if n and rows.size:
        sel = (rows[:, _COL["toe_off_s"]] >= t[0]) & (rows[:, _COL["strike_s"]] <= t[-1])
        if belt != "single":
            own = rows[:, _COL["foot"]] == FEET.index(belt)
            sel &= own | (rows[:, _COL["other_belt_share"]] > 0.0)
        w = settings.weight_n
        for r in rows[sel]:
            a, b = r[_COL["strike_s"]], r[_COL["toe_off_s"]]
            i0 = int(np.searchsorted(t, a, "left"))
            i1 = int(np.searchsorted(t, b, "left"))
            if i1 <= i0:
                continue
            tt = t[i0:i1]
            sign = 1.0 if r[_COL["foot"]] == 0 else -1.0
            length = r[_COL["foot_length_m"]]
            # Split belts: a cross-over step puts part of its load on the other belt, each part
            # centred on its own belt just beside the gap.
            share = r[_COL["other_belt_share"]] if belt != "single" else 0.0
            if share > 0.0:
                mine = r[_COL["foot"]] == FEET.index(belt)
                factor = 1.0 - share if mine else share
                y_part = 0.03 * (1.0 if belt == "left" else -1.0)
            else:
                factor, y_part = 1.0, math.nan
            if r[_COL["kind"]] == 1:  # standing block
                u = _smooth((tt - a) / (b - a))
                load = r[_COL["load_start_bw"]] + (r[_COL["load_end_bw"]]
                                                   - r[_COL["load_start_bw"]]) * u
                dx = r[_COL["cop_dx_start_m"]] + (r[_COL["cop_dx_end_m"]]
                                                  - r[_COL["cop_dx_start_m"]]) * u
                z = w * load
                x = r[_COL["foot_x_m"]] + STAND_COP_FRAC * length + dx
                y = np.full_like(tt, r[_COL["foot_y_m"]])
                hx = np.zeros_like(tt)
                hy = np.zeros_like(tt)
                tau_free = np.zeros_like(tt)
            else:
                contact = r[_COL["contact_s"]]
                tau = tt - a
                s = tau / contact
                z = w * wf.vertical_bw(tau, contact, r[_COL["imp_amp_bw"]], r[_COL["imp_rise_s"]],
                                       r[_COL["imp_decay_s"]], r[_COL["b1_amp_bw"]],
                                       r[_COL["b1_a"]], r[_COL["b1_b"]], r[_COL["b2_amp_bw"]],
                                       r[_COL["b2_a"]], r[_COL["b2_b"]])
                hx = w * wf.ap_bw(s, r[_COL["brake_bw"]], r[_COL["brake_end_frac"]],
                                  r[_COL["prop_bw"]])
                hy = w * wf.ml_bw(s, r[_COL["ml_bw"]], sign)
                tau_free = wf.free_moment_nm(s, r[_COL["tz_peak_nm"]], sign)
                # The heel rides backwards with the belt; the COP rolls heel to toe along the foot.
                heel = r[_COL["foot_x_m"]] - r[_COL["speed_m_s"]] * tau
                x = heel + length * wf.cop_along_foot(s, r[_COL["cop_start_frac"]],
                                                      r[_COL["cop_end_frac"]],
                                                      r[_COL["cop_shape_k"]])
                y = r[_COL["foot_y_m"]] + sign * 0.012 * (1.0 - 2.0 * s)  # lateral heel, medial toe
            if factor != 1.0:
                z, hx, hy, tau_free = factor * z, factor * hx, factor * hy, factor * tau_free
                y = np.full_like(tt, y_part)
            sl = slice(i0, i1)
            fz[sl] += z
            fx[sl] += hx
            fy[sl] += hy
            mx_cop[sl] += z * x
            my_cop[sl] += z * y
            tz[sl] += tau_free + x * hy - y * hx
    loaded = fz > 1e-6 * settings.weight_n
    cop = np.zeros((n, 2))
    cop[loaded, 0] = mx_cop[loaded] / fz[loaded]
    cop[loaded, 1] = my_cop[loaded] / fz[loaded]
    # Free moment about the combined COP: subtract the moment of the summed horizontal force.
    tz = tz - (cop[:, 0] * fy - cop[:, 1] * fx)
    grf = np.column_stack([fx, fy, fz])
    if noise and settings.plate_noise_n > 0.0 and n:
        grf += settings.plate_noise_n * sample_noise(settings.seed, f"plate-{belt}", t, 3)
    return grf, cop, tz


def render_imu(steps: Sequence[PlannedStep] | np.ndarray, t: np.ndarray, side: str,
               settings: ParticipantSettings, *, noise: bool = True) -> np.ndarray:
    """Render a distal-tibia IMU on ``side`` at times ``t`` (s): (n, 6) ax ay az (m/s²), gx gy gz (rad/s).

    ax runs along the tibia towards the knee (+9.81 standing); the tibial shock is a positive ax
    peak of ``tibial_peak_g`` after each strike. Depends only on (steps, t, settings): ``steps`` must
    hold every record of this foot with strike <= t[-1] (plus the one before t[0]).
    """
    if side not in FEET:
        raise ConfigError(f"render_imu side: expected 'left' or 'right', got {side!r}")
    t = _check_times(t, "render_imu")
    rows = _as_rows(steps)
    n = t.size
    out = np.zeros((n, 6))
    rows = rows[rows[:, _COL["foot"]] == FEET.index(side)]
    rows = rows[np.argsort(rows[:, _COL["strike_s"]], kind="stable")]
    sign = 1.0 if side == "left" else -1.0
    which = np.searchsorted(rows[:, _COL["strike_s"]], t, "right") - 1 if n else np.empty(0, int)
    theta = np.full(n, STAND_SHANK_RAD)
    d1 = np.zeros(n)
    d2 = np.zeros(n)
    radius = np.zeros(n)  # + about the knee (swing), - about the ankle (stance)
    phase = np.zeros(n)
    shock = np.zeros(n)
    if n:
        bounds = np.flatnonzero(np.diff(which)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [n]])
        for i0, i1 in zip(starts, ends, strict=True):
            k = int(which[i0])
            if k < 0:
                continue  # before this foot's first record: standing
            r = rows[k]
            tt = t[i0:i1]
            a, b, nxt = r[_COL["strike_s"]], r[_COL["toe_off_s"]], r[_COL["next_strike_s"]]
            stance = tt < b
            if r[_COL["kind"]] == 1:
                th0 = th1 = STAND_SHANK_RAD
            else:
                th0, th1 = r[_COL["shank_strike_rad"]], r[_COL["shank_toe_off_rad"]]
                shock[i0:i1] = r[_COL["shock_amp_m_s2"]] * wf.tibial_shock(tt - a,
                                                                           r[_COL["shock_peak_s"]])
            swing_s = max(nxt - b, 1e-3)
            st = wf.shank_kinematics((tt - a) / (b - a), b - a, th0, th1)
            sw = wf.shank_kinematics((tt - b) / swing_s, swing_s, th1, r[_COL["next_shank_rad"]])
            theta[i0:i1] = np.where(stance, st[0], sw[0])
            d1[i0:i1] = np.where(stance, st[1], sw[1])
            d2[i0:i1] = np.where(stance, st[2], sw[2])
            # Beyond the planned swing (records missing) the shank holds the next strike angle.
            d1[i0:i1] *= tt < nxt
            d2[i0:i1] *= tt < nxt
            phase[i0:i1] = np.where(stance, 0.5 * (tt - a) / (b - a),
                                    0.5 + 0.5 * np.clip((tt - b) / swing_s, 0.0, 1.0))
            radius[i0:i1] = np.where(stance, -wf.SENSOR_ABOVE_ANKLE_M, wf.SENSOR_BELOW_KNEE_M)
    out[:, 0] = G_M_S2 * np.cos(theta) + radius * d1 * d1 + shock
    out[:, 1] = G_M_S2 * np.sin(theta) + radius * d2 + 0.25 * shock
    out[:, 2] = 0.0
    out[:, 3] = sign * 0.6 * np.sin(2.0 * np.pi * phase) * (d1 != 0.0)  # axial (internal) rotation
    out[:, 4] = 0.3 * np.sin(4.0 * np.pi * phase) * (d1 != 0.0)
    out[:, 5] = -d1
    if noise and n:
        z = sample_noise(settings.seed, f"imu-{side}", t, 6)
        out[:, :3] += settings.imu_noise_m_s2 * z[:, :3]
        out[:, 3:] += settings.gyro_noise_rad_s * z[:, 3:]
    return out


# ---- offline simulation ----------------------------------------------------------------------

@dataclass(frozen=True)
class SimRecording:
    """An offline simulated session: per-belt lab-frame plate signals, IMUs and the true steps.

    ``grf_n``/``cop_m``/``tz_nm`` are keyed by belt ('left', 'right', or 'single'); ``imu`` by side,
    each (n, 6) as :func:`render_imu`. ``steps`` are all planned records (steps and standing blocks);
    ``speed_m_s`` is the commanded belt speed at each plate sample.
    """

    settings: ParticipantSettings
    plate_rate_hz: float
    imu_rate_hz: float
    t_plate_s: np.ndarray
    t_imu_s: np.ndarray
    grf_n: dict[str, np.ndarray]
    cop_m: dict[str, np.ndarray]
    tz_nm: dict[str, np.ndarray]
    imu: dict[str, np.ndarray]
    steps: tuple[PlannedStep, ...]
    speed_m_s: np.ndarray

    @property
    def belts(self) -> tuple[str, ...]:
        """The belts rendered: ('single',) or ('left', 'right')."""
        return tuple(self.grf_n)

    def gait_steps(self, foot: str | None = None) -> list[PlannedStep]:
        """True foot contacts (``kind='step'``), optionally of one foot, in strike order."""
        return [s for s in self.steps if s.kind == "step" and (foot is None or s.foot == foot)]


def simulate_offline(settings: ParticipantSettings, duration_s: float, plate_rate_hz: float = 1000.0,
                     imu_rate_hz: float = 1000.0,
                     cadence_schedule: Sequence[tuple[float, float | None]] = (),
                     speed_schedule: Sequence[tuple[float, float]] = ()) -> SimRecording:
    """Plan and render ``duration_s`` seconds from t = 0: the whole lab in one call, no LSL.

    ``cadence_schedule``: (at_s, spm or None) metronome commands; ``speed_schedule``: (at_s, m/s)
    belt speed changes. Plate signals per belt (two belts, or one when ``settings.single_belt``).
    ``steps`` holds the records that strike before ``duration_s`` (a last contact may run past it).
    """
    if not (isinstance(duration_s, (int, float)) and 0.0 < duration_s <= 24 * 3600.0):
        raise ConfigError(f"simulate_offline duration_s: expected 0 < seconds <= 86400, "
                          f"got {duration_s!r}")
    for name, rate in (("plate_rate_hz", plate_rate_hz), ("imu_rate_hz", imu_rate_hz)):
        if not (isinstance(rate, (int, float)) and 10.0 <= rate <= NOISE_TICKS_PER_S):
            raise ConfigError(f"simulate_offline {name}: expected 10-{NOISE_TICKS_PER_S} Hz, "
                              f"got {rate!r}")
    planner = GaitPlanner(settings, 0.0)
    for at_s, spm in cadence_schedule:
        planner.set_target_cadence(spm, at_s)
    for at_s, m_s in speed_schedule:
        planner.set_belt_speed(m_s, at_s)
    steps = tuple(s for s in planner.plan_until(duration_s) if s.strike_s < duration_s)
    rows = steps_to_array(steps)
    t_plate = np.arange(round(duration_s * plate_rate_hz)) / plate_rate_hz
    t_imu = np.arange(round(duration_s * imu_rate_hz)) / imu_rate_hz
    belts = ("single",) if settings.single_belt else ("left", "right")
    grf, cop, tz = {}, {}, {}
    for belt in belts:
        grf[belt], cop[belt], tz[belt] = render_plate(rows, t_plate, belt, settings)
    imu = {side: render_imu(rows, t_imu, side, settings) for side in FEET}
    speed = planner.belt_speed_at(t_plate)
    return SimRecording(settings=settings, plate_rate_hz=float(plate_rate_hz),
                        imu_rate_hz=float(imu_rate_hz), t_plate_s=t_plate, t_imu_s=t_imu,
                        grf_n=grf, cop_m=cop, tz_nm=tz, imu=imu, steps=steps, speed_m_s=speed)
