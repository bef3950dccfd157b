"""``labsuite recover DAMAGED.h5 --out FIXED.h5``: copy what a damaged session file still holds.

Wraps labsuite.archive.recover: every stream up to its last consistent row, steps, markers,
stages, calibration and events go into a new closed file; the report says what was kept and lost.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "recover"
HELP = "Copy every readable row of a damaged session file into a new session file (--out FIXED.h5)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``labsuite recover``."""
    parser.add_argument("session", type=Path, metavar="DAMAGED.h5")
    parser.add_argument("--out", type=Path, required=True, metavar="FIXED.h5",
                        help="the new session file to write (never overwritten)")


def run(args: argparse.Namespace) -> int:
    """Recover; exit 0 when the new file was written (what was lost is listed)."""
    from labsuite.archive.recover import format_report, recover

    print(format_report(recover(args.session, args.out)))
    return 0
