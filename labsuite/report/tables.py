"""The per-stage table: every number of a session report computed once, and its CSV.

Sits between the loaded session (:mod:`labsuite.report.loading` hands it stage records and the step
table) and everything that prints numbers: the HTML page, the CSV and the programme view.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labsuite.errors import ConfigError
from labsuite.stages import StageRecord
from labsuite.steps import STEP_DTYPE


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

# (column stem, step field) of the force/IMU metrics summarised per stage.
_METRICS = (("valr", "valr_bw_per_s", "bw_per_s"), ("vilr", "vilr_bw_per_s", "bw_per_s"),
            ("peak_vgrf", "peak_vgrf_bw", "bw"), ("tibial_peak", "tibial_peak_g", "g"),
            ("contact", "contact_s", "s"))
SYMMETRY_COLUMNS = (("si_step_pct", "step_s"), ("si_contact_pct", "contact_s"),
             ("si_peak_vgrf_pct", "peak_vgrf_bw"), ("si_valr_pct", "valr_bw_per_s"),
             ("si_tibial_peak_pct", "tibial_peak_g"))
CHANGE_COLUMNS = (("cadence_change_pct", "cadence_mean_spm"), ("valr_change_pct", "valr_mean_bw_per_s"),
            ("vilr_change_pct", "vilr_mean_bw_per_s"), ("peak_vgrf_change_pct", "peak_vgrf_mean_bw"),
            ("tibial_peak_change_pct", "tibial_peak_mean_g"), ("contact_change_pct", "contact_mean_s"))


def finite_mean(v: np.ndarray) -> float:
    """Mean of the finite values; NaN when there are none."""
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


def pct_change(value: float, base: float) -> float:
    """100 * (value - base) / base; NaN when either is missing or the base is 0."""
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
            "cadence_mean_spm": finite_mean(cad), "cadence_sd_spm": _sd(cad),
        }
        row["cadence_vs_target_spm"] = row["cadence_mean_spm"] - st.target_cadence_spm
        row["in_band_pct"] = _in_band_pct(mine, st)
        for stem, fld, unit in _METRICS:
            row[f"{stem}_mean_{unit}"] = finite_mean(valid[fld])
            row[f"{stem}_sd_{unit}"] = _sd(valid[fld])
        left, right = valid[valid["foot"] == 0], valid[valid["foot"] == 1]
        for col, fld in SYMMETRY_COLUMNS:
            row[col] = _si(finite_mean(left[fld]), finite_mean(right[fld]))
        if st.kind == "baseline":
            baseline = row
        for col, src in CHANGE_COLUMNS:
            row[col] = pct_change(row[src], baseline[src]) if baseline is not None else math.nan
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


