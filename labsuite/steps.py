"""The per-step record: one row per foot contact, shared by every box of the data flow.

The processor fills it; the steps stream, the archive, the protocol runner and reports read it.

Each field has a name with its unit in it and a unit string for metadata. Missing values (no impact
peak, no IMU) are NaN. ``foot`` is 0 for left, 1 for right; ``loading_rate_method`` is 0 for
``impact_peak`` and 1 for ``stance_13pct`` (Milner et al. 2006; Blackmore et al. 2016);
``strike_pattern`` is 0 rearfoot, 1 midfoot, 2 forefoot (Cavanagh & Lafortune 1980 strike-index
thirds). Times are in seconds on the clock of the input: LSL time live, seconds from the start of a
file offline.

COP columns use only samples whose vertical force is at least ``cop_min_bw`` body weights (0.1 BW
by default, ProcessorSettings): below that the COP of a treadmill plate is dominated by noise.
Readers of older files get NaN for columns added later (``strike_index_pct``, ``strike_pattern``,
``invalid``, ``record_kind``, ``step_id``, ``decided_s``): every column here defaults to NaN.

Record kinds (``record_kind``; docs/processing.md, "Record kinds"): live, a contact may be published
more than once, every time under the same ``step_id``:

* ``full`` (0; NaN in files from before record kinds): the step, at toe-off. The only kind that
  counts as a step; offline analysis gives only these.
* ``early`` (1): at the end of the impact window, while the foot is still on the ground: step id,
  foot, strike time, impact peak, VALR, VILR, loading-rate method and tibial peak so far; NaN
  elsewhere (``crossover`` NaN: not known yet). Steps without an impact peak get their loading
  rates (13 % of stance) only with the full record. The full record supersedes it.
* ``correction`` (2): a full record sent again because a cross-over was found after it went out;
  replaces the record with the same ``step_id``.
* ``withdrawn`` (3): the contact of an early record turned out not to be a step (too short or too
  long, or the recording ended inside it): forget that early record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FOOT_LEFT = 0
FOOT_RIGHT = 1
FOOT_NAMES = ("L", "R")

METHOD_IMPACT_PEAK = 0
METHOD_STANCE_13PCT = 1
METHOD_NAMES = ("impact_peak", "stance_13pct")

RECORD_FULL = 0
RECORD_EARLY = 1
RECORD_CORRECTION = 2
RECORD_WITHDRAWN = 3
RECORD_KIND_NAMES = ("full", "early", "correction", "withdrawn")

PATTERN_REARFOOT = 0
PATTERN_MIDFOOT = 1
PATTERN_FOREFOOT = 2
PATTERN_NAMES = ("rearfoot", "midfoot", "forefoot")
# Strike-index cut-offs (% of foot length from the heel): Cavanagh & Lafortune (1980) divide the
# foot into thirds, rearfoot 0-33 %, midfoot 33-67 %, forefoot 67-100 %.
STRIKE_INDEX_CUTOFFS_PCT = (100.0 / 3.0, 200.0 / 3.0)


def strike_pattern_code(strike_index_pct: float) -> float:
    """Pattern code (PATTERN_*) of a strike index in %, NaN when the index is NaN."""
    if strike_index_pct != strike_index_pct:  # NaN
        return float("nan")
    lo, hi = STRIKE_INDEX_CUTOFFS_PCT
    if strike_index_pct < lo:
        return float(PATTERN_REARFOOT)
    return float(PATTERN_MIDFOOT if strike_index_pct < hi else PATTERN_FOREFOOT)


@dataclass(frozen=True)
class StepField:
    """One column of the step record: name (with unit), unit for metadata, short description."""

    name: str
    unit: str
    description: str


STEP_FIELDS: tuple[StepField, ...] = (
    StepField("foot", "code", "0 left, 1 right"),
    StepField("strike_s", "s", "foot strike time"),
    StepField("toe_off_s", "s", "toe-off time"),
    StepField("contact_s", "s", "contact (stance) time"),
    StepField("step_s", "s", "time from the previous contralateral strike"),
    StepField("stride_s", "s", "time from the previous ipsilateral strike"),
    StepField("cadence_spm", "steps/min", "cadence over the last N steps"),
    StepField("peak_vgrf_bw", "BW", "peak vertical ground reaction force"),
    StepField("impact_peak_bw", "BW", "impact peak value, NaN when none"),
    StepField("impact_peak_s", "s", "impact peak time, NaN when none"),
    StepField("valr_bw_per_s", "BW/s", "vertical average loading rate"),
    StepField("vilr_bw_per_s", "BW/s", "vertical instantaneous loading rate"),
    StepField("loading_rate_method", "code", "0 impact_peak, 1 stance_13pct"),
    StepField("braking_impulse_bw_s", "BW*s", "braking (negative AP) impulse, as a negative number"),
    StepField("propulsive_impulse_bw_s", "BW*s", "propulsive (positive AP) impulse"),
    StepField("cop_strike_x_m", "m", "COP at strike, anterior-posterior, lab frame: the COP of the "
              "first 20 ms of load above 0.1 BW, carried back to the strike with the belt"),
    StepField("cop_strike_y_m", "m", "COP at strike, medio-lateral, lab frame (as cop_strike_x_m)"),
    StepField("cop_path_m", "m", "COP path under the foot (belt travel removed), through the COP of "
              "each 20 ms of load above 0.1 BW; NaN when the belt speed is unknown"),
    StepField("tibial_peak_g", "g", "peak axial tibial acceleration, NaN without IMU"),
    StepField("step_length_m", "m", "step length from belt speed and step time"),
    StepField("crossover", "flag", "1 when the foot touched both belts (metrics not valid)"),
    # Left/right symmetry over the last N steps of each foot (Robinson index 100*(L-R)/mean(L,R);
    # 0 is symmetric, + means the left value is larger). NaN until both feet have steps.
    StepField("si_contact_pct", "%", "symmetry index of contact time over the window"),
    StepField("si_step_pct", "%", "symmetry index of step time over the window"),
    StepField("si_peak_vgrf_pct", "%", "symmetry index of peak vertical force over the window"),
    StepField("si_valr_pct", "%", "symmetry index of VALR over the window"),
    StepField("si_vilr_pct", "%", "symmetry index of VILR over the window"),
    StepField("si_tibial_peak_pct", "%", "symmetry index of peak tibial acceleration"),
    # added after format 1 of the session file (readers give older files NaN here)
    StepField("strike_index_pct", "%", "COP at strike from the heel in % of foot length (Cavanagh & "
              "Lafortune 1980); NaN without foot length or belt speed"),
    StepField("strike_pattern", "code", "0 rearfoot (< 33 %), 1 midfoot, 2 forefoot (>= 67 %)"),
    StepField("invalid", "flag", "1 when the contact overlaps force samples that cannot be real "
              "(non-finite, beyond the plausible range); metrics NaN, left out of means"),
    # added with record kinds (issue 15): NaN in older files, where every row is a full record
    StepField("record_kind", "code", "0 full, 1 early (end of the impact window), 2 correction "
              "(replaces the record with this step_id), 3 withdrawn (that early record was no step)"),
    StepField("step_id", "id", "number of the contact, the same in all its records: per belt in "
              "order, left 0, 2, 4, ..., right 1, 3, 5, ... (a single plate 0, 1, 2, ...)"),
    StepField("decided_s", "s", "timestamp of the newest plate sample this record depends on (the "
              "one that decided it): record latency = arrival - decided_s"),
)

STEP_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in STEP_FIELDS)
STEP_DTYPE = np.dtype([(f.name, np.float64) for f in STEP_FIELDS])


def empty_steps(n: int = 0) -> np.ndarray:
    """Return a structured array of ``n`` step records filled with NaN."""
    out = np.empty(n, dtype=STEP_DTYPE)
    for name in STEP_FIELD_NAMES:
        out[name] = np.nan
    return out


def is_full(steps: np.ndarray) -> np.ndarray:
    """Mask of the records that are steps: kind ``full`` (or NaN: written before record kinds)."""
    kind = steps["record_kind"]
    return (kind == RECORD_FULL) | np.isnan(kind)


def apply_records(steps: np.ndarray) -> np.ndarray:
    """The steps a sequence of records amounts to: full records, corrections applied in place.

    Early and withdrawn records are dropped; a correction replaces the record with its step id
    (a correction of a step not in ``steps`` is ignored). Order: as the full records came.
    """
    kind = steps["record_kind"]
    full = steps[(kind == RECORD_FULL) | np.isnan(kind)].copy()
    fixes = steps[kind == RECORD_CORRECTION]
    if len(fixes):
        where = {float(sid): i for i, sid in enumerate(full["step_id"]) if sid == sid}
        for fix in fixes:
            i = where.get(float(fix["step_id"]))
            if i is not None:
                full[i] = fix
                full["record_kind"][i] = RECORD_FULL
    return full


TREND_METRICS = ("cadence", "valr", "contact", "tibial_peak", "rearfoot_share")
_TREND_FIELDS = {"valr": "valr_bw_per_s", "contact": "contact_s", "tibial_peak": "tibial_peak_g"}


def metric_values(steps: np.ndarray, metric: str) -> np.ndarray:
    """Per-step values of a trended metric (NaN where not measured), for drift and its live rule.

    ``cadence`` 60 / step_s (steps/min); ``valr``, ``contact``, ``tibial_peak`` the step fields,
    NaN for cross-over steps (their force metrics are not valid); ``rearfoot_share`` 100 for a
    rearfoot strike, 0 for another pattern (percent when averaged).
    """
    if metric == "cadence":
        step_s = steps["step_s"]
        ok = np.isfinite(step_s) & (step_s > 0)
        return np.where(ok, 60.0 / np.where(ok, step_s, 1.0), np.nan)
    if metric == "rearfoot_share":
        code = steps["strike_pattern"]
        return np.where(np.isfinite(code), 100.0 * (code == PATTERN_REARFOOT), np.nan)
    if metric not in _TREND_FIELDS:
        raise ValueError(f"metric {metric!r}: expected one of {', '.join(TREND_METRICS)}")
    return np.where(~(steps["crossover"] >= 1), steps[_TREND_FIELDS[metric]], np.nan)


def steps_to_rows(steps: np.ndarray) -> np.ndarray:
    """Return step records as a plain (n, n_fields) float64 array, column order ``STEP_FIELDS``."""
    return np.column_stack([steps[name] for name in STEP_FIELD_NAMES]) if len(steps) else np.empty(
        (0, len(STEP_FIELDS))
    )


def rows_to_steps(rows: np.ndarray) -> np.ndarray:
    """Inverse of :func:`steps_to_rows`: (n, n_fields) floats back into step records."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(STEP_FIELDS))
    out = np.empty(len(rows), dtype=STEP_DTYPE)
    for i, name in enumerate(STEP_FIELD_NAMES):
        out[name] = rows[:, i]
    return out
