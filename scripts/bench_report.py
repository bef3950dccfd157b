"""Benchmark the session report: time to read a session file, to draw its charts and to build its page.

Reads one session file (``labsuite report``'s work without the write), repeats each part, and prints
the median CPU times of: loading (file, stage table, force curves), each chart, the whole page; then the
page size and how much of it the charts take (inline SVG bytes), and the chart share of the page's
render time. With ``--programme DIR`` it does the same for a programme page built from the folder.

Run:  python scripts/bench_report.py SESSION.h5 [--repeat 5] [--programme DIR]
Record a realistic session first, e.g. ``labsuite run protocols/demo.yaml --participant T1 --simulate
--headless --out /tmp/s``. Only the public report API is used, so the same script measures any version.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def median_s(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median CPU time of this process over ``repeat`` calls (s) and the last result.

    CPU rather than wall time: the machine is shared, and others' load stretches wall time only.
    """
    times, out = [], None
    for _ in range(repeat):
        t = time.process_time()
        out = fn()
        times.append(time.process_time() - t)
    return statistics.median(times), out


def svg_bytes(page: str) -> tuple[int, int]:
    """Number of inline ``<svg>`` charts in a page and their bytes (UTF-8)."""
    charts = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    return len(charts), sum(len(s.encode()) for s in charts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("session", type=Path, help="a session file")
    ap.add_argument("--repeat", type=int, default=5, help="repetitions per part (median reported)")
    ap.add_argument("--programme", type=Path, help="a folder of one participant's session files")
    args = ap.parse_args()

    t = time.process_time()
    from labsuite import report
    import_s = time.process_time() - t
    print(f"labsuite.report from {Path(report.__file__).parent} (import {import_s * 1000:.0f} ms)")

    load_s, rep = median_s(lambda: report.load_session_report(args.session), args.repeat)
    print(f"session {args.session.name}: {len(rep.steps)} steps, {len(rep.stages)} stages, "
          f"{(rep.t_end_s - rep.t0_s) / 60:.1f} min")
    print(f"  load (file, table, force curves)  {load_s * 1000:8.1f} ms")
    charts: dict[str, Callable[[], str]] = {
        "cadence over the session": lambda: report.plot_cadence(rep),
        "VALR over the session": lambda: report.plot_valr(rep),
        "box plots x4": lambda: "".join(report.plot_distributions(rep, f, lab, u) for f, lab, u in (
            ("cadence", "Cadence", "steps/min"), ("valr_bw_per_s", "VALR", "BW/s"),
            ("tibial_peak_g", "Tibial peak", "g"), ("contact_s", "Contact time", "s"))),
        "force curves": lambda: report.plot_force_curves(rep),
    }
    chart_total_s = 0.0
    for name, fn in charts.items():
        s, svg = median_s(fn, args.repeat)
        chart_total_s += s
        print(f"  chart {name:<28}{s * 1000:8.1f} ms  {len(svg.encode()) / 1024:8.1f} KiB")
    page_s, page = median_s(lambda: report.render_session_html(rep), args.repeat)
    n_svg, n_bytes = svg_bytes(page)
    size = len(page.encode())
    print(f"  page render (all charts + HTML)   {page_s * 1000:8.1f} ms")
    print(f"  page size {size / 1024:.1f} KiB, {n_svg} charts {n_bytes / 1024:.1f} KiB "
          f"({100 * n_bytes / size:.0f} % of the page)")
    print(f"  charts / page render time: {chart_total_s / page_s:.2f}")

    if args.programme:
        prog_load_s, reports = median_s(lambda: report.load_programme([args.programme]), 1)
        prog_s, prog = median_s(lambda: report.render_programme_html(reports), args.repeat)
        n_svg, n_bytes = svg_bytes(prog)
        print(f"programme {args.programme}: {len(reports)} sessions, load {prog_load_s * 1000:.0f} ms, "
              f"render {prog_s * 1000:.1f} ms, page {len(prog.encode()) / 1024:.1f} KiB "
              f"({n_svg} charts {n_bytes / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
