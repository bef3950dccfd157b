"""Programme aggregation: one participant's sessions read in order and summarised one row per session.

Reads session files through :func:`labsuite.report.loading.load_session_report`; the rows go to the
programme page (:mod:`labsuite.report.html`), its charts and the programme CSV.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labsuite.errors import ArchiveError, ConfigError
from labsuite.report.loading import SessionReport, load_session_report
from labsuite.report.tables import Column, finite_mean, pct_change, step_cadence_spm, steps_in_stage
from labsuite.steps import STEP_DTYPE

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
    Column("kind", "", "training or recheck (from the programme marker; empty outside programmes)"),
    Column("action", "", "progression decision: fixed, first, advance, hold, step_back, recheck"),
    Column("step", "", "progression step (1-based)"),
    Column("step_percent", "%", "the step's cadence change"),
    Column("decision_reason", "", "why (the rule and the numbers it used)"),
    Column("programme_baseline_cadence_spm", "steps/min",
           "the programme baseline the targets used (empty in the first session)"),
    Column("training_target_spm", "steps/min", "cadence target of the training (cadence) stages"),
    Column("retention_target_spm", "steps/min", "cadence target of the retention stages"),
    Column("retention_vs_programme_baseline_pct", "%",
           "retention cadence vs the programme baseline (the first session: its own baseline)"),
    Column("recheck_number", "", "which recheck"),
    Column("regression", "flag", "1 when the recheck flagged a regression"),
    Column("recheck_gain_lost_pct", "%", "share of the cadence gain lost at the recheck"),
    Column("recheck_valr_rise_pct", "%", "VALR at the recheck vs the retrained VALR"),
    Column("recheck_reason", "", "the recheck's verdict in words"),
    Column("drifts", "", "metrics that drifted, as stage:metric (labsuite.report.drift)"),
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
    return (finite_mean(step_cadence_spm(steps)), finite_mean(valid["valr_bw_per_s"]), in_band,
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
            "retention_cadence_change_pct": pct_change(re_cad, base_cad),
            "retention_valr_change_pct": pct_change(re_valr, base_valr),
            "max_pain": max(pains) if pains else math.nan,
            **_programme_fields(rep),
        })
        prog_base = rows[-1]["programme_baseline_cadence_spm"]
        rows[-1]["retention_vs_programme_baseline_pct"] = pct_change(
            re_cad, prog_base if math.isfinite(prog_base) else base_cad)
    return rows


def _target(rep: SessionReport, kind: str) -> float:
    targets = [st.target_cadence_spm for st in rep.stages
               if st.kind == kind and math.isfinite(st.target_cadence_spm)]
    return float(np.mean(targets)) if targets else math.nan


def _num(obj: Mapping[str, Any] | None, key: str) -> float:
    v = obj.get(key) if obj is not None else None
    return math.nan if v is None else float(v)


def _programme_fields(rep: SessionReport) -> dict[str, Any]:
    """The programme and recheck markers' numbers, and the drifts of the session."""
    p, rc = rep.programme, rep.recheck
    return {
        "kind": str(p.get("kind") or "") if p else "",
        "action": str(p.get("action") or "") if p else "",
        "step": p.get("step") if p else None,
        "step_percent": _num(p, "step_percent"),
        "decision_reason": str(p.get("reason") or "") if p else "",
        "programme_baseline_cadence_spm": _num(p, "baseline_cadence_spm"),
        "training_target_spm": _target(rep, "cadence"),
        "retention_target_spm": _target(rep, "retention"),
        "recheck_number": rc.get("number") if rc else None,
        "regression": bool(rc.get("regression")) if rc else None,
        "recheck_gain_lost_pct": _num(rc, "gain_lost_pct"),
        "recheck_valr_rise_pct": _num(rc, "valr_rise_pct"),
        "recheck_reason": str(rc.get("reason") or "") if rc else "",
        "drifts": " ".join(f"{d['stage']}:{d['metric']}" for d in rep.drift if d["drift"]),
    }


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



def session_tick(row: Mapping[str, Any], i: int) -> str:
    """A session's name on a chart axis or in a table: its number, else its place (#1, #2 ...)."""
    n = row.get("session_number")
    return str(n) if n is not None else f"#{i + 1}"
