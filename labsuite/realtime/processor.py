"""The step processor: force-plate and IMU chunks in, one record per completed foot contact out.

Plain synchronous object (no threads, no LSL, no Qt), fed live by :mod:`labsuite.lab.live`
and offline by :func:`process_arrays`; both run the same numba kernels (``_kernels``), and any
chunking of the input gives exactly the same steps.

Pipeline per plate sample: causal Butterworth low-pass of the six plate channels (biquad cascade,
state carried across chunks; delay ``filter_delay_s`` compensated when metrics are timed) →
lab-frame GRF and COP (:mod:`labsuite.plates`) → hysteresis on the *raw* vertical force (on 50 N, off 25 N;
strike and toe-off at the crossings of the strike and toe-off thresholds, interpolated) →
per-contact metrics on the filtered force (Milner et al. 2006 loading rates, Blackmore et al. 2016
13 % fallback; COP measures from loaded samples only). Samples that cannot be real (non-finite,
beyond the plausible range) are flagged, and the steps they touch marked invalid. On a
single plate the foot comes from the medio-lateral COP; single-plate walking uses the COP
butterfly (Roerdink et al. 2008). Steps are released in a fixed order once every input has passed
the time they depend on, so several asynchronous streams still give a deterministic result.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from labsuite import checks as check
from labsuite.constants import GRAVITY_M_S2
from labsuite.errors import ConfigError, DeviceError
from labsuite.plates import PlateGeometry, lab_to_plate, plate_axes, plate_centre
from labsuite.realtime import _kernels as K
from labsuite.steps import (
    FOOT_LEFT,
    FOOT_RIGHT,
    RECORD_CORRECTION,
    RECORD_EARLY,
    RECORD_WITHDRAWN,
    STEP_DTYPE,
    STEP_FIELD_NAMES,
    STRIKE_INDEX_CUTOFFS_PCT,
    empty_steps,
)
from labsuite.streams.contracts import BELTS

LAYOUTS = ("split", "single")
MODES = ("run", "walk")
IMU_SIDES = ("left", "right")
_BLOCK = 1024  # samples per kernel call: bounds the ring size whatever the caller's chunk size
_BLOCK_OFFLINE = 16384  # process_arrays feeds seconds at a time: fewer calls, a larger ring
_LOOKBACK_S = 0.05  # how far back strike refinement may look for the off-threshold crossing
_TIBIAL_PRE_S = 0.01  # IMU window starts this long before the detected strike (clock tolerance)
_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)
_NF = len(STEP_FIELD_NAMES)
_EMPTY = empty_steps(0)
_EMPTY.flags.writeable = False  # the one result of every call that completes nothing
_COL = {name: i for i, name in enumerate(STEP_FIELD_NAMES)}
# the record fields _kernels._finalize_row writes, in the order of its R_* slots
_R_NAMES = ("foot", "strike_s", "toe_off_s", "contact_s", "step_s", "stride_s", "cadence_spm",
            "peak_vgrf_bw", "impact_peak_bw", "impact_peak_s", "valr_bw_per_s", "vilr_bw_per_s",
            "loading_rate_method", "braking_impulse_bw_s", "propulsive_impulse_bw_s",
            "cop_strike_x_m", "cop_strike_y_m", "cop_path_m", "tibial_peak_g", "step_length_m",
            "crossover", "si_contact_pct", "si_step_pct", "si_peak_vgrf_pct", "si_valr_pct",
            "si_vilr_pct", "si_tibial_peak_pct", "strike_index_pct", "strike_pattern", "invalid",
            "record_kind", "step_id", "decided_s")
assert len(_R_NAMES) == K.N_R
_R_COLS = np.array([_COL[n] for n in _R_NAMES], dtype=np.int64)
(_C_FOOT, _C_STRIKE, _C_IMPACT, _C_IMPACT_T, _C_VALR, _C_VILR, _C_METHOD, _C_TIBIAL, _C_KIND,
 _C_ID, _C_DECIDED) = (_COL[n] for n in ("foot", "strike_s", "impact_peak_bw", "impact_peak_s",
                                         "valr_bw_per_s", "vilr_bw_per_s", "loading_rate_method",
                                         "tibial_peak_g", "record_kind", "step_id", "decided_s"))


@dataclass(frozen=True)
class ProcessorSettings:
    """Settings of :class:`StepProcessor`; validated on construction, messages name the field.

    ``impact_search_frac`` defaults to 0.3 of stance when running and 0.5 when walking (where the
    first, weight-acceptance peak plays the impact peak's role). Body weight comes from
    ``body_weight_n``, else ``body_mass_kg`` × g, else must be set or measured on the processor.

    Contacts are detected by hysteresis (``contact_on_n``, ``contact_off_n``); strike and toe-off
    are the interpolated crossings of ``strike_threshold_n`` (at most ``contact_on_n``) and
    ``toe_off_threshold_n`` (between the two). ``onset_power`` > 0 opts in to fitting the force
    onset instead (never earlier or later than the flight-noise floor). COP measures use samples
    of at least ``cop_min_bw`` body weights in bins of ``cop_bin_s``; the strike index needs
    ``foot_length_m`` and the belt speed. A sample is bad when a channel is not finite, the force
    exceeds ``max_force_bw`` body weights (or ``plate_rated_force_n``), or a moment exceeds that
    force at ``max_lever_m`` from the sensor.
    """

    rate_hz: float
    plates: tuple[PlateGeometry, ...]
    layout: str = "split"
    mode: str = "run"
    lowpass_hz: float = 50.0
    filter_order: int = 4
    contact_on_n: float = 50.0
    contact_off_n: float = 25.0
    min_contact_s: float = 0.1
    max_contact_s: float = 2.0
    cadence_window_steps: int = 10
    symmetry_window_steps: int = 20
    body_mass_kg: float | None = None
    body_weight_n: float | None = None
    imu_sides: tuple[str, ...] = ()
    tibial_window_s: float = 0.15
    imu_max_lag_s: float = 1.0
    plate_max_lag_s: float = 2.0
    belt_speed_m_s: float | None = None
    impact_search_frac: float | None = None
    impact_min_bw: float = 0.5
    impact_drop_bw: float = 0.02
    crossover_window_s: float = 0.04
    butterfly_min_ap_m: float = 0.03
    max_step_s: float = 2.0
    strike_threshold_n: float = 50.0
    toe_off_threshold_n: float = 25.0
    onset_power: float = 0.0
    onset_fit_n: float = 250.0
    cop_min_bw: float = 0.1
    cop_bin_s: float = 0.02
    foot_length_m: float | None = None
    toe_cop_frac: float = 0.83
    max_force_bw: float = 20.0
    plate_rated_force_n: float | None = None
    max_lever_m: float = 3.0

    def __post_init__(self) -> None:
        where = "ProcessorSettings."
        check.positive(where, self, "rate_hz", "contact_on_n", "contact_off_n", "min_contact_s",
                       "max_contact_s", "tibial_window_s", "imu_max_lag_s", "plate_max_lag_s",
                       "impact_drop_bw", "butterfly_min_ap_m", "max_step_s", "strike_threshold_n",
                       "toe_off_threshold_n", "cop_bin_s", "toe_cop_frac", "max_force_bw", "max_lever_m")
        check.positive(where, self, "lowpass_hz", "impact_min_bw", "crossover_window_s", "onset_power",
                       "cop_min_bw", zero_ok=True)
        check.one_of(where, "layout", self.layout, LAYOUTS)
        check.one_of(where, "mode", self.mode, MODES)
        if self.lowpass_hz >= self.rate_hz / 2:
            raise ConfigError(f"ProcessorSettings.lowpass_hz: expected below Nyquist "
                              f"({self.rate_hz / 2} Hz), got {self.lowpass_hz} (0 disables it)")
        check.integer(where, "filter_order", self.filter_order, low=1, high=8)
        if self.onset_power and not 1.0 <= self.onset_power <= 3.0:
            raise ConfigError(f"ProcessorSettings.onset_power: expected 0 (threshold times only) "
                              f"or 1..3, got {self.onset_power!r}")
        if self.onset_fit_n <= self.contact_on_n:
            raise ConfigError(f"ProcessorSettings.onset_fit_n: expected above contact_on_n "
                              f"({self.contact_on_n} N), got {self.onset_fit_n!r}")
        if self.contact_off_n >= self.contact_on_n:
            raise ConfigError(f"ProcessorSettings.contact_off_n: expected below contact_on_n "
                              f"({self.contact_on_n} N) for hysteresis, got {self.contact_off_n}")
        if self.strike_threshold_n > self.contact_on_n:
            raise ConfigError(f"ProcessorSettings.strike_threshold_n: expected at most contact_on_n "
                              f"({self.contact_on_n} N; raise that too), got {self.strike_threshold_n}")
        if not self.contact_off_n <= self.toe_off_threshold_n <= self.contact_on_n:
            raise ConfigError(f"ProcessorSettings.toe_off_threshold_n: expected between contact_off_n "
                              f"and contact_on_n ({self.contact_off_n}-{self.contact_on_n} N; move "
                              f"those too), got {self.toe_off_threshold_n}")
        if not self.toe_cop_frac <= 1.0:
            raise ConfigError(f"ProcessorSettings.toe_cop_frac: expected 0..1, got {self.toe_cop_frac!r}")
        if self.min_contact_s >= self.max_contact_s:
            raise ConfigError("ProcessorSettings.min_contact_s: expected below max_contact_s")
        for name in ("cadence_window_steps", "symmetry_window_steps"):
            check.integer(where, name, getattr(self, name), low=1)
        for name in ("body_mass_kg", "body_weight_n", "foot_length_m", "plate_rated_force_n"):
            check.number(where, name, getattr(self, name), low=0.0, low_open=True, optional=True)
        # 0 m/s for a fixed plate
        check.number(where, "belt_speed_m_s", self.belt_speed_m_s, low=0.0, unit="m/s", optional=True)
        check.number(where, "impact_search_frac", self.impact_search_frac, low=0.0, high=1.0,
                     low_open=True, high_open=True, optional=True)
        plates = tuple(self.plates)
        if not all(isinstance(p, PlateGeometry) for p in plates):
            raise ConfigError("ProcessorSettings.plates: expected PlateGeometry items")
        belts = sorted(p.belt for p in plates)
        want = ["left", "right"] if self.layout == "split" else ["single"]
        if belts != want:
            raise ConfigError(f"ProcessorSettings.plates: layout {self.layout!r} needs plates for "
                              f"{want}, got {belts}")
        object.__setattr__(self, "plates", plates)
        sides = tuple(self.imu_sides)
        if len(set(sides)) != len(sides) or not set(sides) <= set(IMU_SIDES):
            raise ConfigError(f"ProcessorSettings.imu_sides: expected a subset of {IMU_SIDES}, "
                              f"got {sides!r}")
        object.__setattr__(self, "imu_sides", sides)

    @property
    def butterfly(self) -> bool:
        """True when steps come from the COP butterfly (single plate, walking)."""
        return self.layout == "single" and self.mode == "walk"

    @property
    def impact_frac(self) -> float:
        """Fraction of stance searched for an impact peak."""
        if self.impact_search_frac is not None:
            return self.impact_search_frac
        return 0.5 if self.mode == "walk" else 0.3

    def plate(self, belt: str) -> PlateGeometry:
        """Return the geometry of ``belt``."""
        for p in self.plates:
            if p.belt == belt:
                return p
        raise ConfigError(f"belt {belt!r}: no plate configured (have {[p.belt for p in self.plates]})")


def design_lowpass(settings: ProcessorSettings) -> tuple[np.ndarray, float]:
    """Return the Butterworth sections (n, 6) and their low-frequency delay in samples."""
    from scipy import signal

    if settings.lowpass_hz == 0:
        return np.zeros((0, 6)), 0.0
    sos = signal.butter(settings.filter_order, settings.lowpass_hz, fs=settings.rate_hz,
                        output="sos")
    b, a = signal.sos2tf(sos)
    # group delay near DC: the delay of slow force changes such as a stance, in samples
    _, gd = signal.group_delay((b, a), w=[1e-4 * np.pi])
    return np.ascontiguousarray(sos, dtype=np.float64), float(gd[0])


def filter_settle_samples(sos: np.ndarray) -> int:
    """Samples after which the low-pass impulse response stays below 1e-6 of its peak.

    After a run of bad samples the filter restarts; its output differs from an uninterrupted one
    by less than that fraction of the input step from then on.
    """
    from scipy import signal

    if not len(sos):
        return 0
    n = 4096
    impulse = np.zeros(n)
    impulse[0] = 1.0
    h = np.abs(signal.sosfilt(sos, impulse))
    above = np.flatnonzero(h > 1e-6 * h.max())
    return int(above[-1]) + 1


@dataclass(frozen=True)
class BadRun:
    """A run of plate samples that cannot be real: belt, sample indices and times (inclusive)."""

    belt: str
    first_sample: int
    last_sample: int
    first_s: float
    last_s: float
    reason: str

    def describe(self) -> str:
        """One line for a warning: where and why."""
        n = self.last_sample - self.first_sample + 1
        where = (f"sample {self.first_sample} (t = {self.first_s:.4f} s)" if n == 1 else
                 f"samples {self.first_sample}-{self.last_sample} (t = {self.first_s:.4f}-"
                 f"{self.last_s:.4f} s)")
        return f"belt {self.belt}: {where}: force {self.reason}"


class _Contact:
    """One foot contact on its way out: times, metrics, and once finalized its full record."""

    __slots__ = (
        "belt",
        "cop_strike",
        "crossover",
        "foot",
        "foot_out",
        "invalid",
        "metrics",
        "ready_s",
        "row",
        "sent",
        "seq",
        "step_id",
        "strike_s",
        "toe_off_s",
    )

    def __init__(self, belt: str, strike_s: float, toe_off_s: float, ready_s: float, *,
                 foot: int = -1, metrics: np.ndarray | None = None,
                 cop_strike: tuple[float, float] = (math.nan, math.nan), invalid: bool = False,
                 step_id: float = math.nan) -> None:
        self.belt = belt
        self.strike_s = strike_s
        self.toe_off_s = toe_off_s
        self.ready_s = ready_s
        self.foot = foot
        self.metrics = np.full(K.N_METRICS, np.nan) if metrics is None else metrics
        self.cop_strike = cop_strike
        self.invalid = invalid
        self.seq = 0
        self.step_id = step_id
        self.crossover = False
        self.row: np.ndarray | None = None
        self.sent = False
        self.foot_out = -1


class _Belt:
    """Mutable per-plate state: filter state, rings, hysteresis, open and awaiting contacts."""

    def __init__(self, geom: PlateGeometry, settings: ProcessorSettings, sos: np.ndarray,
                 delay: int, index: int, early: bool, block: int) -> None:
        from scipy import signal

        corners = np.asarray(geom.corners_m)
        self.belt = geom.belt
        self.index = index  # step ids: count * number of plates + index
        self.n_plates = len(settings.plates)
        self.n_ids = 0
        self.rot = np.ascontiguousarray(plate_axes(corners))
        self.centre = np.ascontiguousarray(plate_centre(corners))
        self.origin = np.asarray(geom.origin_m, dtype=np.float64)
        self.sos = sos
        nsec = sos.shape[0]
        self.zi = np.zeros((max(nsec, 1), 6, 2))
        self.zi_unit = (np.ascontiguousarray(signal.sosfilt_zi(sos)) if nsec
                        else np.zeros((1, 2)))
        rate = settings.rate_hz
        self.lookback = max(2, round(_LOOKBACK_S * rate))
        self.cap = math.ceil((settings.max_contact_s + 0.5) * rate) + self.lookback + delay \
            + 2 * block
        self.ring_t = np.zeros(self.cap)
        self.ring_raw = np.zeros((self.cap, 2))
        self.ring_filt = np.zeros((self.cap, 5))
        self.scratch = np.empty((4, self.cap))
        self.istate = np.zeros(K.N_ISTATE, dtype=np.int64)
        self.fstate = np.full(K.N_FSTATE, np.nan)
        self.fstate[[K.F_NZ_N, K.F_NZ_MEAN, K.F_NZ_M2]] = 0.0
        corners_rel = corners - corners.mean(axis=0)
        # the largest moment a force can have about the sensor: at the farthest plate point, plus
        # the lever allowance for the sensor's own offset
        self.lever_m = float(np.linalg.norm(corners_rel, axis=1).max()
                             + np.linalg.norm(self.origin)) + settings.max_lever_m
        self.events = np.zeros((3 * block + 8, K.EVENT_COLS))
        self.eparams = np.zeros(K.N_EPARAMS)
        self.eparams[K.E_ON] = 1.0 if early and not settings.butterfly else 0.0
        self.eparams[K.E_DELAY] = delay
        self.eparams[K.E_DT] = 1.0 / rate
        self.eparams[K.E_FRAC] = settings.impact_frac
        self.eparams[K.E_HIGHER] = 1.0 if settings.mode == "run" else 0.0
        self.eparams[K.E_MIN_CONTACT] = settings.min_contact_s
        self.eparams[K.E_MAX_CONTACT] = settings.max_contact_s
        self.kargs: tuple[Any, ...] = ()  # the kernel's arguments after (ts, ch), see set_limits
        # k_on, strike, k_first, noise floor, step id
        self.open_start: tuple[int, float, int, float, float] | None = None
        # k_on, strike, k_first, noise floor, k_last, toe, k_end, step id
        self.awaiting: list[tuple[int, float, int, float, int, float, int, float]] = []
        self.finalized: deque[_Contact] = deque(maxlen=16)  # for the cross-over check
        self.last_t = -math.inf

    def set_limits(self, settings: ProcessorSettings, max_f_n: float, bw_n: float) -> None:
        """Prepare the kernel's arguments for the plausible-force limit and body weight."""
        s = settings
        self.eparams[K.E_MIN_N] = s.impact_min_bw * bw_n
        self.eparams[K.E_PROM_N] = s.impact_drop_bw * bw_n
        self.kargs = (self.rot, self.centre, self.origin, self.sos, self.zi, self.zi_unit,
                      self.sos.shape[0] > 0, self.istate, self.fstate, self.ring_t, self.ring_raw,
                      self.ring_filt, float(s.contact_on_n), float(s.contact_off_n),
                      float(s.strike_threshold_n), float(s.toe_off_threshold_n), max_f_n,
                      max_f_n * self.lever_m, self.lookback, s.butterfly,
                      float(s.butterfly_min_ap_m), self.eparams, self.events)

    def new_id(self) -> float:
        sid = float(self.n_ids * self.n_plates + self.index)
        self.n_ids += 1
        return sid

    @property
    def n_seen(self) -> int:
        return int(self.istate[K.I_SEEN])

    def t_at(self, k: int) -> float:
        return float(self.ring_t[k % self.cap])


class StepProcessor:
    """Turn force-plate (and IMU) chunks into step records (``labsuite.steps.STEP_DTYPE``).

    Feed each belt with :meth:`feed_plate` (plate channels) or :meth:`feed_lab` (lab-frame GRF and
    COP), each IMU with :meth:`feed_imu`; each call returns the records completed so far (possibly
    none: then always the same empty, read-only array). :meth:`flush` releases what is left at the
    end of a recording.

    By default every record is a full step record (``record_kind`` 0), each sent once its
    cross-over check is settled. With ``early_records=True`` (live feedback) a contact is also
    sent early, at the end of its impact window, its full record goes out as soon as its data are
    in, and a cross-over found later comes as a ``correction`` (``withdrawn`` for an early record
    that was no step); see :mod:`labsuite.steps`. The full records, corrections applied
    (:func:`labsuite.steps.apply_records`), are the same either way and for any chunking.
    """

    def __init__(self, settings: ProcessorSettings, *, early_records: bool = False,
                 block: int = _BLOCK) -> None:
        if not isinstance(settings, ProcessorSettings):
            raise ConfigError("StepProcessor: expected ProcessorSettings")
        if not (isinstance(block, int) and 16 <= block <= 1 << 16):
            raise ConfigError(f"StepProcessor block: expected 16-65536 samples, got {block!r}")
        self.settings = settings
        self.early_records = bool(early_records)
        self._block = block  # samples per kernel call (any size gives the same records)
        self._sos, gd = design_lowpass(settings)
        self._delay = round(gd)
        self._bw_n: float | None = (settings.body_weight_n if settings.body_weight_n
                                    else settings.body_mass_kg * GRAVITY_M_S2
                                    if settings.body_mass_kg else None)
        self._belt_speed = settings.belt_speed_m_s
        self._settle = filter_settle_samples(self._sos)
        self.reset()

    # ---- state --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all stream state (filters, contacts, histories); body weight is kept."""
        s = self.settings
        self._belts = {p.belt: _Belt(p, s, self._sos, self._delay, i, self.early_records,
                                     self._block)
                       for i, p in enumerate(sorted(s.plates, key=lambda p: BELTS.index(p.belt)))}
        self._imu: dict[str, list[Any]] = {
            side: [np.zeros(1 << 14), np.zeros(1 << 14), 0, -math.inf] for side in s.imu_sides}
        self._pending: list[tuple[float, int, _Contact]] = []
        self._seq = 0
        self._t_first = -math.inf  # first timestamp of any plate
        self._fin = np.full(K.finalize_state_size(s.cadence_window_steps,
                                                  s.symmetry_window_steps), 0.0)
        self._fin[:2] = np.nan  # last strike of each foot
        self._snap = self._fin.copy()
        self._last_final: _Contact | None = None
        self._last_foot: tuple[int, float] = (-1, math.nan)
        self._early_q: deque[tuple[float, str, float, np.ndarray, _Belt]] = deque()
        self._early_open: dict[float, float] = {}  # step id -> strike of early records sent
        self._unsent: deque[_Contact] = deque()
        self._alloc_out(64)
        self._n_out = 0
        self._mbuf = np.empty(K.N_METRICS)
        self._alt: tuple[int, float, float, float] = (0, 0.0, math.nan, math.nan)
        self._alt_next = self._alt
        self._bf_min: tuple[float, float, float] | None = None
        self._bf_open: dict[int, tuple[float, float, float]] = {}
        self.bad_runs: list[BadRun] = []
        self._set_limits()

    def _set_limits(self) -> None:
        s = self.settings
        limit = s.max_force_bw * float(self._bw_n) if self._bw_n else math.inf
        if s.plate_rated_force_n is not None:
            limit = min(limit, s.plate_rated_force_n)
        self._max_f = limit
        bw = float(self._bw_n) if self._bw_n else math.nan
        # the per-contact metric settings in N (see _kernels._window_metrics)
        self._margs = (s.impact_frac, s.impact_min_bw * bw, s.impact_drop_bw * bw, s.mode == "run",
                       s.cop_min_bw * bw, max(1, round(s.cop_bin_s * s.rate_hz)))
        self._rate = float(s.rate_hz)
        self._foot_m = math.nan if s.foot_length_m is None else float(s.foot_length_m)
        self._toe_frac = float(s.toe_cop_frac)
        for b in self._belts.values():
            b.set_limits(s, limit, float(self._bw_n) if self._bw_n else math.nan)

    @property
    def filter_delay_s(self) -> float:
        """Low-frequency delay of the causal low-pass (s), compensated in step timing."""
        return self._delay / self.settings.rate_hz

    @property
    def body_weight_n(self) -> float | None:
        """Body weight used to normalise forces (N), or None when not yet known."""
        return self._bw_n

    def set_body_weight_n(self, weight_n: float) -> None:
        """Set the body weight (N) used for BW units."""
        if not (math.isfinite(weight_n) and weight_n > 0):
            raise ConfigError(f"body weight: expected a force > 0 N, got {weight_n!r}")
        self._bw_n = float(weight_n)
        self._set_limits()

    def set_belt_speed(self, speed_m_s: float | None) -> None:
        """Set the belt speed (m/s) used for step length; None leaves step length NaN."""
        if speed_m_s is not None and not (math.isfinite(speed_m_s) and speed_m_s >= 0):
            raise ConfigError(f"belt speed: expected >= 0 m/s, got {speed_m_s!r}")
        self._belt_speed = speed_m_s

    def measure_body_weight(self, standing: Mapping[str, np.ndarray], *,
                            max_cv: float = 0.05) -> float:
        """Measure body weight from quiet standing and use it; returns it in N.

        ``standing`` maps each belt to plate channels (n, 6) recorded while the participant stood
        still (on a split treadmill, one foot on each belt). The vertical forces of all belts are
        added; the standing must be steady (coefficient of variation below ``max_cv``).
        """
        total = 0.0
        series = []
        for belt, ch in standing.items():
            b = self._belt(belt)
            arr = self._check_channels(belt, np.zeros(len(np.asarray(ch))), ch, finite=True)
            vert = -(arr[:, :3] @ b.rot.T)[:, 2]
            series.append(vert)
            total += float(np.mean(vert)) if len(vert) else math.nan
        if not series or min(len(v) for v in series) < 10:
            raise ConfigError("body weight: expected at least 10 standing samples per belt")
        n = min(len(v) for v in series)
        summed = np.sum([v[:n] for v in series], axis=0)
        if not math.isfinite(total) or total < 100.0:
            raise ConfigError(f"body weight: mean vertical force {total:.1f} N while standing; "
                              "expected someone standing on the plates (> 100 N)")
        cv = float(np.std(summed) / np.mean(summed))
        if cv > max_cv:
            raise ConfigError(f"body weight: standing was not quiet (force varied by {cv:.1%}, "
                              f"expected below {max_cv:.0%}); repeat the standing period")
        self.set_body_weight_n(total)
        return total

    # ---- input --------------------------------------------------------------------------------
    def feed_plate(self, belt: str, timestamps: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """Feed plate output (n, 6) Fx Fy Fz (N) Mx My Mz (N·m), plate frame; return new records.

        Live calls pass float64 timestamps and float32 or float64 C-contiguous channels as they
        come from the streams; those are used as they are (no copy, checks of a few attribute
        reads; non-finite timestamps are found by the kernel before it changes any state).
        """
        b = self._belts.get(belt)
        if b is None:
            b = self._belt(belt)
        ts = timestamps
        if not (type(ts) is np.ndarray and ts.dtype is _F64 and ts.ndim == 1
                and ts.flags.c_contiguous):
            ts = self._check_times(belt, timestamps)
        ch = channels
        if not (type(ch) is np.ndarray and (ch.dtype is _F64 or ch.dtype is _F32) and ch.ndim == 2
                and ch.shape[1] == 6 and ch.shape[0] == ts.shape[0] and ch.flags.c_contiguous):
            ch = self._check_channels(belt, ts, channels)
        if self._bw_n is None:
            raise ConfigError("body weight unknown: give ProcessorSettings.body_mass_kg or "
                              "body_weight_n, or call measure_body_weight/set_body_weight_n first")
        n = ts.shape[0]
        block = self._block
        if n <= block:
            self._run_block(b, ts, ch, 0)
            if self._pending or self._early_q or self._unsent:
                self._release()
        else:
            self._check_times(belt, ts)  # all of them before any block changes state
            for start in range(0, n, block):
                self._run_block(b, ts[start:start + block], ch[start:start + block], start)
                if self._pending or self._early_q or self._unsent:
                    self._release()
        return self._take() if self._n_out else _EMPTY

    def feed_lab(self, belt: str, timestamps: np.ndarray, grf_lab: np.ndarray,
                 cop_lab: np.ndarray | None = None) -> np.ndarray:
        """Feed lab-frame GRF on the body (n, 3) N and COP (n, 2) m (NaN when unknown)."""
        geom = self.settings.plate(belt)
        grf = np.asarray(grf_lab, dtype=np.float64)
        if grf.ndim != 2 or grf.shape[1] != 3:
            raise ConfigError(f"belt {belt!r} grf_lab: expected shape (n, 3), got {grf.shape}")
        cop = (np.full((len(grf), 2), np.nan) if cop_lab is None
               else np.asarray(cop_lab, dtype=np.float64))
        with np.errstate(over="ignore", invalid="ignore"):  # impossible samples get flagged
            ch = lab_to_plate(grf, cop, np.zeros(len(grf)), np.asarray(geom.corners_m),
                              np.asarray(geom.origin_m))
        return self.feed_plate(belt, timestamps, ch)

    def feed_imu(self, side: str, timestamps: np.ndarray, data: np.ndarray) -> np.ndarray:
        """Feed a tibial IMU (n, 6) ax ay az (m/s², ax along the tibia) gx gy gz; return new records."""
        if side not in self._imu:
            raise ConfigError(f"IMU side {side!r}: not in ProcessorSettings.imu_sides "
                              f"{self.settings.imu_sides}")
        ts = self._check_times(f"imu {side}", timestamps)
        arr = np.asarray(data, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 6 or arr.shape[0] != ts.shape[0]:
            raise ConfigError(f"IMU {side!r} data: expected shape ({len(ts)}, 6) ax ay az gx gy gz, "
                              f"got {arr.shape}")
        ax = np.ascontiguousarray(arr[:, 0])
        bad = ~np.isfinite(ax)
        if bad.any():
            raise DeviceError(f"IMU {side!r} sample {int(np.argmax(bad))} of the chunk: ax is not "
                              "a finite number")
        st = self._imu[side]
        cap = len(st[0])
        for start in range(0, len(ts), cap // 2):
            st[2] = K._ring_append(st[0], st[1], st[2], ts[start:start + cap // 2],
                                   ax[start:start + cap // 2])
        if len(ts):
            st[3] = float(ts[-1])
        if self._pending or self._early_q or self._unsent:
            self._release()
        return self._take() if self._n_out else _EMPTY

    def flush(self) -> np.ndarray:
        """Release every record still waiting (end of a recording).

        Contacts still open are dropped (an early record of theirs is withdrawn).
        """
        for b in self._belts.values():
            if b.istate[K.I_BAD_WHY]:
                k0, k1 = int(b.istate[K.I_BAD_K0]), b.n_seen - 1
                self._add_bad_run(b, k0, k1, int(b.istate[K.I_BAD_WHY]))
                b.istate[K.I_BAD_WHY] = 0
        self._release(final=True)
        for sid, strike in list(self._early_open.items()):
            self._withdraw(sid, strike)
        self._release(final=True)
        return self._take() if self._n_out else _EMPTY

    @property
    def max_force_n(self) -> float:
        """Largest plausible force magnitude (N): ``max_force_bw`` BW, or the plate's rated range."""
        return self._max_f

    # ---- internals ----------------------------------------------------------------------------
    def _belt(self, belt: str) -> _Belt:
        try:
            return self._belts[belt]
        except KeyError:
            raise ConfigError(f"belt {belt!r}: no plate configured "
                              f"(have {sorted(self._belts)})") from None

    @staticmethod
    def _check_times(what: str, timestamps: np.ndarray) -> np.ndarray:
        ts = np.ascontiguousarray(timestamps, dtype=np.float64)
        if ts.ndim != 1:
            raise ConfigError(f"{what} timestamps: expected shape (n,), got {ts.shape}")
        if not np.isfinite(ts).all():
            raise DeviceError(f"{what} timestamps: sample {int(np.argmax(~np.isfinite(ts)))} "
                              "is not a finite number")
        return ts

    @staticmethod
    def _check_channels(belt: str, ts: np.ndarray, channels: np.ndarray, *,
                        finite: bool = False) -> np.ndarray:
        # Non-finite samples are flagged bad by the kernel (issue 12), not refused; ``finite``
        # refuses them where a value is needed now (body weight).
        ch = np.ascontiguousarray(channels, dtype=np.float64)
        if ch.ndim != 2 or ch.shape[1] != 6 or ch.shape[0] != ts.shape[0]:
            raise ConfigError(f"belt {belt!r} channels: expected shape ({ts.shape[0]}, 6) "
                              f"Fx Fy Fz Mx My Mz, got {ch.shape}")
        if finite:
            ok = np.isfinite(ch)
            if not ok.all():
                row, col = np.argwhere(~ok)[0]
                raise DeviceError(f"belt {belt!r} sample {row}, channel "
                                  f"{('Fx', 'Fy', 'Fz', 'Mx', 'My', 'Mz')[col]}: not a finite number")
        return ch

    def _run_block(self, b: _Belt, ts: np.ndarray, ch: np.ndarray, start: int) -> None:
        n_ev = K._plate_chunk(ts, ch, *b.kargs)
        if n_ev < 0:
            raise DeviceError(f"{b.belt} timestamps: sample {start - 1 - n_ev} is not a finite "
                              "number")
        if ts.shape[0]:
            if b.last_t == -math.inf and self._t_first == -math.inf:
                self._t_first = float(ts[0])
            b.last_t = float(ts[-1])
        if n_ev:
            self._events(b, b.events[:n_ev].tolist())
        # contacts whose filtered (delayed) samples are all in
        while b.awaiting and b.awaiting[0][4] + self._delay < b.n_seen:
            self._make_contact(b, *b.awaiting.pop(0))

    def _events(self, b: _Belt, rows: list[list[float]]) -> None:
        s = self.settings
        for row in rows:
            kind = row[0]
            if kind == K.EV_BAD:
                self._add_bad_run(b, int(row[3]), int(row[1]), int(row[4]))
                continue
            if s.butterfly:
                if kind in (K.EV_MIN, K.EV_MAX):
                    self._butterfly_event(b, row)
                continue
            if kind == K.EV_START:
                b.open_start = (None if row[4] else
                                (int(row[1]), row[2], int(row[3]), row[5], b.new_id()))
            elif kind == K.EV_EARLY and b.open_start is not None:
                self._make_early(b, row, b.open_start)
            elif kind == K.EV_END and b.open_start is not None:
                k_on, strike, k_first, floor, sid = b.open_start
                b.open_start = None
                toe = row[2]
                if s.min_contact_s <= toe - strike <= s.max_contact_s:
                    b.awaiting.append((k_on, strike, k_first, floor, int(row[3]), toe,
                                       int(row[1]), sid))
                elif sid in self._early_open:
                    self._withdraw(sid, strike)

    def _add_bad_run(self, b: _Belt, k0: int, k1: int, why: int) -> None:
        reasons = [text for bit, text in ((K.BAD_NONFINITE, "not a finite number"),
                                          (K.BAD_RANGE, "beyond the plausible range")) if why & bit]
        self.bad_runs.append(BadRun(b.belt, k0, k1, b.t_at(k0), b.t_at(k1), " and ".join(reasons)))

    def _make_early(self, b: _Belt, row: list[float],
                    open_start: tuple[int, float, int, float, float]) -> None:
        """The early record of the open contact, whose impact window the kernel just decided."""
        s = self.settings
        d = self._delay
        _, strike, k_first, _, sid = open_start
        k_dec, t_dec, status, expected = int(row[1]), row[2], row[3], row[5]
        lo = max(k_first - 1 - self._settle, 0, b.n_seen - b.cap)
        if K._bad_between(b.ring_raw, lo, k_dec):
            return  # its full record will be marked invalid
        r = np.full(_NF, np.nan)
        r[_C_KIND] = RECORD_EARLY
        r[_C_ID] = sid
        r[_C_STRIKE] = strike
        r[_C_DECIDED] = t_dec
        if status == K.EARLY_PEAK:
            bw = float(self._bw_n)  # type: ignore[arg-type]
            m = self._mbuf
            K._window_metrics(b.ring_t, b.ring_raw, b.ring_filt, b.scratch, k_first,
                              k_dec - d - k_first + 1, d, 0, -1, self._rate, strike,
                              strike + expected, *self._margs, math.nan, math.nan, self._toe_frac, m)
            r[_C_IMPACT] = m[K.M_IMPACT] / bw
            r[_C_IMPACT_T] = m[K.M_IMPACT_T]
            r[_C_VALR] = m[K.M_VALR] / bw
            r[_C_VILR] = m[K.M_VILR] / bw
            r[_C_METHOD] = m[K.M_METHOD]
        if s.layout == "split":
            foot = FOOT_LEFT if b.belt == "left" else FOOT_RIGHT
        else:
            # feet alternate: the other foot than the step before, if it was the one just before
            last, last_strike = self._last_foot
            foot = 1 - last if last >= 0 and 0 < strike - last_strike <= s.max_step_s else -1
        side = ""
        if foot >= 0:
            r[_C_FOOT] = foot
            if IMU_SIDES[foot] in self._imu:
                side = IMU_SIDES[foot]
        self._early_q.append((min(strike + s.tibial_window_s, t_dec), side, strike, r, b))
        self._early_open[sid] = strike

    def _withdraw(self, sid: float, strike: float) -> None:
        r = np.full(_NF, np.nan)
        r[_C_KIND] = RECORD_WITHDRAWN
        r[_C_ID] = sid
        r[_C_STRIKE] = strike
        r[_C_DECIDED] = max(b.last_t for b in self._belts.values())
        self._early_q.append((-math.inf, "", strike, r, next(iter(self._belts.values()))))
        del self._early_open[sid]

    def _make_contact(self, b: _Belt, k_on: int, strike: float, k_first: int, floor: float,
                      k_last: int, toe: float, k_end: int, sid: float) -> None:
        s = self.settings
        d = self._delay
        # bad samples anywhere the events or the filtered window could have seen them
        lo = max(k_first - 1 - self._settle, 0, b.n_seen - b.cap)
        if s.onset_power > 0 and not K._bad_between(b.ring_raw, lo, k_last + d):
            strike, toe = self._refine_edges(b, k_first, k_last, k_end, floor, strike, toe)
        metrics = np.empty(K.N_METRICS)
        speed = math.nan if self._belt_speed is None else float(self._belt_speed)
        invalid = bool(K._window_metrics(b.ring_t, b.ring_raw, b.ring_filt, b.scratch, k_first,
                                         k_last - k_first + 1, d, lo, k_last + d, self._rate,
                                         strike, toe, *self._margs, speed, self._foot_m,
                                         self._toe_frac, metrics))
        # out as soon as its data are in: a cross-over found later is a correction
        ready = max(toe + (d + 2) / s.rate_hz, b.t_at(k_last + d))
        contact = _Contact(b.belt, strike, toe, ready, metrics=metrics,
                           cop_strike=(float(metrics[K.M_COP_X]), float(metrics[K.M_COP_Y])),
                           invalid=invalid, step_id=sid)
        self._enqueue(contact)

    def _refine_edges(self, b: _Belt, k_first: int, k_last: int, k_end: int, floor: float,
                      strike: float, toe: float) -> tuple[float, float]:
        """Opt-in onset fit (``onset_power``): fit the convex force edges down to zero force.

        Never earlier (later) than where the force rises out of (falls into) the flight-noise
        floor measured before the contact, so an event is never placed in flight noise. Without a
        floor (too little flight seen yet) the threshold events stay.
        """
        s = self.settings
        if math.isnan(floor):
            return strike, toe
        n = k_last - k_first + 1
        v = np.empty(n)
        tw = np.empty(n)
        K._ring_window(b.ring_raw[:, 0], k_first, k_last, v)
        K._ring_window(b.ring_t, k_first, k_last, tw)
        lo = max(k_first - b.lookback, 0, b.n_seen - b.cap)
        before = np.empty(k_first - lo + 1)
        K._ring_window(b.ring_raw[:, 0], lo, k_first, before)
        after = np.empty(k_end - k_last + 1)
        K._ring_window(b.ring_raw[:, 0], k_last, k_end, after)
        t_rise = self._floor_crossing(b, before, lo, floor, rising=True)
        t_fall = self._floor_crossing(b, after, k_last, floor, rising=False)
        t_ref = tw[0]
        tau = tw - t_ref  # relative times keep the least squares well conditioned
        t0 = K._fit_edge(np.ascontiguousarray(v), tau, s.onset_fit_n, s.onset_power)
        if math.isfinite(t0) and math.isfinite(t_rise) and t_rise <= t_ref + t0 <= strike:
            strike = t_ref + t0
        elif math.isfinite(t0) and math.isfinite(t_rise) and t_ref + t0 < t_rise:
            strike = t_rise
        tau_rev = np.ascontiguousarray((tw[-1] - tw)[::-1])
        t1 = K._fit_edge(np.ascontiguousarray(v[::-1]), tau_rev, s.onset_fit_n, s.onset_power)
        if math.isfinite(t1) and math.isfinite(t_fall) and toe <= tw[-1] - t1 <= t_fall:
            toe = tw[-1] - t1
        elif math.isfinite(t1) and math.isfinite(t_fall) and tw[-1] - t1 > t_fall:
            toe = t_fall
        return strike, toe

    @staticmethod
    def _floor_crossing(b: _Belt, v: np.ndarray, k0: int, floor: float, *, rising: bool) -> float:
        """Where the force leaves (rising) or reaches (falling) the noise floor; NaN if not seen."""
        idx = range(len(v) - 2, -1, -1) if rising else range(len(v) - 1)
        for j in idx:
            a, c = v[j], v[j + 1]
            if (rising and a <= floor < c) or (not rising and a > floor >= c):
                return K._crossing_time(b.t_at(k0 + j), a, b.t_at(k0 + j + 1), c, floor)
        return math.nan


    def _butterfly_event(self, b: _Belt, row: list[float]) -> None:
        s = self.settings
        k = int(row[1])
        t = b.t_at(k - self._delay)
        x, y = float(row[3]), float(row[4])
        if row[0] == K.EV_MIN:
            self._bf_min = (t, x, y)
            return
        if self._bf_min is None:
            return
        t_min, x_min, y_min = self._bf_min
        self._bf_min = None
        # weight moves towards the new stance foot: + y (left) means a left strike
        foot = FOOT_LEFT if y > y_min else FOOT_RIGHT
        other = 1 - foot
        if other in self._bf_open:
            strike, cx, cy = self._bf_open.pop(other)
            if s.min_contact_s <= t - strike <= s.max_contact_s:
                contact = _Contact(b.belt, strike, t, b.t_at(int(row[5])), foot=other,
                                   cop_strike=(cx, cy), step_id=b.new_id())
                self._enqueue(contact)
        self._bf_open[foot] = (t_min, x_min, y_min)

    def _enqueue(self, contact: _Contact) -> None:
        contact.seq = self._seq
        self._seq += 1
        item = (contact.ready_s, contact.seq, contact)
        if not self._pending or self._pending[-1][0] < contact.ready_s:
            self._pending.append(item)  # the usual case: readier than everything waiting
        else:
            bisect.insort(self._pending, item, key=lambda r: r[:2])

    def _watermark(self) -> float:
        # A belt whose stream lags the others by more than plate_max_lag_s of data time (a dead
        # driver) stops holding back the steps of the others. A belt not heard from yet counts as
        # being at the first sample of any belt: it holds the others back until it is that late.
        times = [b.last_t if b.last_t > -math.inf else self._t_first for b in self._belts.values()]
        lead = max(times)
        live = [t for t in times if t >= lead - self.settings.plate_max_lag_s]
        return min(live)

    def _imu_ready(self, c: _Contact, side: str, w: float, final: bool) -> bool:
        need = min(c.strike_s + self.settings.tibial_window_s, c.toe_off_s)
        return final or self._imu[side][3] >= need or w >= need + self.settings.imu_max_lag_s

    def _release(self, final: bool = False) -> None:
        """Move what is ready to the output: early records, full records, settled records."""
        s = self.settings
        q = self._early_q
        while q:
            need, side, strike, r, b = q[0]
            if side:
                st = self._imu[side]
                if not (final or st[3] >= need or b.last_t >= need + s.imu_max_lag_s):
                    break
                r[_C_TIBIAL] = K._ring_max_between(st[0], st[1], st[2], strike - _TIBIAL_PRE_S,
                                                   need) / GRAVITY_M_S2
            q.popleft()
            self._emit(r)
        if not (self._pending or self._unsent):
            return
        w = math.inf if final else self._watermark()
        while self._pending and self._pending[0][0] <= w:
            c = self._pending[0][2]
            foot = self._foot_of(c)
            side = IMU_SIDES[foot] if foot >= 0 else ""
            if side in self._imu and not self._imu_ready(c, side, w, final):
                break
            self._pending.pop(0)
            self._finalize(c, foot)
        while self._unsent and (final or self._settled(self._unsent[0], w)):
            c = self._unsent.popleft()
            c.sent = True
            self._emit(c.row)  # type: ignore[arg-type]

    def _alloc_out(self, n: int) -> None:
        # the records, and the same memory as rows of floats (made once: a structured view costs
        # ~50 µs of numpy's field checks)
        old = getattr(self, "_out", None)
        self._out = np.empty(n, dtype=STEP_DTYPE)
        self._out_rows = self._out.view(np.float64).reshape(n, _NF)
        if old is not None:
            self._out[:len(old)] = old

    def _emit(self, row: np.ndarray) -> None:
        if self._n_out == len(self._out):
            self._alloc_out(2 * len(self._out))
        self._out_rows[self._n_out] = row
        self._n_out += 1

    def _take(self) -> np.ndarray:
        n = self._n_out
        self._n_out = 0
        return self._out[:n].copy()

    def _foot_of(self, c: _Contact) -> int:
        if c.foot >= 0:
            return c.foot
        if self.settings.layout == "split":
            return FOOT_LEFT if c.belt == "left" else FOOT_RIGHT
        y = c.cop_strike[1]
        if math.isnan(y):
            return -1
        # Feet alternate; which parity is the left foot is decided by the landing COP, evidence
        # accumulated over every contact since the last gap in the rhythm as parity-signed
        # differences between neighbours (step width adds up, drift across the belt cancels), so
        # one ambiguous landing cannot flip the labels (RBDS001 foot markers: 0 of 85 wrong; a
        # running midline or the stance-mean COP got 5-30 wrong).
        n, evidence, prev_t, prev_y = self._alt
        if math.isnan(prev_t) or c.strike_s - prev_t > self.settings.max_step_s:
            n, evidence = 0, 0.0
        else:
            n += 1
            evidence += (1.0 if n % 2 == 0 else -1.0) * (y - prev_y)
        if evidence == 0.0:
            left = y > float(self._belts[c.belt].centre[1])
        else:
            left = (n % 2 == 0) == (evidence > 0.0)
        self._alt_next = (n, evidence, c.strike_s, y)
        return FOOT_LEFT if left else FOOT_RIGHT

    def _other(self, c: _Contact) -> _Belt:
        return self._belts["right" if c.belt == "left" else "left"]

    def _finalize(self, c: _Contact, foot: int) -> None:
        """The full record of ``c``; a cross-over partner finalized before it gets a correction.

        A contact is a cross-over when a contact of the other belt finalized before it has its
        strike or toe-off within ``crossover_window_s`` of its own (finalizing goes in order of
        readiness, so the later of the two finds the earlier, whatever the chunking).
        """
        s = self.settings
        crossover = False
        if s.layout == "split":
            win = s.crossover_window_s
            for p in reversed(self._other(c).finalized):
                if p.toe_off_s < c.strike_s - win:
                    break  # this one and those before it ended too early to be partners
                if abs(p.strike_s - c.strike_s) <= win or abs(p.toe_off_s - c.toe_off_s) <= win:
                    crossover = True
                    if not p.crossover:
                        self._correct(p, c)
        elif s.mode == "run" and not math.isnan(c.cop_strike[1]):
            self._alt = self._alt_next
        c.crossover = crossover
        c.foot_out = foot
        self._snap[:] = self._fin
        self._last_final = c
        tibial = math.nan
        side = IMU_SIDES[foot] if foot >= 0 else ""
        if side in self._imu and not (crossover or c.invalid):
            st = self._imu[side]
            hi = min(c.strike_s + s.tibial_window_s, c.toe_off_s)
            tibial = K._ring_max_between(st[0], st[1], st[2], c.strike_s - _TIBIAL_PRE_S,
                                         hi) / GRAVITY_M_S2
        c.row = self._full_row(c, foot, crossover, tibial)
        if s.layout == "split":
            self._belts[c.belt].finalized.append(c)
        if foot >= 0:
            self._last_foot = (foot, c.strike_s)
        self._early_open.pop(c.step_id, None)
        if self.early_records or s.layout != "split":
            c.sent = True
            self._emit(c.row)
        else:
            self._unsent.append(c)

    def _full_row(self, c: _Contact, foot: int, crossover: bool, tibial: float) -> np.ndarray:
        s = self.settings
        row = np.empty(_NF)
        K._finalize_row(row, _R_COLS, self._fin, s.cadence_window_steps, s.symmetry_window_steps,
                        foot, c.strike_s, c.toe_off_s, crossover, c.invalid, c.cop_strike[0],
                        c.cop_strike[1], c.metrics, float(self._bw_n),  # type: ignore[arg-type]
                        tibial, math.nan if self._belt_speed is None else float(self._belt_speed),
                        float(s.max_step_s), STRIKE_INDEX_CUTOFFS_PCT[0],
                        STRIKE_INDEX_CUTOFFS_PCT[1], c.step_id, c.ready_s)
        return row

    def _correct(self, p: _Contact, by: _Contact) -> None:
        """``p`` (finalized, not a cross-over) turned out to be one, found by ``by``: redo it."""
        if self._last_final is p:
            # nothing was finalized since: take back what it added to step times and symmetry
            self._fin[:] = self._snap
            self._last_final = None
        p.crossover = True
        p.row = self._full_row(p, p.foot_out, True, math.nan)
        p.row[_C_DECIDED] = by.ready_s  # the record as it now stands rests on the partner's data
        if p.sent:
            fix = p.row.copy()
            fix[_C_KIND] = RECORD_CORRECTION
            self._emit(fix)

    def _settled(self, c: _Contact, w: float) -> bool:
        """True once no contact of the other belt can still turn ``c`` into a cross-over."""
        s = self.settings
        win = s.crossover_window_s
        if w < c.toe_off_s + win + (self._delay + 3) / s.rate_hz:
            return False
        other = self._other(c)
        lead = max(b.last_t for b in self._belts.values())
        if max(other.last_t, self._t_first) >= lead - s.plate_max_lag_s:
            o = other.open_start
            if o is not None and abs(o[1] - c.strike_s) <= win:
                return False
            for a in other.awaiting:
                if abs(a[1] - c.strike_s) <= win or abs(a[5] - c.toe_off_s) <= win:
                    return False
        for _, _, p in self._pending:
            if p.belt == other.belt and (abs(p.strike_s - c.strike_s) <= win
                                         or abs(p.toe_off_s - c.toe_off_s) <= win):
                return False
        return True


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts) if parts else np.empty(0, dtype=STEP_DTYPE)


def process_arrays(settings: ProcessorSettings,
                   plates: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   imus: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None, *,
                   lab_frame: bool = False, zero_lag: bool = False, feed_s: float = 1.0,
                   body_weight_n: float | None = None,
                   bad_runs: list[BadRun] | None = None) -> np.ndarray:
    """Run the processor over whole recordings and return every step (offline path).

    ``plates`` maps belt → (timestamps (n,), channels (n, 6)) plate output, or with
    ``lab_frame=True`` belt → (timestamps, (n, 5) lab GRF x y z (N) and COP x y (m)).
    ``imus`` maps side → (timestamps, (n, 6)). Streams are fed interleaved in time, ``feed_s``
    seconds at a time, as they would arrive live. ``zero_lag=True`` replaces the causal low-pass by
    the same Butterworth run forwards and backwards (``sosfiltfilt``; no delay, twice the order;
    bad samples are flagged first and the filter runs over each good stretch on its own).
    ``bad_runs``, when given, receives the runs of samples that cannot be real.
    """
    from scipy import signal

    proc_settings = replace(settings, lowpass_hz=0.0) if zero_lag else settings
    proc = StepProcessor(proc_settings, block=_BLOCK_OFFLINE)
    if body_weight_n is not None:
        proc.set_body_weight_n(body_weight_n)
    streams: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    for belt, (ts, data) in plates.items():
        ts = np.asarray(ts, dtype=np.float64)
        arr = np.asarray(data)  # converted to float64 chunk by chunk, as live
        if lab_frame:
            if arr.ndim != 2 or arr.shape[1] != 5:
                raise ConfigError(f"belt {belt!r}: expected (n, 5) GRF x y z and COP x y, "
                                  f"got {arr.shape}")
            geom = settings.plate(belt)
            with np.errstate(over="ignore", invalid="ignore"):  # impossible samples get flagged
                arr = lab_to_plate(arr[:, :3], arr[:, 3:5], np.zeros(len(arr)),
                                   np.asarray(geom.corners_m), np.asarray(geom.origin_m))
        if zero_lag and settings.lowpass_hz > 0:
            sos, _ = design_lowpass(settings)
            arr = np.array(arr, dtype=np.float64)
            bad = np.zeros(len(arr), dtype=np.uint8)
            max_f = proc.max_force_n
            K._bad_mask(arr, max_f, max_f * proc._belt(belt).lever_m, bad)
            # each stretch of good samples on its own: bad samples stay as they are (flagged)
            edges = np.flatnonzero(np.diff(np.concatenate([[1], bad, [1]]).astype(np.int8)))
            for lo, hi in zip(edges[::2], edges[1::2], strict=True):
                if hi - lo > 3 * (2 * len(sos) + 1):
                    arr[lo:hi] = signal.sosfiltfilt(sos, arr[lo:hi], axis=0)
        streams.append(("plate", belt, ts, arr))
    for side, (ts, data) in (imus or {}).items():
        streams.append(("imu", side, np.asarray(ts, dtype=np.float64), np.asarray(data)))
    starts = [s[2][0] for s in streams if len(s[2])]
    if not starts:
        return np.empty(0, dtype=STEP_DTYPE)
    t = min(starts)
    t_end = max(s[2][-1] for s in streams if len(s[2]))
    pos = [0] * len(streams)
    out = []
    while t <= t_end:
        t += feed_s
        for i, (kind, name, ts, arr) in enumerate(streams):
            stop = int(np.searchsorted(ts, t, side="left"))
            if stop > pos[i]:
                feed = proc.feed_plate if kind == "plate" else proc.feed_imu
                out.append(feed(name, ts[pos[i]:stop], arr[pos[i]:stop]))
                pos[i] = stop
    out.append(proc.flush())
    if bad_runs is not None:
        bad_runs.extend(proc.bad_runs)
    return _concat(out)
