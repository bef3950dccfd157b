"""``labsuite replay``: publish a recorded session (HDF5) or a C3D file as live LSL streams.

Wraps labsuite.archive.replay: original metadata and relative timing, source_ids under a prefix;
the lab side (processor, protocol, GUI, recorder) then runs on recorded or real data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "replay"
HELP = "Publish a session file (.h5) or a C3D file as live LSL streams with the original timing."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``labsuite replay``."""
    parser.add_argument("file", type=Path, metavar="FILE", help="session file (.h5) or C3D file (.c3d)")
    parser.add_argument("--speed", type=float, default=1.0, help="1 = real time (default), 2 = twice as fast")
    parser.add_argument("--source-prefix", default="replay-",
                        help="put before every source_id so a replay never poses as a live device "
                        "(default 'replay-'; '' keeps the recorded ids)")
    parser.add_argument("--streams", nargs="+", default=(), metavar="SOURCE_ID",
                        help="session files: replay only these recorded source_ids")
    parser.add_argument("--with-steps", action="store_true",
                        help="session files: also replay the recorded steps stream")
    parser.add_argument("--lead-s", type=float, default=1.0,
                        help="seconds between the streams appearing and the first sample (default 1)")
    parser.add_argument("--loop", action="store_true", help="start again at the end, until Ctrl-C")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    """Replay until the end of the file (or Ctrl-C / SIGTERM with --loop)."""
    import signal

    from labsuite.archive.replay import DEFAULT_EXCLUDED_KINDS, Replayer, ReplaySettings, load_streams
    from labsuite.streams.contracts import KIND_STEPS

    excluded = tuple(k for k in DEFAULT_EXCLUDED_KINDS if not (args.with_steps and k == KIND_STEPS))
    settings = ReplaySettings(speed=args.speed, source_prefix=args.source_prefix, exclude_kinds=excluded,
                              only_source_ids=tuple(args.streams), lead_s=args.lead_s, loop=args.loop)
    streams = load_streams(args.file, settings)
    replayer = Replayer(streams, settings)

    def _term(signum: int, frame: object) -> None:
        replayer.stop()

    signal.signal(signal.SIGTERM, _term)
    replayer.open()
    for st in streams:
        print(f"publishing {st.spec.name} as {st.spec.source_id}: {st.n_samples} samples, "
              f"{st.spec.rate_hz:g} Hz", flush=True)

    def report(elapsed: float, total: float, pushed: list[int]) -> None:
        print(f"[{elapsed:7.1f} / {total:.1f} s] " + "  ".join(
            f"{st.spec.name}={n}" for st, n in zip(streams, pushed, strict=True)), flush=True)

    try:
        replayer.run(progress=None if args.quiet else report)
    except KeyboardInterrupt:
        replayer.stop()
    finally:
        replayer.close()
    print(f"replay finished: {sum(replayer.pushed)} samples", flush=True)
    return 0
