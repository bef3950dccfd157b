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
           "cop_strike_x_m", "cop_strike_y_m", "tibial_peak_g", "strike_index_pct", "strike_pattern",
           "invalid")
MAX_BAD_RUN_LINES = 20  # warnings printed one per line; the rest are counted


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
    parser.add_argument("--strike-threshold-n", type=float, default=50.0, metavar="N",
                        help="foot strike = where the vertical force rises through this (50 N; "
                        "see docs/processing.md)")
    parser.add_argument("--toe-off-threshold-n", type=float, default=25.0, metavar="N",
                        help="toe-off = where the vertical force falls through this (25 N)")
    parser.add_argument("--onset-power", type=float, default=0.0, metavar="P",
                        help="opt in to fitting the force onset F = A (t - t0)^P instead of the "
                        "threshold crossings (1-3; 0 = off, the default)")
    parser.add_argument("--belt-speed-m-s", type=float, metavar="M_S",
                        help="treadmill belt speed (0 for a fixed plate): needed for the COP under "
                        "the foot (cop_path_m, strike index)")
    parser.add_argument("--foot-length-mm", type=float, metavar="MM",
                        help="the participant's foot (shoe) length: gives strike_index_pct and "
                        "strike_pattern (with --belt-speed-m-s)")


def run(args: argparse.Namespace) -> int:
    """Analyse the file and write the step table."""
    import numpy as np

    from labsuite.constants import GRAVITY_M_S2
    from labsuite.errors import ConfigError, DataFileError
    from labsuite.realtime.files import load_c3d, load_text, parse_map
    from labsuite.realtime.processor import BadRun, ProcessorSettings, process_arrays
    from labsuite.steps import FOOT_NAMES, METHOD_NAMES, PATTERN_NAMES, STEP_FIELD_NAMES

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
    foot_m = None
    if args.foot_length_mm is not None:
        if not (math.isfinite(args.foot_length_mm) and 100 <= args.foot_length_mm <= 400):
            raise ConfigError(f"--foot-length-mm: expected 100-400 mm, got {args.foot_length_mm}")
        foot_m = args.foot_length_mm / 1000.0
    if args.belt_speed_m_s is not None and not (math.isfinite(args.belt_speed_m_s)
                                                and 0 <= args.belt_speed_m_s <= 30):
        raise ConfigError(f"--belt-speed-m-s: expected 0-30 m/s, got {args.belt_speed_m_s}")
    for name in ("strike_threshold_n", "toe_off_threshold_n"):
        v = getattr(args, name)
        if not (math.isfinite(v) and 0 < v <= 1000):
            raise ConfigError(f"--{name.replace('_', '-')}: expected 0-1000 N, got {v}")
    # detection hysteresis (50 N on, 25 N off) follows thresholds set outside it
    settings = ProcessorSettings(
        rate_hz=data.rate_hz, plates=data.plates, layout=data.layout, mode=args.mode,
        lowpass_hz=args.lowpass_hz, body_weight_n=weight_n,
        strike_threshold_n=args.strike_threshold_n, toe_off_threshold_n=args.toe_off_threshold_n,
        contact_on_n=max(50.0, args.strike_threshold_n, args.toe_off_threshold_n),
        contact_off_n=min(25.0, args.toe_off_threshold_n), onset_power=args.onset_power,
        belt_speed_m_s=args.belt_speed_m_s, foot_length_m=foot_m)
    bad_runs: list[BadRun] = []
    steps = process_arrays(settings, data.streams, lab_frame=data.lab_frame,
                           zero_lag=args.zero_lag, bad_runs=bad_runs)
    if not data.has_fx:
        steps["braking_impulse_bw_s"] = np.nan
        steps["propulsive_impulse_bw_s"] = np.nan
    _warn_bad_runs(path, bad_runs, steps)
    _summarise(path, steps, args)
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
            elif name == "strike_pattern":
                row[name] = PATTERN_NAMES[int(v)] if math.isfinite(v) else None
            elif name in ("crossover", "invalid"):
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


def _warn_bad_runs(path: Path, runs: list, steps) -> None:
    """One warning line per run of impossible samples (index and time), then how many steps."""
    for run in runs[:MAX_BAD_RUN_LINES]:
        print(f"labsuite analyze: warning: {path}: {run.describe()}; flagged, not analysed",
              file=sys.stderr)
    if len(runs) > MAX_BAD_RUN_LINES:
        print(f"labsuite analyze: warning: {path}: {len(runs) - MAX_BAD_RUN_LINES} more runs of "
              "bad samples", file=sys.stderr)
    n_invalid = int((steps["invalid"] == 1).sum())
    if runs or n_invalid:
        print(f"labsuite analyze: warning: {path}: {n_invalid} step(s) overlap bad samples: marked "
              "invalid (column invalid), metrics empty, left out of cadence and symmetry",
              file=sys.stderr)


def _summarise(path: Path, steps, args: argparse.Namespace) -> None:
    """Per-file counts on stderr: loading-rate method and strike pattern of the valid steps."""
    from labsuite.steps import METHOD_NAMES, PATTERN_NAMES

    if not len(steps):
        return
    method = steps["loading_rate_method"]
    counts = ", ".join(f"{name} {int((method == i).sum())}" for i, name in enumerate(METHOD_NAMES))
    print(f"labsuite analyze: {path}: {len(steps)} steps; loading rate from {counts}",
          file=sys.stderr)
    pattern = steps["strike_pattern"]
    if (pattern == pattern).any():  # any not NaN
        counts = ", ".join(f"{name} {int((pattern == i).sum())}"
                           for i, name in enumerate(PATTERN_NAMES))
        print(f"labsuite analyze: {path}: strike pattern {counts}", file=sys.stderr)
    elif args.foot_length_mm is None or args.belt_speed_m_s is None:
        print("labsuite analyze: strike index needs --foot-length-mm and --belt-speed-m-s "
              "(cop_path_m needs the belt speed)", file=sys.stderr)
