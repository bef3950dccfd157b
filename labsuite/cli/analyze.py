"""``labsuite analyze``: per-step metrics from a recorded file (C3D or delimited text).

Runs the same step processor as the live lab (labsuite.realtime) over the whole file and writes
one row per foot contact, CSV to stdout by default. Times are seconds from the start of the file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

COMMAND = "analyze"
HELP = "per-step force, contact and loading-rate metrics from a C3D or delimited text file"

DEFAULT_LOWPASS_HZ = 50.0
EXIT_NO_STEPS = 4  # the file was read but no foot contact was found (docs/processing.md)

# The documented columns first (issue 3), then the rest of the step record.
COLUMNS = ("foot", "strike_s", "toe_off_s", "contact_s", "step_s", "cadence_spm", "peak_vgrf_bw",
           "impact_peak_bw", "valr_bw_per_s", "vilr_bw_per_s", "loading_rate_method",
           "cop_strike_x_m", "cop_strike_y_m", "tibial_peak_g")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``labsuite analyze``."""
    parser.add_argument("file", metavar="FILE", help="C3D file (.c3d) or delimited text with a header row")
    parser.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (csv)")
    parser.add_argument("--out", metavar="PATH", help="write here instead of stdout")
    parser.add_argument("--mass-kg", type=float, metavar="KG",
                        help="body mass; default: body weight = mean vertical force over the file "
                        "(true for steady treadmill gait)")
    parser.add_argument("--rate-hz", type=float, metavar="HZ", help="text files: sampling rate")
    parser.add_argument("--map", metavar="fz=COL,fx=COL,fy=COL,copx=COL,copy=COL",
                        help="text files: file columns for our axes (z vertical up, x anterior-"
                        "posterior, y medio-lateral); fz required, COP needed to tell the feet apart")
    parser.add_argument("--length-unit", choices=("m", "mm", "cm"), default="m",
                        help="text files: unit of the COP columns (m)")
    parser.add_argument("--lowpass-hz", type=float, default=DEFAULT_LOWPASS_HZ, metavar="HZ",
                        help=f"Butterworth low-pass of the force channels, 0 = none "
                        f"(default {DEFAULT_LOWPASS_HZ:g}; higher cut-offs keep more of the impact "
                        "transient and raise VILR, see docs/processing.md)")
    parser.add_argument("--zero-lag", action="store_true",
                        help="run the low-pass forwards and backwards (offline only) instead of "
                        "the causal filter the live lab uses")
    parser.add_argument("--mode", choices=("run", "walk"), default="run",
                        help="gait: walking on a single plate uses the COP butterfly (run)")


def run(args: argparse.Namespace) -> int:
    """Analyse the file and write the step table."""
    import numpy as np

    from labsuite.errors import ConfigError, DataFileError
    from labsuite.realtime.files import load_c3d, load_text, parse_map
    from labsuite.realtime.processor import GRAVITY_M_S2, ProcessorSettings, process_arrays
    from labsuite.steps import FOOT_NAMES, METHOD_NAMES, STEP_FIELD_NAMES

    path = Path(args.file)
    if path.suffix.lower() == ".c3d":
        if args.map or args.rate_hz:
            raise ConfigError("--map and --rate-hz are for text files; a C3D file describes itself")
        data = load_c3d(path)
    else:
        if not args.map or not args.rate_hz:
            raise ConfigError(f"{path}: a text file needs --rate-hz and --map "
                              "(e.g. --map fz=Fz,fx=Fx,fy=Fy,copx=COPx,copy=COPy)")
        mapping = parse_map(args.map)
        if "copy" not in mapping and args.mode == "run":
            raise ConfigError("--map: on a single plate the feet are told apart by the "
                              "medio-lateral COP; map it (copy=COLUMN)")
        data = load_text(path, rate_hz=args.rate_hz, mapping=mapping, length_unit=args.length_unit)
    if args.mass_kg is not None:
        if not (math.isfinite(args.mass_kg) and 20 <= args.mass_kg <= 300):
            raise ConfigError(f"--mass-kg: expected 20-300 kg, got {args.mass_kg}")
        weight_n = args.mass_kg * GRAVITY_M_S2
    else:
        weight_n = data.mean_vertical_force_n()
        if not weight_n > 100:
            raise DataFileError(f"{path}: mean vertical force {weight_n:.0f} N is no body weight; "
                                "give --mass-kg")
        print(f"labsuite analyze: body weight {weight_n:.0f} N from the mean vertical force "
              "(use --mass-kg to set it)", file=sys.stderr)
    settings = ProcessorSettings(rate_hz=data.rate_hz, plates=data.plates, layout=data.layout,
                                 mode=args.mode, lowpass_hz=args.lowpass_hz, body_weight_n=weight_n)
    steps = process_arrays(settings, data.streams, lab_frame=data.lab_frame,
                           zero_lag=args.zero_lag)
    if not data.has_fx:
        steps["braking_impulse_bw_s"] = np.nan
        steps["propulsive_impulse_bw_s"] = np.nan
    columns = list(COLUMNS) + [n for n in STEP_FIELD_NAMES if n not in COLUMNS]
    rows = []
    for rec in steps:
        row: dict[str, object] = {}
        for name in columns:
            v = float(rec[name])
            if name == "foot":
                row[name] = FOOT_NAMES[int(v)] if math.isfinite(v) else None
            elif name == "loading_rate_method":
                row[name] = METHOD_NAMES[int(v)] if math.isfinite(v) else None
            elif name == "crossover":
                row[name] = int(v)
            else:
                row[name] = v if math.isfinite(v) else None
        rows.append(row)
    buf = io.StringIO()
    if args.format == "json":
        json.dump({"file": str(path), "body_weight_n": weight_n, "rate_hz": data.rate_hz,
                   "lowpass_hz": args.lowpass_hz, "zero_lag": bool(args.zero_lag), "steps": rows},
                  buf, indent=1)
        buf.write("\n")
    else:
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row[c] is None else
                             (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c])
                             for c in columns])
    if args.out:
        try:
            Path(args.out).write_text(buf.getvalue(), encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--out {args.out}: cannot write ({exc})") from None
    else:
        sys.stdout.write(buf.getvalue())
    if not rows:
        print(f"labsuite analyze: no steps found in {path} ({data.rate_hz:g} Hz, "
              f"{max(len(t) for t, _ in data.streams.values()) / data.rate_hz:.1f} s): no contact "
              "met the contact thresholds; check the rate (--rate-hz), the column map and the "
              "units", file=sys.stderr)
        return EXIT_NO_STEPS
    return 0
