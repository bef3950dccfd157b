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
        })
    return rows


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
