"""``labsuite inspect``: what a session file holds: streams, durations, rates, gaps, steps per stage.

Prints labsuite.archive.inspect's summary; works on files cut short, on files being recorded and
on damaged files (what is damaged, what can still be read; exit code 3).
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "inspect"
HELP = "Summarise a session file: streams, durations, measured rates, gaps, steps per stage."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``labsuite inspect``."""
    parser.add_argument("session", type=Path, metavar="SESSION.h5")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


EXIT_DAMAGED = 3


def run(args: argparse.Namespace) -> int:
    """Print the summary; exit 0 (complete, live or cut short: reported, not an error), 3 damaged."""
    import json

    from labsuite.archive.inspect import format_summary, summarize
    from labsuite.archive.reader import open_session

    with open_session(args.session, allow_damaged=True) as session:
        summary = summarize(session)
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return EXIT_DAMAGED if summary["status"] == "damaged" else 0
