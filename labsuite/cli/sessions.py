"""``labsuite sessions DIR``: the lab's participants and sessions, one row per session file.

Reads the files through :mod:`labsuite.archive.catalogue`, which keeps an index in
``DIR/.labsuite-sessions.json`` so that a folder of hundreds of files lists in a fraction of a second
once read. Heavy imports stay inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys

COMMAND = "sessions"
HELP = ("list the participants and sessions in a folder of session files (date, protocol, "
        "programme session, status, duration, key numbers)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("folder", metavar="DIR", help="folder of session files (searched 3 levels deep)")
    parser.add_argument("--participant", metavar="ID", default=None, help="only this participant")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="table (default), csv or json on standard output")
    parser.add_argument("--no-index", action="store_true",
                        help="read every file again instead of trusting the index of unchanged files")


def run(args: argparse.Namespace) -> int:
    """List the sessions; progress on stderr while files are read for the first time."""
    import json
    import math

    from labsuite.archive import catalogue as cat
    from labsuite.report.tables import table_csv

    def progress(done: int, total: int) -> None:
        if total >= 20 and (done == total or done % 20 == 0) and sys.stderr.isatty():
            print(f"\rreading session files: {done}/{total}", end="\n" if done == total else "",
                  file=sys.stderr, flush=True)

    rows, stats = cat.catalogue(args.folder, participant=args.participant,
                                use_index=not args.no_index, on_progress=progress)
    if args.format == "json":
        clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                  for k, v in r.items()} for r in rows]
        json.dump({"folder": str(args.folder), "sessions": clean}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif args.format == "csv":
        sys.stdout.write(table_csv(rows, cat.COLUMN_NAMES))
    else:
        print(cat.format_table(rows))
        print(f"({stats.files} files: {stats.read} read, {stats.cached} from the index "
              f"{args.folder}/{cat.INDEX_NAME})", file=sys.stderr)
    return 0
