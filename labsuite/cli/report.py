"""``labsuite report``: a session's report as one HTML page (or its per-stage table as CSV), or a programme's.

Reads session files only (labsuite.report does the work); never writes next to or over a session
file unless told where. Heavy imports stay inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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
    parser.add_argument("--no-video", action="store_true",
                        help="leave out the contact sheet of strike frames (sessions with video)")
    parser.add_argument("--no-clips", action="store_true",
                        help="contact sheet without clips (by default each picture links to a 1 s clip "
                             "in the folder REPORT_clips beside the page)")


def _default_out(args: argparse.Namespace) -> Path:
    if args.programme:
        first = Path(args.programme[0])
        folder = first if first.is_dir() else first.parent
        return folder / "programme_report.html"
    src = Path(args.session)
    return src.with_name(src.stem + ".report.html")


def _contact_sheet(args: argparse.Namespace, rep: Any, target: Path) -> Any:
    """The session's contact sheet (None without video); clips in TARGET_clips/ unless --no-clips."""
    from labsuite.errors import ConfigError
    from labsuite.report.sheets import contact_sheet

    clip_dir = None if args.no_clips else target.with_name(target.stem.replace(".", "_") + "_clips")
    if clip_dir is not None:
        try:
            clip_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot make the folder for the report's clips {clip_dir}: {exc}") from None
    try:
        return contact_sheet(args.session, rep.stages, clip_dir=clip_dir, link_base=target.parent)
    finally:
        if clip_dir is not None and clip_dir.is_dir() and not any(clip_dir.iterdir()):
            clip_dir.rmdir()  # no video, or no clip written


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
        if args.csv:
            text = report.table_csv(rep.rows, report.SESSION_CSV_COLUMN_NAMES)
        else:
            sheet = None if args.no_video else _contact_sheet(args, rep, out or _default_out(args))
            text = report.render_session_html(rep, sheet)
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
