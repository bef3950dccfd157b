"""``labsuite record``: record every visible LSL stream (or those named) into one session file.

The recorder role on the command line: shows samples, rates and gaps once a second and stops on
Ctrl-C, SIGTERM or after ``--duration``; the file is marked complete on a clean stop.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

EXIT_NOTHING_RECORDED = 4  # the file was closed but holds no sample (docs/archive.md)

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
    parser.add_argument("--compression", choices=("gzip", "lzf", "none"), default="none",
                        help="HDF5 compression (default none: noisy sensor data hardly compresses and "
                        "compressed chunks rewritten at every flush make the file larger; see "
                        "docs/archive.md)")
    parser.add_argument("--processor", choices=("auto", "on", "off"), default="auto",
                        help="run the live step processor on the recorded force plates so the file "
                        "has steps (auto: when plates are visible, no steps stream is, and --mass-kg "
                        "is given)")
    parser.add_argument("--mode", choices=("run", "walk"), default="run", help="gait, for the processor")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    """Record until the duration, Ctrl-C or SIGTERM; exit code 1 when writing failed."""
    import signal
    import sys

    from labsuite.archive.recorder import Recorder, RecorderSettings, prepare_out_dir
    from labsuite.archive.writer import WriterSettings
    from labsuite.errors import ConfigError

    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration: expected a positive number of seconds, got {args.duration}")
    # Before any stream is looked for: a bad folder is said at once, not after the wait.
    if args.file is None:
        prepare_out_dir(args.out)
    else:
        prepare_out_dir(args.file.parent)
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

    def message(text: str) -> None:
        print(f"labsuite record: {text}", file=sys.stderr, flush=True)

    supervisor = None
    try:
        supervisor, steps_sid = _maybe_start_processor(args, message)
        if steps_sid and settings.source_ids:
            settings = dataclasses.replace(settings, source_ids=(*settings.source_ids, steps_sid))
        recorder = Recorder(settings, on_message=message)
        report = None if args.quiet else (lambda line: print(line, flush=True))
        try:
            path = recorder.run(args.duration, report=report)
        except KeyboardInterrupt:
            # run() already stopped the recorder in its finally block.
            print(f"stopped; session file {recorder.path} closed", flush=True)
            return _nothing_recorded(recorder, message)
    finally:
        if supervisor is not None:
            supervisor.stop(timeout_s=10.0)
    print(f"session file {path} closed", flush=True)
    return _nothing_recorded(recorder, message)


def _nothing_recorded(recorder: Any, message: Any) -> int:
    """Exit code 4 (and say so) when the closed file holds no sample of any stream."""
    from labsuite.errors import ArchiveError

    try:
        written = sum(recorder.writer.stats().samples_written.values())
    except ArchiveError:  # never started: run() raised already
        return 1
    if written:
        return 0
    message(f"nothing recorded: {recorder.path} holds no sample (no stream sent data); "
            "check that the drivers are running and the --streams ids")
    return EXIT_NOTHING_RECORDED


def _maybe_start_processor(args: argparse.Namespace, message: Any) -> tuple[Any, str | None]:
    """Start the live processor as its own process when asked (or useful); return it and its steps id."""
    import os
    import time

    from labsuite.archive.recorder import _discover
    from labsuite.errors import ConfigError
    from labsuite.streams.contracts import KIND_FORCE_PLATE, KIND_IMU, KIND_STEPS, KIND_TREADMILL

    if args.processor == "off":
        return None, None
    specs = _discover(args.wait_s, set(args.streams))
    plates = {s.setup.get("force_platform", {}).get("belt", ""): s.source_id
              for s in specs if s.kind == KIND_FORCE_PLATE}
    why_not = ""
    if not plates:
        why_not = "no force-plate stream is visible"
    elif args.processor == "auto" and any(s.kind == KIND_STEPS for s in specs):
        return None, None  # a processor already runs; its steps are recorded
    elif args.mass_kg is None:
        why_not = "the processor needs the body mass (--mass-kg)"
    elif "single" in plates:
        plates = {"single": plates["single"]}
    elif sorted(plates) != ["left", "right"]:
        why_not = f"force plates for belts {sorted(plates)}; expected left and right, or single"
    if why_not:
        if args.processor == "on":
            raise ConfigError(f"--processor on: {why_not}")
        message(f"steps are not computed: {why_not}")
        return None, None
    imus = {s.setup.get("sensor", {}).get("side", ""): s.source_id for s in specs if s.kind == KIND_IMU}
    imus = {side: sid for side, sid in imus.items() if side in ("left", "right")}
    treadmill = next((s.source_id for s in specs if s.kind == KIND_TREADMILL), None)
    steps_sid = f"labsuite-steps-record-{args.participant}-{os.getpid()}"
    from labsuite.lab.live import run_processor
    from labsuite.processes import Supervisor

    supervisor = Supervisor(on_event=lambda role, text: message(f"{role}: {text}"))
    supervisor.add("processor", run_processor, {
        "plates": plates, "imus": imus, "treadmill": treadmill, "steps_source_id": steps_sid,
        "layout": "single" if "single" in plates else "split", "mode": args.mode, "mass_kg": args.mass_kg})
    supervisor.start()
    # Record the steps stream from the start: wait until the processor publishes it.
    import pylsl

    resolver = pylsl.ContinuousResolver(pred=f"source_id='{steps_sid}'", forget_after=5.0)
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline and not resolver.results():
        time.sleep(0.2)
    del resolver
    message(f"live processor on {sorted(plates.values())} publishing {steps_sid}")
    return supervisor, steps_sid
