"""The report's charts: cadence and VALR over the session, per-stage box plots, force curves, progress.

Draws what :mod:`labsuite.report.loading` read (and the programme rows) as inline SVG for the HTML
pages in :mod:`labsuite.report.html`.
"""

from __future__ import annotations

import html
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from labsuite.report.loading import MOVING_KINDS, SessionReport
from labsuite.report.programme import session_tick
from labsuite.report.tables import step_cadence_spm, steps_in_stage

_CLIP_IDS = itertools.count(1)  # clip-path ids must be unique within a page
STAGE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
                 "#17becf", "#7f7f7f", "#bcbd22")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out, v = [], first
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


def _fmt_tick(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-9 else "0"


class SvgPlot:
    """A small x-y chart drawn as inline SVG: data coordinates in, pixels out; no dependency."""

    def __init__(self, width: int, height: int, x_range: tuple[float, float],
                 y_range: tuple[float, float], *, title: str = "", x_label: str = "",
                 y_label: str = "", margin: tuple[int, int, int, int] = (28, 16, 42, 58)) -> None:
        self.w, self.h = width, height
        self.top, self.right, self.bottom, self.left = margin
        x0, x1 = x_range
        y0, y1 = y_range
        if not (math.isfinite(x0) and math.isfinite(x1) and x1 > x0):
            x0, x1 = (x0, x0 + 1.0) if math.isfinite(x0) else (0.0, 1.0)
        if not (math.isfinite(y0) and math.isfinite(y1) and y1 > y0):
            y0, y1 = (y0 - 1.0, y0 + 1.0) if math.isfinite(y0) else (0.0, 1.0)
        self.x0, self.x1, self.y0, self.y1 = x0, x1, y0, y1
        self.title, self.x_label, self.y_label = title, x_label, y_label
        self.back: list[str] = []
        self.front: list[str] = []
        self.outside: list[str] = []  # drawn without the plot-area clip (axis labels)

    def px(self, x: Any) -> Any:
        """Data x to pixels."""
        return self.left + (np.asarray(x, dtype=float) - self.x0) / (self.x1 - self.x0) * (
            self.w - self.left - self.right)

    def py(self, y: Any) -> Any:
        """Data y to pixels (clipped to the plot area so outliers sit on its edge)."""
        yc = np.clip(np.asarray(y, dtype=float), self.y0, self.y1)
        return self.h - self.bottom - (yc - self.y0) / (self.y1 - self.y0) * (
            self.h - self.top - self.bottom)

    def band(self, x0: float, x1: float, y0: float | None, y1: float | None, fill: str,
             opacity: float = 1.0, *, back: bool = True) -> None:
        """A filled rectangle; ``y0``/``y1`` None span the whole height."""
        xa, xb = float(self.px(max(x0, self.x0))), float(self.px(min(x1, self.x1)))
        ya = float(self.py(self.y1 if y1 is None else y1))
        yb = float(self.py(self.y0 if y0 is None else y0))
        if xb <= xa or yb <= ya:
            return
        (self.back if back else self.front).append(
            f'<rect x="{xa:.1f}" y="{ya:.1f}" width="{xb - xa:.1f}" height="{yb - ya:.1f}" '
            f'fill="{fill}" fill-opacity="{opacity:g}"/>')

    def line(self, xs: Any, ys: Any, colour: str, width: float = 1.5, dash: str = "",
             opacity: float = 1.0) -> None:
        """A polyline; NaN values break it."""
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        ok = np.isfinite(xs) & np.isfinite(ys)
        if not ok.any():
            return
        px, py = self.px(xs), self.py(ys)
        parts, pen = [], False
        for i in range(len(xs)):
            if ok[i]:
                parts.append(f"{'L' if pen else 'M'}{px[i]:.1f} {py[i]:.1f}")
                pen = True
            else:
                pen = False
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        self.front.append(f'<path d="{"".join(parts)}" fill="none" stroke="{colour}" '
                          f'stroke-width="{width:g}" stroke-opacity="{opacity:g}"{dash_attr}/>')

    def area(self, xs: Any, lo: Any, hi: Any, colour: str, opacity: float = 0.15) -> None:
        """A filled area between two curves (e.g. mean ± SD)."""
        xs, lo, hi = (np.asarray(v, dtype=float) for v in (xs, lo, hi))
        ok = np.isfinite(xs) & np.isfinite(lo) & np.isfinite(hi)
        if ok.sum() < 2:
            return
        xs, lo, hi = xs[ok], lo[ok], hi[ok]
        pts = [f"{a:.1f},{b:.1f}" for a, b in zip(self.px(xs), self.py(hi), strict=True)]
        pts += [f"{a:.1f},{b:.1f}" for a, b in zip(self.px(xs[::-1]), self.py(lo[::-1]), strict=True)]
        self.back.append(f'<polygon points="{" ".join(pts)}" fill="{colour}" '
                         f'fill-opacity="{opacity:g}" stroke="none"/>')

    def dots(self, xs: Any, ys: Any, colour: str, size: float = 3.0, opacity: float = 0.6) -> None:
        """Many points as one path of zero-length round-capped segments (compact for 1000s)."""
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        ok = np.isfinite(xs) & np.isfinite(ys)
        if not ok.any():
            return
        d = "".join(f"M{a:.1f} {b:.1f}h0" for a, b in zip(self.px(xs[ok]), self.py(ys[ok]), strict=True))
        self.front.append(f'<path d="{d}" stroke="{colour}" stroke-width="{size:g}" '
                          f'stroke-linecap="round" stroke-opacity="{opacity:g}" fill="none"/>')

    def text(self, x: float, y: float, s: str, *, anchor: str = "start", size: int = 11,
             colour: str = "#333", data: bool = True, dy: float = 0.0, clip: bool = True) -> None:
        """Text at data (or pixel, ``data=False``) coordinates, shifted down by ``dy`` pixels."""
        px = float(self.px(x)) if data else x
        py = (float(self.py(y)) if data else y) + dy
        (self.front if clip else self.outside).append(
            f'<text x="{px:.1f}" y="{py:.1f}" font-size="{size}" fill="{colour}" '
            f'text-anchor="{anchor}">{html.escape(s)}</text>')

    def render(self, *, css_class: str = "plot", x_ticks: bool = True) -> str:
        """The finished ``<svg>`` element with axes, ticks and labels."""
        w, h = self.w, self.h
        x_a, x_b = self.left, w - self.right
        y_a, y_b = self.top, h - self.bottom
        axes = [f'<rect x="{x_a}" y="{y_a}" width="{x_b - x_a}" height="{y_b - y_a}" fill="none" '
                'stroke="#999" stroke-width="1"/>']
        for v in nice_ticks(self.x0, self.x1, 8) if x_ticks else []:
            p = float(self.px(v))
            axes.append(f'<line x1="{p:.1f}" y1="{y_b}" x2="{p:.1f}" y2="{y_b + 4}" stroke="#666"/>'
                        f'<text x="{p:.1f}" y="{y_b + 16}" font-size="10" text-anchor="middle" '
                        f'fill="#444">{_fmt_tick(v)}</text>')
        for v in nice_ticks(self.y0, self.y1, 5):
            p = float(self.py(v))
            axes.append(f'<line x1="{x_a}" y1="{p:.1f}" x2="{x_b}" y2="{p:.1f}" stroke="#e4e4e4"/>'
                        f'<text x="{x_a - 5}" y="{p + 3.5:.1f}" font-size="10" text-anchor="end" '
                        f'fill="#444">{_fmt_tick(v)}</text>')
        labels = []
        if self.title:
            labels.append(f'<text x="{x_a}" y="{self.top - 10}" font-size="13" font-weight="bold" '
                          f'fill="#222">{html.escape(self.title)}</text>')
        if self.x_label:
            labels.append(f'<text x="{(x_a + x_b) / 2:.1f}" y="{h - 8}" font-size="11" '
                          f'text-anchor="middle" fill="#333">{html.escape(self.x_label)}</text>')
        if self.y_label:
            cy = (y_a + y_b) / 2
            labels.append(f'<text x="14" y="{cy:.1f}" font-size="11" text-anchor="middle" fill="#333" '
                          f'transform="rotate(-90 14 {cy:.1f})">{html.escape(self.y_label)}</text>')
        clip = f"clip{next(_CLIP_IDS)}"
        return (f'<svg class="{css_class}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
                f'viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif">'
                f'<defs><clipPath id="{clip}"><rect x="{x_a}" y="{y_a - 14}" width="{x_b - x_a}" '
                f'height="{y_b - y_a + 14}"/></clipPath></defs>'
                f'<g clip-path="url(#{clip})">{"".join(self.back)}</g>{"".join(axes[1:])}'
                f'<g clip-path="url(#{clip})">{"".join(self.front)}</g>{axes[0]}{"".join(labels)}'
                f'{"".join(self.outside)}</svg>')


def _robust_range(values: Iterable[np.ndarray], extra: Iterable[float] = (), pad: float = 0.08
                  ) -> tuple[float, float]:
    vals = [np.asarray(v, dtype=float).ravel() for v in values]
    allv = np.concatenate(vals) if vals else np.empty(0)
    allv = allv[np.isfinite(allv)]
    ex = [e for e in extra if math.isfinite(e)]
    if len(allv) >= 20:
        lo, hi = float(np.percentile(allv, 0.5)), float(np.percentile(allv, 99.5))
    elif len(allv):
        lo, hi = float(allv.min()), float(allv.max())
    else:
        lo = hi = math.nan
    if ex:
        lo = min([lo, *ex]) if math.isfinite(lo) else min(ex)
        hi = max([hi, *ex]) if math.isfinite(hi) else max(ex)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return lo - pad * span, hi + pad * span


def _stage_backdrop(plot: SvgPlot, rep: SessionReport, *, label: bool = True) -> None:
    for i, st in enumerate(rep.stages):
        a, b = (st.start_s - rep.t0_s) / 60.0, (st.end_s - rep.t0_s) / 60.0
        plot.band(a, b, None, None, "#f2f2f2" if i % 2 == 0 else "#fafafa")
        if label and b - a > 0.04 * (plot.x1 - plot.x0):
            plot.text((a + b) / 2, plot.y1, st.name, anchor="middle", size=10, colour="#555", dy=12)


def plot_cadence(rep: SessionReport, width: int = 900, height: int = 260) -> str:
    """Cadence over the session: per-step dots, rolling cadence, stage bands, targets and bands."""
    steps = rep.steps
    t_min = (steps["strike_s"] - rep.t0_s) / 60.0
    cad = step_cadence_spm(steps)
    targets = [v for st in rep.stages for v in (st.band_low_spm, st.band_high_spm, st.target_cadence_spm)]
    moving = np.zeros(len(steps), dtype=bool)
    for st in rep.stages:
        if st.kind in (*MOVING_KINDS, "recording"):
            moving |= (steps["strike_s"] >= st.start_s) & (steps["strike_s"] < st.end_s)
    y = _robust_range([cad[moving] if moving.any() else cad], targets)
    x = (0.0, max((rep.t_end_s - rep.t0_s) / 60.0, 1e-3))
    plot = SvgPlot(width, height, x, y, title="Cadence", x_label="time (min)",
                   y_label="cadence (steps/min)")
    _stage_backdrop(plot, rep)
    for st in rep.stages:
        a, b = (st.start_s - rep.t0_s) / 60.0, (st.end_s - rep.t0_s) / 60.0
        if math.isfinite(st.band_low_spm) and math.isfinite(st.band_high_spm):
            plot.band(a, b, st.band_low_spm, st.band_high_spm, "#2ca02c", 0.18)
        if math.isfinite(st.target_cadence_spm):
            plot.line([a, b], [st.target_cadence_spm] * 2, "#1a7a1a", 1.5, "6 3")
    plot.dots(t_min, cad, "#1f77b4", 2.5, 0.45)
    plot.line(t_min, steps["cadence_spm"], "#0b3d6b", 1.2)
    return plot.render()


def plot_valr(rep: SessionReport, width: int = 900, height: int = 260) -> str:
    """VALR over the session: per-step dots, stage means, baseline and the loading-rate cue limit."""
    steps = rep.steps[~(rep.steps["crossover"] >= 1)]
    t_min = (steps["strike_s"] - rep.t0_s) / 60.0
    valr = steps["valr_bw_per_s"]
    base = rep.baseline_valr_bw_per_s
    if not math.isfinite(base):
        base = next((r["valr_mean_bw_per_s"] for r in rep.rows if r["kind"] == "baseline"), math.nan)
    limits = []
    for st in rep.stages:
        try:
            cue = json.loads(st.feedback_json or "{}").get("loading_rate")
        except (json.JSONDecodeError, AttributeError):
            cue = None
        if isinstance(cue, dict) and cue.get("max_percent_of_baseline") and math.isfinite(base):
            limits.append((st, base * float(cue["max_percent_of_baseline"]) / 100.0))
    y = _robust_range([valr], [base, *(v for _, v in limits)])
    x = (0.0, max((rep.t_end_s - rep.t0_s) / 60.0, 1e-3))
    plot = SvgPlot(width, height, x, y, title="Vertical average loading rate (VALR)",
                   x_label="time (min)", y_label="VALR (BW/s)")
    _stage_backdrop(plot, rep)
    plot.dots(t_min, valr, "#d62728", 2.5, 0.4)
    for st, row in zip(rep.stages, rep.rows, strict=True):
        a, b = (st.start_s - rep.t0_s) / 60.0, (st.end_s - rep.t0_s) / 60.0
        plot.line([a, b], [row["valr_mean_bw_per_s"]] * 2, "#7a1010", 2.0)
    if math.isfinite(base):
        plot.line([x[0], x[1]], [base, base], "#555", 1.0, "4 3")
    for st, lim in limits:
        a, b = (st.start_s - rep.t0_s) / 60.0, (st.end_s - rep.t0_s) / 60.0
        plot.line([a, b], [lim, lim], "#ff7f0e", 1.8, "6 3")
    return plot.render()


def plot_distributions(rep: SessionReport, field_name: str, label: str, unit: str,
                       width: int = 440, height: int = 240) -> str:
    """Per-stage box plots of one step field (box: quartiles, line: median, whiskers: 5-95 %)."""
    groups = []
    for st in rep.stages:
        mine = steps_in_stage(rep.steps, st)
        if field_name == "cadence":
            vals = step_cadence_spm(mine)
        else:
            vals = mine[~(mine["crossover"] >= 1)][field_name]
        vals = vals[np.isfinite(vals)]
        if len(vals) >= 3:
            groups.append((st.name, vals))
    if not groups:
        return ""
    y = _robust_range([g[1] for g in groups])
    plot = SvgPlot(width, height, (0.0, float(len(groups))), y, title=f"{label} per stage",
                   y_label=f"{label} ({unit})", margin=(28, 12, 46, 58))
    for i, (name, vals) in enumerate(groups):
        q05, q25, q50, q75, q95 = np.percentile(vals, [5, 25, 50, 75, 95])
        colour = STAGE_COLOURS[i % len(STAGE_COLOURS)]
        plot.line([i + 0.5, i + 0.5], [q05, q25], "#555", 1.0)
        plot.line([i + 0.5, i + 0.5], [q75, q95], "#555", 1.0)
        plot.band(i + 0.2, i + 0.8, q25, q75, colour, 0.35, back=False)
        plot.line([i + 0.2, i + 0.8], [q50, q50], "#111", 2.0)
        plot.dots([i + 0.5], [float(np.mean(vals))], "#111", 5.0, 1.0)
        plot.text(i + 0.5, plot.y0, name[:16], anchor="middle", size=10, dy=15, clip=False)
    return plot.render(x_ticks=False)


def plot_force_curves(rep: SessionReport, width: int = 440, height: int = 260) -> str:
    """Mean vertical force over stance (0-100 %) per stage, mean ± SD shaded."""
    if not rep.curves:
        return ""
    unit = rep.curves[0].unit
    y = _robust_range([c.mean + c.sd for c in rep.curves] + [c.mean - c.sd for c in rep.curves],
                      [0.0], pad=0.04)
    plot = SvgPlot(width, height, (0.0, 100.0), (min(0.0, y[0]), y[1]),
                   title="Mean vertical force over stance", x_label="stance (%)",
                   y_label=f"vertical force ({unit})")
    for i, c in enumerate(rep.curves):
        colour = STAGE_COLOURS[i % len(STAGE_COLOURS)]
        plot.area(c.percent, c.mean - c.sd, c.mean + c.sd, colour, 0.10)
        plot.line(c.percent, c.mean, colour, 2.0)
        plot.text(plot.w - plot.right - 6, plot.top + 14 + 14 * i, f"{c.stage} (n={c.n_steps})",
                  anchor="end", size=10, colour=colour, data=False)
    return plot.render()



def programme_plot(rows: Sequence[Mapping[str, Any]], keys: Sequence[tuple[str, str, str]],
                    title: str, y_label: str, extra: Sequence[float] = ()) -> str:
    """One value per session for each (row key, label, colour) of ``keys``, sessions along x."""
    xs = np.arange(1, len(rows) + 1, dtype=float)
    series = [np.array([r[k] for r in rows], dtype=float) for k, _, _ in keys]
    y = _robust_range(series, extra)
    plot = SvgPlot(440, 250, (0.5, len(rows) + 0.5), y, title=title, x_label="session",
                   y_label=y_label)
    for (_, _label, colour), ys in zip(keys, series, strict=True):
        plot.line(xs, ys, colour, 1.8)
        plot.dots(xs, ys, colour, 7.0, 1.0)
    for i, (_, label, colour) in enumerate(keys):
        plot.text(plot.w - plot.right - 6, plot.top + 14 + 13 * i, label, anchor="end", size=10,
                  colour=colour, data=False)
    return plot.render(x_ticks=False).replace("</svg>", "".join(
        f'<text x="{float(plot.px(x)):.1f}" y="{plot.h - plot.bottom + 16}" font-size="10" '
        f'text-anchor="middle" fill="#444">{html.escape(session_tick(r, i))}</text>'
        for i, (x, r) in enumerate(zip(xs, rows, strict=True))) + "</svg>")
