"""``labsuite record``: record every visible LSL stream (or those named) into one session file.

The recorder role on the command line: shows samples, rates and gaps once a second and stops on
Ctrl-C, SIGTERM or after ``--duration``; the file is marked complete on a clean stop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "record"
HELP = "Record LSL streams (all visible, or --streams) into a crash-safe HDF5 session file."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``labsuite record``."""
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the session file (default .)")
    parser.add_argument("--file", type=Path, default=None, help="exact file path instead of --out naming")
    parser.add_argument("--participant", required=True,
                        help="pseudonymous participant id ([A-Za-z0-9_-], at most 32)")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop after S seconds (default: until Ctrl-C)")
    parser.add_argument("--streams", nargs="+", default=(), metavar="SOURCE_ID",
                        help="record only these source_ids (default: every visible stream)")
    parser.add_argument("--exclude", nargs="+", default=(), metavar="SOURCE_ID",
                        help="source_ids not to record")
    parser.add_argument("--wait-s", type=float, default=2.0,
                        help="seconds to look for streams before starting (default 2)")
    parser.add_argument("--mass-kg", type=float, default=None, help="participant body mass, kg")
    parser.add_argument("--protocol", type=Path, default=None, help="protocol file to store with the session")
    parser.add_argument("--session-number", type=int, default=None)
    parser.add_argument("--flush-s", type=float, default=0.5, help="flush interval, s (≤ 1; default 0.5)")
    parser.add_argument("--compression", choices=("gzip", "lzf", "none"), default="gzip")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    """Record until the duration, Ctrl-C or SIGTERM; exit code 1 when writing failed."""
    import signal
    import sys

    from labsuite.archive.recorder import Recorder, RecorderSettings
    from labsuite.archive.writer import WriterSettings
    from labsuite.errors import ConfigError

    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration: expected a positive number of seconds, got {args.duration}")
    settings = RecorderSettings(
        participant_id=args.participant, out_dir=args.out, path=args.file,
        source_ids=tuple(args.streams), exclude_source_ids=tuple(args.exclude), wait_s=args.wait_s,
        mass_kg=args.mass_kg, protocol_path=args.protocol, session_number=args.session_number,
        expected_duration_s=args.duration or 3600.0,
        writer=WriterSettings(flush_interval_s=args.flush_s,
                              compression=None if args.compression == "none" else args.compression))

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops as cleanly as Ctrl-C: the file is closed complete

    signal.signal(signal.SIGTERM, _term)
    recorder = Recorder(settings, on_message=lambda text: print(f"labsuite record: {text}",
                                                                file=sys.stderr, flush=True))
    report = None if args.quiet else (lambda line: print(line, flush=True))
    try:
        path = recorder.run(args.duration, report=report)
    except KeyboardInterrupt:
        # run() already stopped the recorder in its finally block.
        print(f"stopped; session file {recorder.path} closed", flush=True)
        return 0
    print(f"session file {path} closed", flush=True)
    return 0
