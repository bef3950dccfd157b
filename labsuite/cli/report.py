"""``labsuite report``: a session's report as one HTML page (or its per-stage table as CSV), or a programme's.

Reads session files only (labsuite.report does the work); never writes next to or over a session
file unless told where. Heavy imports stay inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMAND = "report"
HELP = ("session report: one self-contained HTML page per session file (--csv: the per-stage table), "
        "or --programme for progress across a programme's sessions")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("session", nargs="?", metavar="SESSION.h5", help="a session file")
    parser.add_argument("--programme", nargs="+", metavar="DIR_OR_FILE",
                        help="the session files of one participant's programme, or folders of them")
    parser.add_argument("--out", metavar="FILE",
                        help="where to write (default: SESSION.report.html next to the session, "
                             "programme_report.html in the first folder; CSV goes to stdout)")
    parser.add_argument("--csv", action="store_true",
                        help="write the per-stage table (per-session table with --programme) as CSV")


def _default_out(args: argparse.Namespace) -> Path:
    if args.programme:
        first = Path(args.programme[0])
        folder = first if first.is_dir() else first.parent
        return folder / "programme_report.html"
    src = Path(args.session)
    return src.with_name(src.stem + ".report.html")


def run(args: argparse.Namespace) -> int:
    """Build the report and write it; print where it went (HTML) or the CSV itself."""
    from labsuite import report
    from labsuite.errors import ConfigError

    if bool(args.session) == bool(args.programme):
        raise ConfigError("give one session file (labsuite report SESSION.h5) or --programme "
                          "DIR_OR_FILES, not both and not neither")
    out = Path(args.out) if args.out else None
    inputs = [Path(p) for p in (args.programme or [args.session])]
    if out is not None:
        if out.suffix.lower() in (".h5", ".hdf5") or any(
                out.exists() and p.is_file() and out.resolve() == p.resolve() for p in inputs):
            raise ConfigError(f"--out {out}: refusing to write a report over a session file; "
                              "give a .html or .csv path")
        if not out.parent.is_dir():
            raise ConfigError(f"--out {out}: folder {out.parent} does not exist")
    if args.programme:
        reports = report.load_programme(args.programme)
        if args.csv:
            text = report.table_csv(report.programme_table(reports), report.PROGRAMME_COLUMN_NAMES)
        else:
            text = report.render_programme_html(reports)
    else:
        rep = report.load_session_report(args.session, curves=not args.csv)
        text = report.table_csv(rep.rows) if args.csv else report.render_session_html(rep)
    if args.csv and out is None:
        sys.stdout.write(text)
        return 0
    target = out or _default_out(args)
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {target}: {exc}") from None
    print(f"report written to {target}")
    return 0
