"""Form under fatigue: the trend of cadence, loading, contact time, tibial shock and strike pattern.

Per moving stage and metric, from the step table of a session (:mod:`labsuite.report.loading`):
an ordinary least-squares slope per minute with its 95 % confidence interval, and the first versus
the last two minutes. The session page, its CSV and the programme page print these rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from labsuite.report.tables import STAGE_COLUMNS, Column, steps_in_stage
from labsuite.stages import StageRecord
from labsuite.steps import metric_values

MOVING_KINDS = ("baseline", "cadence", "retention")
SETTLE_S = 10.0  # left out at a stage's start: the belt ramp and the approach to a new target
SETTLE_FRACTION = 0.25  # ... but never more than this share of the stage
WINDOW_S = 120.0  # first and last two minutes (half the analysed span when that is shorter)
MIN_STEPS = 10
CONFIDENCE = 0.95


@dataclass(frozen=True)
class DriftMetric:
    """One trended metric: name, unit, how to get it from steps, and the smallest change that counts.

    ``min_change`` is relative (% of the first window's mean) unless ``absolute`` (percentage
    points, for the rearfoot share).
    """

    name: str
    unit: str
    description: str
    min_change: float
    absolute: bool = False


DRIFT_METRICS: tuple[DriftMetric, ...] = (
    DriftMetric("cadence", "steps/min", "per-step cadence 60 / step_s", 3.0),
    DriftMetric("valr", "BW/s", "vertical average loading rate", 10.0),
    DriftMetric("contact", "s", "contact time", 5.0),
    DriftMetric("tibial_peak", "g", "peak axial tibial acceleration", 10.0),
    DriftMetric("rearfoot_share", "%", "share of rearfoot strikes (strike pattern)", 20.0, absolute=True),
)

DRIFT_COLUMNS: tuple[Column, ...] = (
    Column("stage", "", "stage name"),
    Column("kind", "", "stage kind"),
    Column("metric", "", "cadence, valr, contact, tibial_peak, rearfoot_share"),
    Column("unit", "", "the metric's unit"),
    Column("n_steps", "", "steps in the analysed span (after the first SETTLE_S of the stage)"),
    Column("span_s", "s", "analysed span: first to last step used"),
    Column("slope_per_min", "unit/min", "least-squares slope over time"),
    Column("slope_ci_low", "unit/min", "lower end of the 95 % confidence interval of the slope"),
    Column("slope_ci_high", "unit/min", "upper end of the 95 % confidence interval of the slope"),
    Column("window_s", "s", "length of the first and last windows (2 min, or half the span)"),
    Column("first_mean", "unit", "mean over the first window"),
    Column("last_mean", "unit", "mean over the last window"),
    Column("change", "% or points", "last vs first window: % of the first (points for rearfoot_share)"),
    Column("drift", "flag", "1 when the slope's CI excludes 0 and slope x span reaches the metric's "
           "smallest change (cadence 3 %, valr 10 %, contact 5 %, tibial_peak 10 %, "
           "rearfoot_share 20 points)"),
)
DRIFT_COLUMN_NAMES = tuple(c.name for c in DRIFT_COLUMNS)


@dataclass(frozen=True)
class Slope:
    """A least-squares line: slope (per x unit), its confidence interval, n."""

    slope: float
    ci_low: float
    ci_high: float
    n: int


def ols_slope(x: np.ndarray, y: np.ndarray, confidence: float = CONFIDENCE) -> Slope:
    """Least-squares slope of y on x with its two-sided CI (t with n - 2 df); NaN for n < 3."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 3:
        return Slope(math.nan, math.nan, math.nan, n)
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    if sxx <= 0:
        return Slope(math.nan, math.nan, math.nan, n)
    b = float(np.sum((x - xm) * (y - ym)) / sxx)
    resid = y - ym - b * (x - xm)
    se = math.sqrt(float(np.sum(resid ** 2)) / (n - 2) / sxx)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 2)) * se
    return Slope(b, b - half, b + half, n)


def drift_rows(stages: Sequence[StageRecord], steps: np.ndarray) -> list[dict[str, Any]]:
    """One row per moving stage and metric (keys :data:`DRIFT_COLUMN_NAMES`); NaN where not measurable."""
    rows: list[dict[str, Any]] = []
    for st in sorted(stages, key=lambda s: (s.start_s, s.index)):
        if st.kind not in MOVING_KINDS:
            continue
        settle = min(SETTLE_S, SETTLE_FRACTION * (st.end_s - st.start_s))
        mine = steps_in_stage(steps, st)
        mine = mine[mine["strike_s"] >= st.start_s + settle]
        for metric in DRIFT_METRICS:
            rows.append(_row(st, mine, metric))
    return rows


def _row(st: StageRecord, steps: np.ndarray, metric: DriftMetric) -> dict[str, Any]:
    y = metric_values(steps, metric.name)
    t = steps["strike_s"]
    keep = np.isfinite(y) & np.isfinite(t)
    t, y = t[keep], y[keep]
    row: dict[str, Any] = {"stage": st.name, "kind": st.kind, "metric": metric.name,
                           "unit": metric.unit, "n_steps": len(y)}
    nan_row = dict.fromkeys(DRIFT_COLUMN_NAMES[5:], math.nan)
    if len(y) < MIN_STEPS:
        return {**row, **nan_row, "drift": False}
    span = float(t[-1] - t[0])
    fit = ols_slope((t - t[0]) / 60.0, y)
    window = min(WINDOW_S, span / 2)
    first = float(np.mean(y[t <= t[0] + window]))
    last = float(np.mean(y[t >= t[-1] - window]))
    if metric.absolute:
        change = last - first
        projected = fit.slope * span / 60.0
    else:
        change = 100.0 * (last / first - 1.0) if first else math.nan
        projected = 100.0 * fit.slope * span / 60.0 / first if first else math.nan
    significant = math.isfinite(fit.ci_low) and (fit.ci_low > 0 or fit.ci_high < 0)
    big = math.isfinite(projected) and abs(projected) >= metric.min_change
    return {**row, "span_s": span, "slope_per_min": fit.slope, "slope_ci_low": fit.ci_low,
            "slope_ci_high": fit.ci_high, "window_s": window, "first_mean": first,
            "last_mean": last, "change": change, "drift": bool(significant and big)}


def stage_drift_columns(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Drift rows by (stage, metric), for the per-stage CSV columns ``<metric>_slope_per_min`` etc."""
    return {(r["stage"], r["metric"]): r for r in rows}


# Columns the per-stage table gains (labsuite.report.tables.STAGE_COLUMNS order is kept; these follow)
STAGE_DRIFT_COLUMNS: tuple[Column, ...] = tuple(
    c for m in DRIFT_METRICS for c in (
        Column(f"{m.name}_slope_per_min", f"{m.unit}/min", f"{m.description}: slope over the stage"),
        Column(f"{m.name}_slope_ci_low", f"{m.unit}/min", "its 95 % CI, lower end"),
        Column(f"{m.name}_slope_ci_high", f"{m.unit}/min", "its 95 % CI, upper end"),
        Column(f"{m.name}_first_last_change", "% or points", "last vs first two minutes"),
        Column(f"{m.name}_drift", "flag", "1 when the metric drifts (see drift in DRIFT_COLUMNS)"),
    ))


# The session CSV (`labsuite report SESSION.h5 --csv`): the per-stage table, then its drift columns.
SESSION_CSV_COLUMNS: tuple[Column, ...] = (*STAGE_COLUMNS, *STAGE_DRIFT_COLUMNS)
SESSION_CSV_COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in SESSION_CSV_COLUMNS)


def add_drift_to_stage_rows(stage_rows: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]
                            ) -> list[dict[str, Any]]:
    """The per-stage rows with the drift columns of their stage (NaN for stages without drift)."""
    by = stage_drift_columns(rows)
    out = []
    for r in stage_rows:
        extra: dict[str, Any] = {}
        for m in DRIFT_METRICS:
            d = by.get((r["stage"], m.name))
            extra[f"{m.name}_slope_per_min"] = d["slope_per_min"] if d else math.nan
            extra[f"{m.name}_slope_ci_low"] = d["slope_ci_low"] if d else math.nan
            extra[f"{m.name}_slope_ci_high"] = d["slope_ci_high"] if d else math.nan
            extra[f"{m.name}_first_last_change"] = d["change"] if d else math.nan
            extra[f"{m.name}_drift"] = d["drift"] if d else None
        out.append({**r, **extra})
    return out
