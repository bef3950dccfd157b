"""``labsuite export``: a session file to C3D (force plates, foot events) and/or a CSV folder.

Wraps labsuite.archive.export and labsuite.archive.xdf; C3D files open in any C3D tool (ezc3d,
Visual3D, Mokka, ...), XDF files in pyxdf, MNE and EEGLAB.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "export"
HELP = "Export a session file to C3D (--c3d OUT.c3d), CSV files (--csv DIR) and/or XDF (--xdf OUT.xdf)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``labsuite export``."""
    parser.add_argument("session", type=Path, metavar="SESSION.h5")
    parser.add_argument("--c3d", type=Path, default=None, metavar="OUT.c3d",
                        help="write force plates and foot strike/off events to this C3D file")
    parser.add_argument("--csv", type=Path, default=None, metavar="DIR",
                        help="write one CSV per stream plus steps, markers, stages and session.json")
    parser.add_argument("--xdf", type=Path, default=None, metavar="OUT.xdf",
                        help="write every stream (header XML, samples, raw timestamps, clock offsets) "
                        "to this XDF file, LabRecorder's format")
    parser.add_argument("--start-s", type=float, default=None,
                        help="C3D: start at this corrected LSL time, s (default: first common sample)")
    parser.add_argument("--end-s", type=float, default=None, help="C3D: end at this corrected LSL time, s")


def run(args: argparse.Namespace) -> int:
    """Export; exit code 0 when everything asked for was written."""
    from labsuite.archive.export import export_c3d, export_csv
    from labsuite.archive.reader import open_session
    from labsuite.errors import ConfigError

    if args.c3d is None and args.csv is None and args.xdf is None:
        raise ConfigError("say what to write: --c3d OUT.c3d, --csv DIR and/or --xdf OUT.xdf")
    with open_session(args.session) as session:
        if not session.complete:
            print(f"note: {args.session} was not closed cleanly (recording cut short or still running); "
                  "exporting what it holds")
        if args.c3d is not None:
            rep = export_c3d(session, args.c3d, start_s=args.start_s, end_s=args.end_s)
            print(f"{rep.path}: {rep.n_samples} samples at {rep.rate_hz:g} Hz, {rep.n_events} events")
            for note in rep.notes:
                print(f"  note: {note}")
        if args.csv is not None:
            files = export_csv(session, args.csv)
            print(f"{args.csv}: {len(files)} files")
        if args.xdf is not None:
            from labsuite.archive.xdf import export_xdf

            xrep = export_xdf(session, args.xdf)
            print(f"{xrep.path}: {xrep.streams} streams, {xrep.samples} samples, "
                  f"{xrep.clock_offsets} clock offsets")
            for note in xrep.notes:
                print(f"  note: {note}")
    return 0
