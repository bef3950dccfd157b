"""``labsuite streams``: list every visible LSL stream with its measured rate, channels and lag.

Resolves everything on the LSL network in scope, reads each stream for a few seconds with the
lab-side acquisition, and prints one row per stream.
"""

from __future__ import annotations

import argparse
import time

COMMAND = "streams"
HELP = "List visible LSL streams with measured rate, channel count, gaps and lag."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``labsuite streams``."""
    parser.add_argument("--measure-s", type=float, default=3.0,
                        help="seconds to read each stream to measure its rate (default 3)")
    parser.add_argument("--type", dest="lsl_type", default=None,
                        help="only streams of this LSL type (ForcePlate, IMU, Markers, ...)")
    parser.add_argument("--wait-s", type=float, default=2.0,
                        help="seconds to wait for streams to answer the resolve (default 2)")


def run(args: argparse.Namespace) -> int:
    """List the streams; exit code 1 when none is visible."""
    from labsuite.errors import ConfigError
    from labsuite.streams.acquisition import Acquisition, StreamQuery, StreamReader, discover

    if args.measure_s <= 0 or args.wait_s <= 0:
        raise ConfigError("--measure-s and --wait-s: expected positive seconds")
    specs = discover(args.wait_s, lsl_type=args.lsl_type)
    if not specs:
        print("no LSL streams visible" + (f" of type {args.lsl_type}" if args.lsl_type else "")
              + " (is a driver or `labsuite simulate` running? LSLAPICFG sets the discovery scope)")
        return 1
    readers = [StreamReader(StreamQuery(source_id=s.source_id)) for s in specs]
    with Acquisition(readers):
        time.sleep(args.measure_s)
        rows = [(r.spec or s, r.stats()) for r, s in zip(readers, specs, strict=True)]
    print(format_table(rows))
    return 0


def format_table(rows: list) -> str:
    """Format (spec, stats) rows as an aligned text table."""
    header = ("name", "type", "source_id", "ch", "nominal_hz", "measured_hz", "samples", "gaps",
              "lag_ms")
    lines = [header]
    for spec, st in rows:
        nominal = "irregular" if spec.rate_hz == 0 else f"{spec.rate_hz:g}"
        measured = "-" if st.measured_rate_hz != st.measured_rate_hz else f"{st.measured_rate_hz:.1f}"
        lag = "-" if st.lag_s != st.lag_s else f"{st.lag_s * 1000:.1f}"
        lines.append((spec.name, spec.lsl_type, spec.source_id, str(spec.channel_count), nominal,
                      measured, str(st.samples), str(st.gaps), lag))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in lines)
