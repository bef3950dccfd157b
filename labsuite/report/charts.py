"""The report's charts, drawn with matplotlib: session time courses, per-stage plots, programme progress.

Draws what :mod:`labsuite.report.loading` read (and the programme rows). Each ``*_figure`` function
returns a :class:`matplotlib.figure.Figure` a researcher can restyle or save (``fig.savefig("x.pdf")``);
each ``plot_*`` function returns the same chart as inline SVG for the pages in
:mod:`labsuite.report.html`. Figures are built without pyplot and rendered by the SVG canvas, so a
report never selects a GUI backend or imports Qt.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from labsuite.report.loading import MOVING_KINDS, SessionReport
from labsuite.report.programme import session_tick
from labsuite.report.tables import step_cadence_spm, steps_in_stage

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

STAGE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
                 "#17becf", "#7f7f7f", "#bcbd22")
CADENCE_DOT, CADENCE_LINE, TARGET_BAND, TARGET_LINE = "#1f77b4", "#0b3d6b", "#2ca02c", "#1a7a1a"
VALR_DOT, VALR_MEAN, BASELINE_LINE, LIMIT_LINE = "#d62728", "#7a1010", "#555555", "#ff7f0e"

# The report's look, applied while a figure is built and saved (never to the global rcParams: a
# researcher's own figures in the same process stay as they set them). Sizes are in points, and a
# chart is sized so that one point is one CSS pixel on the page.
STYLE: dict[RcKeyType, Any] = {
    "font.family": "sans-serif",
    # Liberation Sans has Arial's and Helvetica's metrics: text is laid out as the browser draws it.
    "font.sans-serif": ["Helvetica", "Arial", "Liberation Sans", "DejaVu Sans"],
    "font.size": 10.0,
    "axes.titlesize": 13.0, "axes.titleweight": "bold", "axes.titlelocation": "left",
    "axes.titlepad": 7.0, "axes.labelsize": 11.0, "axes.labelcolor": "#333333",
    "axes.edgecolor": "#999999", "axes.linewidth": 0.8,
    "axes.grid": True, "axes.grid.axis": "y", "axes.axisbelow": True,
    "grid.color": "#e4e4e4", "grid.linewidth": 0.8,
    "xtick.labelsize": 10.5, "ytick.labelsize": 10.5, "xtick.color": "#444444",
    "ytick.color": "#444444",
    "legend.fontsize": 10.0, "legend.frameon": False, "legend.handlelength": 1.6,
    # text stays text in the SVG: it prints sharply, can be searched and copied
    "svg.fonttype": "none",
}
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}
# (top, right, bottom, left) margins in pixels around the plot area
_MARGIN_PX = (28, 16, 42, 58)


@contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(STYLE):
        yield


def _figure(width_px: int, height_px: int, margin_px: tuple[int, int, int, int] = _MARGIN_PX
            ) -> tuple[Figure, Axes]:
    """A figure of ``width_px`` x ``height_px`` (one point per pixel) with one plot area."""
    fig = Figure(figsize=(width_px / 72.0, height_px / 72.0), dpi=72)
    FigureCanvasSVG(fig)
    top, right, bottom, left = margin_px
    fig.subplots_adjust(left=left / width_px, right=1 - right / width_px, bottom=bottom / height_px,
                        top=1 - top / height_px)
    ax = fig.add_subplot()
    # round ticks: 1, 2, 2.5 or 5 times a power of ten
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]))
    return fig, ax


def figure_svg(fig: Figure, *, css_class: str = "plot") -> str:
    """A figure as an ``<svg>`` element to inline in an HTML page (one point = one CSS pixel).

    Element ids (clip paths, markers) are salted with the figure's title, so several charts on one
    page never share an id and the same file gives the same page.
    """
    title = " ".join(ax.get_title(loc="left") for ax in fig.axes)
    buf = io.StringIO()
    # the style again: the SVG writer takes the font fallback list from rcParams as it writes
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": f"labsuite:{title}"}):
        fig.savefig(buf, format="svg", metadata=_NO_METADATA)
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # the XML declaration and DOCTYPE do not belong inside HTML
    # group ids (figure_1, axes_1 ...) repeat in every chart of a page; nothing refers to them
    text = re.sub(r'<g id="[^"]*"', "<g", text)
    text = re.sub(r"\n\s+", "\n", text)
    return re.sub(r'<svg ([^>]*?)width="([\d.]+)pt" height="([\d.]+)pt"',
                  rf'<svg class="{css_class}" \1width="\2" height="\3"', text.strip(), count=1)


def _robust_range(values: Iterable[np.ndarray], extra: Iterable[float] = (), pad: float = 0.08
                  ) -> tuple[float, float]:
    """A y range holding 99 % of the values (all of them when fewer than 20) and every ``extra``."""
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


def _dots(ax: Axes, xs: Any, ys: Any, colour: str, size_pt: float, alpha: float) -> None:
    """Per-step values as dots; values outside the y range sit on its edge, so none disappears."""
    y0, y1 = ax.get_ylim()
    ax.plot(xs, np.clip(np.asarray(ys, dtype=float), y0, y1), linestyle="none", marker="o",
            markersize=size_pt, markeredgewidth=0, color=colour, alpha=alpha, zorder=3)


def _minutes(rep: SessionReport, t_s: Any) -> Any:
    return (np.asarray(t_s, dtype=float) - rep.t0_s) / 60.0


def _session_axes(rep: SessionReport, ax: Axes, y_range: tuple[float, float]) -> None:
    """Time axis in minutes over the whole session, stages as alternating grey bands with names."""
    x1 = max((rep.t_end_s - rep.t0_s) / 60.0, 1e-3)
    ax.set_xlim(0.0, x1)
    ax.set_ylim(*y_range)
    ax.set_xlabel("time (min)")
    for i, st in enumerate(rep.stages):
        a, b = _minutes(rep, st.start_s), _minutes(rep, st.end_s)
        ax.axvspan(a, b, color="#f2f2f2" if i % 2 == 0 else "#fafafa", linewidth=0, zorder=0)
        if b - a > 0.04 * x1:
            ax.text((a + b) / 2, 0.985, st.name, transform=ax.get_xaxis_transform(), ha="center",
                    va="top", fontsize=9.5, color="#555555", clip_on=True, zorder=4)


def cadence_figure(rep: SessionReport, width_px: int = 900, height_px: int = 260) -> Figure:
    """Cadence over the session: per-step dots, rolling cadence, stage bands, targets and bands."""
    steps = rep.steps
    t_min = _minutes(rep, steps["strike_s"])
    cad = step_cadence_spm(steps)
    targets = [v for st in rep.stages for v in (st.band_low_spm, st.band_high_spm, st.target_cadence_spm)]
    moving = np.zeros(len(steps), dtype=bool)
    for st in rep.stages:
        if st.kind in (*MOVING_KINDS, "recording"):
            moving |= (steps["strike_s"] >= st.start_s) & (steps["strike_s"] < st.end_s)
    with _style():
        fig, ax = _figure(width_px, height_px)
        _session_axes(rep, ax, _robust_range([cad[moving] if moving.any() else cad], targets))
        ax.set_title("Cadence")
        ax.set_ylabel("cadence (steps/min)")
        for st in rep.stages:
            a, b = _minutes(rep, st.start_s), _minutes(rep, st.end_s)
            if math.isfinite(st.band_low_spm) and math.isfinite(st.band_high_spm):
                ax.fill_between([a, b], st.band_low_spm, st.band_high_spm, color=TARGET_BAND,
                                alpha=0.18, linewidth=0, zorder=1)
            if math.isfinite(st.target_cadence_spm):
                ax.plot([a, b], [st.target_cadence_spm] * 2, color=TARGET_LINE, linewidth=1.5,
                        linestyle=(0, (4, 2)), zorder=2)
        _dots(ax, t_min, cad, CADENCE_DOT, 2.5, 0.45)
        ax.plot(t_min, steps["cadence_spm"], color=CADENCE_LINE, linewidth=1.2, zorder=4)
    return fig


def _loading_rate_limits(rep: SessionReport, base: float) -> list[tuple[Any, float]]:
    """(stage, VALR limit in BW/s) of the stages whose loading-rate cue has a limit."""
    limits = []
    for st in rep.stages:
        try:
            cue = json.loads(st.feedback_json or "{}").get("loading_rate")
        except (json.JSONDecodeError, AttributeError):
            cue = None
        if isinstance(cue, dict) and cue.get("max_percent_of_baseline") and math.isfinite(base):
            limits.append((st, base * float(cue["max_percent_of_baseline"]) / 100.0))
    return limits


def valr_figure(rep: SessionReport, width_px: int = 900, height_px: int = 260) -> Figure:
    """VALR over the session: per-step dots, stage means, baseline and the loading-rate cue limit."""
    steps = rep.steps[~(rep.steps["crossover"] >= 1)]
    valr = steps["valr_bw_per_s"]
    base = rep.baseline_valr_bw_per_s
    if not math.isfinite(base):
        base = next((r["valr_mean_bw_per_s"] for r in rep.rows if r["kind"] == "baseline"), math.nan)
    limits = _loading_rate_limits(rep, base)
    with _style():
        fig, ax = _figure(width_px, height_px)
        _session_axes(rep, ax, _robust_range([valr], [base, *(v for _, v in limits)]))
        ax.set_title("Vertical average loading rate (VALR)")
        ax.set_ylabel("VALR (BW/s)")
        _dots(ax, _minutes(rep, steps["strike_s"]), valr, VALR_DOT, 2.5, 0.4)
        for st, row in zip(rep.stages, rep.rows, strict=True):
            ax.plot(_minutes(rep, [st.start_s, st.end_s]), [row["valr_mean_bw_per_s"]] * 2,
                    color=VALR_MEAN, linewidth=2.0, zorder=4)
        if math.isfinite(base):
            ax.axhline(base, color=BASELINE_LINE, linewidth=1.0, linestyle=(0, (4, 3)), zorder=4)
        for st, lim in limits:
            ax.plot(_minutes(rep, [st.start_s, st.end_s]), [lim, lim], color=LIMIT_LINE,
                    linewidth=1.8, linestyle=(0, (3.3, 1.7)), zorder=5)
    return fig


def stage_colours(rep: SessionReport) -> dict[str, str]:
    """One colour per stage with steps, in stage order, the same in every per-stage chart."""
    names = [st.name for st in rep.stages if len(steps_in_stage(rep.steps, st))]
    return {name: STAGE_COLOURS[i % len(STAGE_COLOURS)] for i, name in enumerate(names)}


def distribution_figure(rep: SessionReport, field_name: str, label: str, unit: str,
                        width_px: int = 440, height_px: int = 240) -> Figure | None:
    """Per-stage box plots of one step field; None when no stage has 3 values.

    Box: quartiles, line: median, dot: mean, whiskers: 5th-95th percentile. ``field_name`` 'cadence'
    is per-step cadence, anything else a step-table field (cross-over steps left out).
    """
    groups = []
    for st in rep.stages:
        mine = steps_in_stage(rep.steps, st)
        vals = step_cadence_spm(mine) if field_name == "cadence" else (
            mine[~(mine["crossover"] >= 1)][field_name])
        vals = vals[np.isfinite(vals)]
        if len(vals) >= 3:
            groups.append((st.name, vals))
    if not groups:
        return None
    colours = stage_colours(rep)
    rotate = len(groups) > 4
    with _style():
        fig, ax = _figure(width_px, height_px, (28, 12, 62 if rotate else 46, 58))
        ax.set_ylim(*_robust_range([g[1] for g in groups]))
        # Drawn from patches and lines rather than Axes.bxp: bxp reads every rcParam, which makes
        # matplotlib resolve its GUI backend (pyplot, and Qt on a desktop) in a headless report.
        for i, (name, vals) in enumerate(groups):
            q05, q25, q50, q75, q95 = np.percentile(vals, [5, 25, 50, 75, 95])
            colour = colours[name]
            ax.vlines([i, i], [q05, q75], [q25, q95], colors="#555555", linewidth=1.0, zorder=2)
            ax.hlines([q05, q95], i - 0.12, i + 0.12, colors="#555555", linewidth=1.0, zorder=2)
            ax.add_patch(Rectangle((i - 0.3, q25), 0.6, q75 - q25, facecolor=to_rgba(colour, 0.35),
                                   edgecolor=to_rgba(colour, 0.9), linewidth=1.0, zorder=3))
            ax.hlines(q50, i - 0.3, i + 0.3, colors="#111111", linewidth=2.0, zorder=4)
            ax.plot([i], [float(np.mean(vals))], marker="o", markersize=5, markeredgewidth=0,
                    color="#111111", zorder=5)
        ax.set_xticks(range(len(groups)), [name[:16] for name, _ in groups])
        ax.set_xlim(-0.5, len(groups) - 0.5)
        if rotate:
            ax.tick_params(axis="x", labelrotation=30)
            for t in ax.get_xticklabels():
                t.set_horizontalalignment("right")
        ax.tick_params(axis="x", length=0)
        ax.set_title(f"{label} per stage")
        ax.set_ylabel(f"{label} ({unit})")
    return fig


def force_curve_figure(rep: SessionReport, width_px: int = 440, height_px: int = 260) -> Figure | None:
    """Mean vertical force over stance (0-100 %) per stage, mean ± SD shaded; None without curves."""
    if not rep.curves:
        return None
    unit = rep.curves[0].unit
    colours = stage_colours(rep)
    y = _robust_range([c.mean + c.sd for c in rep.curves] + [c.mean - c.sd for c in rep.curves],
                      [0.0], pad=0.04)
    with _style():
        fig, ax = _figure(width_px, height_px)
        ax.set_xlim(0.0, 100.0)
        ax.set_ylim(min(0.0, y[0]), y[1])
        for i, c in enumerate(rep.curves):
            colour = colours.get(c.stage, STAGE_COLOURS[i % len(STAGE_COLOURS)])
            ax.fill_between(c.percent, c.mean - c.sd, c.mean + c.sd, color=colour, alpha=0.10,
                            linewidth=0)
            ax.plot(c.percent, c.mean, color=colour, linewidth=2.0, label=f"{c.stage} (n={c.n_steps})")
        ax.legend(loc="upper right")
        ax.set_title("Mean vertical force over stance")
        ax.set_xlabel("stance (%)")
        ax.set_ylabel(f"vertical force ({unit})")
    return fig


def programme_figure(rows: Sequence[Mapping[str, Any]], keys: Sequence[tuple[str, str, str]],
                     title: str, y_label: str, extra: Sequence[float] = ()) -> Figure:
    """One value per session for each (row key, label, colour) of ``keys``, sessions along x."""
    xs = np.arange(1, len(rows) + 1, dtype=float)
    series = [np.array([r[k] for r in rows], dtype=float) for k, _, _ in keys]
    with _style():
        fig, ax = _figure(440, 250)
        ax.set_xlim(0.5, len(rows) + 0.5)
        ax.set_ylim(*_robust_range(series, extra))
        for (_, label, colour), ys in zip(keys, series, strict=True):
            ax.plot(xs, ys, color=colour, linewidth=1.8, marker="o", markersize=7, markeredgewidth=0,
                    label=label)
        ax.set_xticks(xs, [session_tick(r, i) for i, r in enumerate(rows)])
        ax.legend(loc="best")
        ax.set_title(title)
        ax.set_xlabel("session")
        ax.set_ylabel(y_label)
    return fig


def plot_cadence(rep: SessionReport) -> str:
    """:func:`cadence_figure` as inline SVG."""
    return figure_svg(cadence_figure(rep))


def plot_valr(rep: SessionReport) -> str:
    """:func:`valr_figure` as inline SVG."""
    return figure_svg(valr_figure(rep))


def plot_distributions(rep: SessionReport, field_name: str, label: str, unit: str) -> str:
    """:func:`distribution_figure` as inline SVG ("" when there is nothing to show)."""
    fig = distribution_figure(rep, field_name, label, unit)
    return figure_svg(fig) if fig is not None else ""


def plot_force_curves(rep: SessionReport) -> str:
    """:func:`force_curve_figure` as inline SVG ("" when there are no curves)."""
    fig = force_curve_figure(rep)
    return figure_svg(fig) if fig is not None else ""


def programme_plot(rows: Sequence[Mapping[str, Any]], keys: Sequence[tuple[str, str, str]],
                   title: str, y_label: str, extra: Sequence[float] = ()) -> str:
    """:func:`programme_figure` as inline SVG."""
    return figure_svg(programme_figure(rows, keys, title, y_label, extra))
