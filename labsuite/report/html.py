"""The report's HTML pages: the session page and the programme page, self-contained with print CSS.

The last step of a report: formats the tables (:mod:`labsuite.report.tables`), the events and the
charts (:mod:`labsuite.report.charts`) of loaded sessions into one page each.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from labsuite.report.charts import (
    plot_cadence,
    plot_distributions,
    plot_force_curves,
    plot_valr,
    programme_plot,
)
from labsuite.report.loading import SessionReport
from labsuite.report.programme import programme_table, session_tick
from labsuite.report.sheets import ContactSheet
from labsuite.report.tables import CHANGE_COLUMNS, SYMMETRY_COLUMNS

_CSS = """
body{font-family:Helvetica,Arial,sans-serif;color:#222;margin:24px auto;max-width:960px;font-size:13px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:22px 0 6px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:6px 0;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f0f0f0}td.l,th.l{text-align:left}
.info td{border:none;text-align:left;padding:1px 12px 1px 0}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:8px 10px;margin:8px 0;font-weight:bold}
.ok{background:#e8f5e9;border:1px solid #5a5;padding:6px 10px;margin:8px 0}
table.prog{font-size:11px}.figs{display:flex;flex-wrap:wrap;gap:8px}.note{color:#555;font-size:11px}
figure{margin:4px 0;page-break-inside:avoid;break-inside:avoid}
svg.plot{max-width:100%;height:auto}
@media print{@page{size:A4;margin:12mm}body{margin:0;max-width:none;font-size:10.5px}
 h2{page-break-after:avoid;break-after:avoid}table,figure,.warn{page-break-inside:avoid;break-inside:avoid}
 .noprint{display:none}}
.sheet{display:flex;flex-wrap:wrap;gap:10px}.sheet figure{width:300px}.sheet img{width:100%;height:auto}
"""


def _f(v: Any, digits: int = 1, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (int, np.integer)):
        return f"{int(v)}{unit}"
    return f"{float(v):.{digits}f}{unit}"


def _pm(mean: float, sd: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if math.isfinite(sd) else f"{mean:.{digits}f}"


def _signed(v: float, digits: int = 1) -> str:
    return f"{v:+.{digits}f}" if math.isfinite(v) else "—"


def _e(s: Any) -> str:
    return html.escape(str(s))


_ASKED = {"session_start": "session start", "stage_end": "stage end", "request": "on request"}


def _stage_table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    head = ("<tr><th class=l>stage</th><th class=l>kind</th><th>start<br>(min)</th>"
            "<th>duration<br>(s)</th><th>belt<br>(m/s)</th><th>feedback</th><th>steps</th>"
            "<th>cadence<br>(steps/min)</th><th>target [band]</th><th>vs target</th><th>in band</th>"
            "<th>VALR<br>(BW/s)</th><th>VILR<br>(BW/s)</th><th>peak vGRF<br>(BW)</th>"
            "<th>tibial peak<br>(g)</th><th>contact<br>(ms)</th><th class=l>ended</th></tr>")
    body = []
    for r in rows:
        band = "—"
        if math.isfinite(r["target_cadence_spm"]):
            band = f"{r['target_cadence_spm']:.1f}"
            if math.isfinite(r["band_low_spm"]):
                band += f" [{r['band_low_spm']:.1f}–{r['band_high_spm']:.1f}]"
        fb = r["feedback_on_fraction"]
        fb_text = "none" if fb == 0 else ("—" if not math.isfinite(fb) else f"{100 * fb:.0f} %")
        body.append(
            f"<tr><td class=l>{_e(r['stage'])}</td><td class=l>{_e(r['kind'])}</td>"
            f"<td>{_f(r['start_s'] / 60, 2)}</td><td>{_f(r['duration_s'], 1)}</td>"
            f"<td>{_f(r['belt_speed_m_s'], 2)}</td><td>{fb_text}</td><td>{r['n_steps']}</td>"
            f"<td>{_pm(r['cadence_mean_spm'], r['cadence_sd_spm'], 1)}</td><td>{band}</td>"
            f"<td>{_signed(r['cadence_vs_target_spm'])}</td><td>{_f(r['in_band_pct'], 0, ' %')}</td>"
            f"<td>{_pm(r['valr_mean_bw_per_s'], r['valr_sd_bw_per_s'], 1)}</td>"
            f"<td>{_pm(r['vilr_mean_bw_per_s'], r['vilr_sd_bw_per_s'], 1)}</td>"
            f"<td>{_pm(r['peak_vgrf_mean_bw'], r['peak_vgrf_sd_bw'], 2)}</td>"
            f"<td>{_pm(r['tibial_peak_mean_g'], r['tibial_peak_sd_g'], 1)}</td>"
            f"<td>{_pm(1000 * r['contact_mean_s'], 1000 * r['contact_sd_s'], 0)}</td>"
            f"<td class=l>{_e(r['end_reason'])}</td></tr>")
    return f"<table class=stages>{head}{''.join(body)}</table>"


def _change_table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    head = ("<tr><th class=l>stage</th><th>cadence</th><th>VALR</th><th>VILR</th><th>peak vGRF</th>"
            "<th>tibial peak</th><th>contact</th><th>SI step</th><th>SI contact</th>"
            "<th>SI peak vGRF</th><th>SI VALR</th><th>SI tibial</th></tr>")
    body = []
    for r in rows:
        if r["n_steps"] == 0:
            continue
        cells = "".join(f"<td>{_signed(r[c])}</td>" for c, _ in CHANGE_COLUMNS)
        cells += "".join(f"<td>{_signed(r[c])}</td>" for c, _ in SYMMETRY_COLUMNS)
        body.append(f"<tr><td class=l>{_e(r['stage'])}</td>{cells}</tr>")
    if not body:
        return "<p class=note>No steps recorded.</p>"
    return (f"<table class=changes>{head}{''.join(body)}</table><p class=note>Change from baseline in % "
            "of the baseline stage's mean; SI: left/right symmetry index 100·(L−R)/mean(L,R) of the "
            "stage means, in % (0 symmetric, + left larger).</p>")


_DRIFT_DIGITS = {"cadence": 1, "valr": 1, "contact": 3, "tibial_peak": 2, "rearfoot_share": 0}
_DRIFT_LABELS = {"cadence": "cadence", "valr": "VALR", "contact": "contact time",
                 "tibial_peak": "tibial peak", "rearfoot_share": "rearfoot strikes"}


def drift_table_html(drift: Sequence[Mapping[str, Any]], *, only_stages: Sequence[str] | None = None
                     ) -> str:
    """Form under fatigue: slope per minute with its 95 % CI and first vs last two minutes."""
    rows = [d for d in drift if only_stages is None or d["stage"] in only_stages]
    if not any(d["n_steps"] for d in rows):
        return "<p class=note>No moving stage with enough steps to show a trend.</p>"
    head = ("<tr><th class=l>stage</th><th class=l>metric</th><th>steps</th><th>span (s)</th>"
            "<th>slope per min [95 % CI]</th><th>first</th><th>last</th><th>change</th>"
            "<th class=l>drift</th></tr>")
    body = []
    for d in rows:
        k = _DRIFT_DIGITS.get(d["metric"], 2)
        if not math.isfinite(d["slope_per_min"]):
            slope = "—"
        else:
            slope = (f"{d['slope_per_min']:+.{k + 1}f} [{d['slope_ci_low']:+.{k + 1}f}, "
                     f"{d['slope_ci_high']:+.{k + 1}f}] {_e(d['unit'])}/min")
        unit = (" pts" if d["metric"] == "rearfoot_share" else " %") if math.isfinite(d["change"]) else ""
        flag = "<b style='color:#b00'>DRIFT</b>" if d["drift"] else "—"
        body.append(f"<tr><td class=l>{_e(d['stage'])}</td><td class=l>"
                    f"{_e(_DRIFT_LABELS.get(d['metric'], d['metric']))}</td><td>{d['n_steps']}</td>"
                    f"<td>{_f(d['span_s'], 0)}</td><td>{slope}</td><td>{_f(d['first_mean'], k)}</td>"
                    f"<td>{_f(d['last_mean'], k)}</td><td>{_signed(d['change'])}{unit}</td>"
                    f"<td class=l>{flag}</td></tr>")
    return (f"<table class=drift>{head}{''.join(body)}</table><p class=note>Least-squares slope of the "
            "per-step values over time (from 10 s into the stage, at most a quarter of it: the belt "
            "ramp and the approach to a new target), 95 % CI from the t distribution; first and last: "
            "means over the first and the last two minutes (half the span when shorter). DRIFT: the CI "
            "excludes 0 and slope × span reaches 3 % (cadence), 10 % (VALR, tibial peak), 5 % "
            "(contact time) or 20 points (rearfoot strikes).</p>")


def _events_html(rep: SessionReport) -> str:
    parts = ["<h2>Pain check-ins</h2>"]
    if rep.checkins:
        rows = "".join(
            f"<tr><td>{_f(ev.t_s / 60, 2)}</td><td class=l>{_e(ev.stage)}</td>"
            f"<td class=l>{_e(_ASKED.get(ev.fields.get('asked_at', ''), ev.fields.get('asked_at', '')))}</td>"
            f"<td>{_e(ev.fields.get('pain', '—'))}</td><td class=l>{_e(ev.fields.get('action', ''))}</td>"
            f"</tr>" for ev in rep.checkins)
        parts.append("<table><tr><th>time (min)</th><th class=l>stage</th><th class=l>asked at</th>"
                     f"<th>pain (0–10)</th><th class=l>action</th></tr>{rows}</table>")
    else:
        parts.append("<p>No pain rating was recorded.</p>")
    if rep.unanswered_checkins:
        parts.append(f"<p class=note>{len(rep.unanswered_checkins)} check-in request(s) were not "
                     "answered.</p>")
    parts.append("<h2>Safety and session events</h2>")
    shown = [ev for ev in rep.events if ev.event not in ("session_start",)]
    if shown:
        ev_rows: list[str] = []
        for ev in shown:
            # fields the marker left empty (None, "", NaN: a decoded marker's defaults) say nothing
            detail = {k: v for k, v in ev.fields.items() if k != "event" and v is not None and v != ""
                      and not (isinstance(v, float) and math.isnan(v))}
            text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in detail.items())
            cls = ' style="color:#b00000;font-weight:bold"' if ev.safety else ""
            ev_rows.append(f"<tr{cls}><td>{_f(ev.t_s / 60, 2)}</td><td class=l>{_e(ev.event)}</td>"
                           f"<td class=l>{_e(ev.stage)}</td><td class=l>{_e(text)}</td></tr>")
        parts.append("<table><tr><th>time (min)</th><th class=l>event</th><th class=l>stage</th>"
                     f"<th class=l>details</th></tr>{''.join(ev_rows)}</table>")
    else:
        parts.append("<p>No session events recorded.</p>")
    if not any(ev.safety for ev in rep.events):
        parts.append("<p class=note>No safety stop or emergency stop.</p>")
    return "".join(parts)


def _recording_html(rep: SessionReport) -> str:
    rows = "".join(
        f"<tr><td class=l>{_e(s['source_id'])}</td><td class=l>{_e(s['kind'])}</td>"
        f"<td>{s['samples']}</td><td>{_f(s['rate_hz'], 0)}</td><td>{_f(s['measured_rate_hz'], 1)}</td>"
        f"<td>{_f(s['duration_s'], 1)}</td><td>{s['gaps']}</td><td>{_f(s['gap_s'], 2)}</td></tr>"
        for s in rep.streams)
    out = ["<h2>Recording</h2>",
           f"<p>File <code>{_e(rep.path.name)}</code>; "
           f"{'closed cleanly' if rep.complete else 'NOT closed (cut short)'}"
           f"; {len(rep.steps)} steps in the step table.</p>"]
    if rows:
        out.append("<table><tr><th class=l>stream</th><th class=l>kind</th><th>samples</th>"
                   "<th>nominal Hz</th><th>measured Hz</th><th>duration (s)</th><th>gaps</th>"
                   f"<th>gap time (s)</th></tr>{rows}</table>")
    ev = [e for e in rep.recording_events if e.get("kind") not in ("late_stream",)]
    if ev:
        items = "".join(f"<li>{_e(e.get('kind', ''))} {_e(e.get('source_id', ''))}: "
                        f"{_e(str(e.get('detail', ''))[:200])}</li>" for e in ev[:30])
        more = f"<li>… and {len(ev) - 30} more</li>" if len(ev) > 30 else ""
        out.append(f"<p>Recorder events ({len(ev)}):</p><ul class=note>{items}{more}</ul>")
    return "".join(out)


def _sheet_html(sheet: ContactSheet | None) -> str:
    """The contact sheet: per stage its median-VALR and highest-VALR strikes, each linked to its clip."""
    if sheet is None:
        return ""
    figs = []
    for f in sheet.frames:
        img = (f"<img alt='{_e(f.stage)}, {_e(f.pick)}: step {f.step_number}' "
               f"src='data:image/jpeg;base64,{base64.b64encode(f.jpeg).decode()}'>")
        if f.clip:
            img = f"<a href='{_e(f.clip)}'>{img}</a>"
        figs.append(f"<figure>{img}<figcaption class=note><b>{_e(f.stage)}</b>, {_e(f.pick)}: step "
                    f"{f.step_number} at {f.strike_from_start_s:.1f} s, VALR {_f(f.valr_bw_per_s, 1)} BW/s"
                    f"{' (click for the clip)' if f.clip else ''}</figcaption></figure>")
    problems = "".join(f"<p class=note>{_e(p)}</p>" for p in sheet.problems)
    how = ("<p class=note>Frames from the session's own video (camera " + _e(sheet.camera) + "), the one "
           "nearest each strike; the caption under each picture gives its offset. Step numbers are "
           "those of <code>labsuite video SESSION.h5 --step N</code>.</p>")
    shown = "".join(figs) or "<p>No strike to show.</p>"
    return f"<h2>Video: strikes per stage</h2><div class=sheet>{shown}</div>{problems}{how}"


def _programme_html(rep: SessionReport) -> str:
    """The session's place in its programme: the decision and, for a recheck, its verdict."""
    p, rc = rep.programme, rep.recheck
    if p is None:
        return ""
    out = ["<h2>Programme</h2>"]
    if rc is not None:
        cls = "warn" if rc.get("regression") else "ok"
        out.append(f"<div class={cls}>Recheck {_e(rc.get('number'))}: "
                   f"{'REGRESSION' if rc.get('regression') else 'no regression'}: "
                   f"{_e(rc.get('reason', ''))}</div>")
    base = p.get("baseline_cadence_spm")
    out.append(f"<p>{_e(p.get('kind', ''))}: <b>{_e(p.get('action', ''))}</b>: {_e(p.get('reason', ''))}"
               f"{'; programme baseline ' + _f(base) + ' steps/min' if base is not None else ''}</p>")
    return "".join(out)


def render_session_html(rep: SessionReport, sheet: ContactSheet | None = None) -> str:
    """The session report as one self-contained HTML page (inline SVG plots, print CSS).

    ``sheet``: the session's video contact sheet (:func:`labsuite.report.sheets.contact_sheet`);
    its pictures are inline, its clips linked files beside the page.
    """
    sess = "—"
    if rep.session_number is not None:
        sess = f"{rep.session_number}" + (f" of {rep.programme_sessions}" if rep.programme_sessions else "")
        if rep.session_label:
            sess += f" ({rep.session_label})"
    date = rep.date_utc
    try:
        date = _dt.datetime.fromisoformat(rep.date_utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        pass
    speed = _f(rep.speed_m_s, 2, " m/s")
    if math.isfinite(rep.measured_speed_m_s):
        speed += f" (measured {rep.measured_speed_m_s:.2f} m/s while moving)"
    if rep.belt_faults:
        # the median says nothing of a stop: say it here, the warnings say when
        speed += (f"; the belt left its commanded speed {rep.belt_faults} time"
                  f"{'s' if rep.belt_faults > 1 else ''} by itself (see above)")
    status = {"complete": "completed", "stopped": f"ended early ({rep.end_reason})",
              "cut short": "cut short (file not closed)",
              "incomplete": f"incomplete ({rep.parts} files, data missing between them)"}[rep.status]
    info = [("Participant", rep.participant_id), ("Protocol", rep.protocol_name or "—"),
            ("Programme", rep.programme_name or "—"), ("Session", sess), ("Date", date or "—"),
            ("Treadmill speed", speed), ("Body mass", _f(rep.body_mass_kg, 1, " kg")),
            ("Duration", _f((rep.t_end_s - rep.t0_s) / 60, 1, " min")), ("Status", status)]
    info_html = "".join(f"<tr><td><b>{_e(k)}</b></td><td>{_e(v)}</td></tr>" for k, v in info)
    warnings = "".join(f"<div class=warn>{_e(w)}</div>" for w in rep.warnings())
    if not warnings:
        warnings = "<div class=ok>Session completed as planned.</div>"
    dists = [plot_distributions(rep, "cadence", "Cadence", "steps/min"),
             plot_distributions(rep, "valr_bw_per_s", "VALR", "BW/s"),
             plot_distributions(rep, "tibial_peak_g", "Tibial peak", "g"),
             plot_distributions(rep, "contact_s", "Contact time", "s")]
    dist_html = "".join(f"<figure>{d}</figure>" for d in dists if d)
    curve = plot_force_curves(rep)
    body = [
        f"<h1>Gait retraining session report: {_e(rep.participant_id)}</h1>",
        f"<table class=info>{info_html}</table>", warnings,
        "<h2>Stages</h2>", _stage_table_html(rep.rows),
        "<p class=note>Values are mean ± SD over the steps whose strike falls in the stage. Cadence is "
        "60 / step time per step; 'in band' counts steps whose rolling cadence (as fed back) was inside "
        "the band. VALR/VILR after Milner et al. 2006 (13 % of stance when there is no impact peak, "
        "Blackmore et al. 2016); steps with a foot on both belts are left out of force metrics.</p>",
        "<h2>Change from baseline and symmetry</h2>", _change_table_html(rep.rows),
        _programme_html(rep),
        "<h2>Form under fatigue</h2>", drift_table_html(rep.drift),
        _events_html(rep),
        "<h2>Over the session</h2>",
        f"<figure>{plot_cadence(rep)}<figcaption class=note>Dots: per-step cadence; line: rolling "
        "cadence; green: target (dashed) and tolerance band; grey: stages.</figcaption></figure>",
        f"<figure>{plot_valr(rep)}<figcaption class=note>Dots: per-step VALR; dark red: stage mean; "
        "grey dashed: baseline; orange dashed: loading-rate feedback limit.</figcaption></figure>",
        "<h2>Per stage</h2>", f"<div class=figs>{dist_html or '<p>No steps to show.</p>'}"
        f"{'<figure>' + curve + '</figure>' if curve else ''}</div>",
        "<p class=note>Boxes: quartiles; line: median; dot: mean; whiskers: 5th–95th percentile. Force "
        "curve: vertical ground reaction force from the raw force streams, each contact resampled from "
        "strike to toe-off, mean ± SD per stage.</p>",
        _sheet_html(sheet),
        _recording_html(rep),
        f"<p class=note>labsuite report, generated {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}"
        f" from {_e(rep.path.name)}.</p>",
    ]
    title = f"Session report {rep.participant_id} {rep.protocol_name} {sess}"
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")



def _programme_flags_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """Regressions and drifts first: what a clinician must not miss."""
    out = []
    for i, r in enumerate(rows):
        if r["regression"]:
            out.append(f"<div class=warn style='border-color:#b00;background:#fde8e8'>REGRESSION at "
                       f"recheck {_e(r['recheck_number'])} (session {_e(session_tick(r, i))}, "
                       f"{_e(r['date_utc'][:10])}): {_e(r['recheck_reason'])}</div>")
    for i, r in enumerate(rows):
        if r["drifts"]:
            out.append(f"<div class=warn>Drift in session {_e(session_tick(r, i))}: "
                       f"{_e(r['drifts'].replace(' ', ', '))}</div>")
    return "".join(out)


def _progression_html(rows: Sequence[Mapping[str, Any]]) -> str:
    train = [(i, r) for i, r in enumerate(rows) if r["kind"] == "training"]
    if not train:
        return ""
    body = "".join(
        f"<tr><td>{_e(session_tick(r, i))}</td><td class=l>{_e(r['action'])}</td>"
        f"<td>{_e(r['step'] if r['step'] is not None else '—')}</td>"
        f"<td>{_signed(r['step_percent'])}</td><td>{_f(r['programme_baseline_cadence_spm'])}</td>"
        f"<td>{_f(r['training_target_spm'])}</td><td>{_f(r['retention_in_band_pct'], 0, ' %')}</td>"
        f"<td>{_signed(r['retention_vs_programme_baseline_pct'])}</td>"
        f"<td class=l>{_e(r['decision_reason'])}</td></tr>" for i, r in train)
    return ("<h2>Progression</h2><table class=prog><tr><th>#</th><th class=l>decision</th><th>step</th>"
            "<th>step %</th><th>programme baseline</th><th>target</th><th>retention in band</th>"
            "<th>retention vs programme baseline Δ%</th><th class=l>reason</th></tr>" + body
            + "</table><p class=note>Decided before each session from the last training session "
            "(labsuite/protocol/progression.py); targets are % of the programme baseline, the "
            "first session's baseline (empty in the first session, which sets it).</p>")


_REGRESSION = "<b style='color:#b00'>REGRESSION</b>"


def _rechecks_html(rows: Sequence[Mapping[str, Any]]) -> str:
    checks = [(i, r) for i, r in enumerate(rows) if r["kind"] == "recheck"]
    if not checks:
        return ""
    body = "".join(
        f"<tr><td>{_e(r['recheck_number'])}</td><td class=l>{_e(r['date_utc'][:10])}</td>"
        f"<td>{_f(r['retention_target_spm'])}</td><td>{_f(r['retention_cadence_spm'])}</td>"
        f"<td>{_f(r['recheck_gain_lost_pct'], 0, ' %')}</td>"
        f"<td>{_signed(r['recheck_valr_rise_pct'], 0)}</td>"
        f"<td class=l>{_REGRESSION if r['regression'] else 'kept'}</td>"
        f"<td class=l>{_e(r['recheck_reason'])}</td></tr>" for _, r in checks)
    return ("<h2>Rechecks</h2><table class=prog><tr><th>#</th><th class=l>date</th>"
            "<th>retrained target</th><th>cadence</th><th>gain lost</th><th>VALR vs retrained Δ%</th>"
            "<th class=l>flag</th><th class=l>verdict</th></tr>" + body + "</table>")


def render_programme_html(reports: Sequence[SessionReport]) -> str:
    """Progress across a programme's sessions as one self-contained HTML page."""
    rows = programme_table(reports)
    first = reports[0]
    body_rows: list[str] = []
    for r, rep in zip(rows, reports, strict=True):
        fb = r["feedback_on_fraction"]
        status = r["status"] + (": " + r["end_reason"] if r["status"] == "stopped" else "")
        body_rows.append(
            f"<tr><td>{_e(session_tick(r, len(body_rows)))}</td><td class=l>{_e(r['date_utc'][:10])}</td>"
            f"<td class=l>{_e(rep.session_label)}</td>"
            f"<td class=l>{_e(status)}</td>"
            f"<td>{'—' if not math.isfinite(fb) else f'{100 * fb:.0f} %'}</td>"
            f"<td>{_f(r['training_s'] / 60, 1)}</td>"
            f"<td>{_f(r['baseline_cadence_spm'])}</td><td>{_f(r['training_cadence_spm'])}</td>"
            f"<td>{_f(r['retention_cadence_spm'])}</td><td>{_f(r['retention_in_band_pct'], 0, ' %')}</td>"
            f"<td>{_f(r['baseline_valr_bw_per_s'])}</td><td>{_f(r['training_valr_bw_per_s'])}</td>"
            f"<td>{_f(r['retention_valr_bw_per_s'])}</td>"
            f"<td>{_signed(r['retention_cadence_change_pct'])}</td>"
            f"<td>{_signed(r['retention_valr_change_pct'])}</td><td>{_f(r['max_pain'], 0)}</td></tr>")
    table = ("<table class=prog><tr><th>#</th><th class=l>date</th><th class=l>plan</th>"
             "<th class=l>status</th><th>feed&shy;back</th><th>train&shy;ing (min)</th>"
             "<th colspan=3>cadence (steps/min)<br>baseline · training · retention</th>"
             "<th>reten&shy;tion in band</th>"
             "<th colspan=3>VALR (BW/s)<br>baseline · training · retention</th>"
             "<th>reten&shy;tion cad. Δ%</th><th>reten&shy;tion VALR Δ%</th><th>max pain</th></tr>"
             + "".join(body_rows) + "</table>")
    valr_plot = programme_plot(rows, (("baseline_valr_bw_per_s", "baseline", "#555"),
                                       ("training_valr_bw_per_s", "training", "#d62728"),
                                       ("retention_valr_bw_per_s", "retention", "#ff7f0e")),
                                "Loading rate (VALR) per session", "VALR (BW/s)")
    fb_rows = [{**r, "feedback_pct": 100 * r["feedback_on_fraction"]} for r in rows]
    fb_plot = programme_plot(fb_rows, (("feedback_pct", "feedback on", "#9467bd"),),
                              "Feedback level per session", "feedback on (% of time)", (0.0, 100.0))
    cad_plot = programme_plot(rows, (("baseline_cadence_spm", "baseline", "#555"),
                                      ("programme_baseline_cadence_spm", "programme baseline", "#000"),
                                      ("training_target_spm", "training target", "#aec7e8"),
                                      ("training_cadence_spm", "training", "#1f77b4"),
                                      ("retention_cadence_spm", "retention", "#2ca02c")),
                               "Cadence per session", "cadence (steps/min)")
    flags = _programme_flags_html(rows)
    progression = _progression_html(rows)
    rechecks = _rechecks_html(rows)
    drift = "".join(
        f"<h3>Session {_e(session_tick(r, i))} ({_e(rep.path.name)})</h3>"
        + drift_table_html(rep.drift, only_stages=[st.name for st in rep.stages
                                                     if st.kind in ("cadence", "retention")])
        for i, (r, rep) in enumerate(zip(rows, reports, strict=True)))
    stopped = [r for r in rows if r["status"] != "complete"]
    warn = "".join(f"<div class=warn>Session {_e(session_tick(r, 0))} ({_e(r['file'])}) was "
                   f"{_e(r['status'])}{': ' + _e(r['end_reason']) if r['end_reason'] else ''}.</div>"
                   for r in stopped)
    protocols = sorted({rep.protocol_name for rep in reports if rep.protocol_name})
    proto_note = (f"<div class=warn>The sessions ran different protocols: {_e(', '.join(protocols))}."
                  "</div>" if len(protocols) > 1 else "")
    title = f"Programme report {first.participant_id}"
    body = [
        f"<h1>Gait retraining programme: {_e(first.participant_id)}</h1>",
        f"<table class=info><tr><td><b>Programme</b></td><td>{_e(first.programme_name or '—')}</td></tr>"
        f"<tr><td><b>Protocol</b></td><td>{_e(', '.join(protocols) or '—')}</td></tr>"
        f"<tr><td><b>Sessions</b></td><td>{len(reports)}"
        f"{' of ' + str(first.programme_sessions) if first.programme_sessions else ''}</td></tr></table>",
        flags, warn, proto_note, rechecks, progression, "<h2>Sessions</h2>", table,
        "<p class=note>Cadence: mean of per-step cadence over all steps of the stages of that kind; "
        "VALR: mean over valid steps; Δ%: retention relative to the same session's baseline; feedback: "
        "share of the training time with cues on.</p>",
        f"<h2>Progress</h2><div class=figs><figure>{cad_plot}</figure><figure>{valr_plot}</figure>"
        f"<figure>{fb_plot}</figure></div>",
        "<h2>Form under fatigue (training and retention stages)</h2>", drift,
        f"<p class=note>labsuite report --programme, {len(reports)} files: "
        f"{_e(', '.join(r.path.name for r in reports))}.</p>",
    ]
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")
