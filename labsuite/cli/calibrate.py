"""``labsuite calibrate``: show a calibration file, or check a plate with a known mass.

``verify`` opens the plate named in the lab file directly (no session), tares it unloaded, waits
for the mass, averages a still period and reports force and COP errors against the file's
tolerance; ``--record`` appends the result to the file's verification history.
"""

from __future__ import annotations

import argparse
from typing import Any

COMMAND = "calibrate"
HELP = "Force-plate calibration: show a calibration file, verify a plate with a known mass."

EXIT_FAILED_CHECK = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``show`` and ``verify`` actions."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="validate a calibration file and print it with its history")
    show.add_argument("file", help="calibration file (YAML)")
    show.add_argument("--max-age-days", type=int, default=None,
                      help="warn when older than this (default: no age check)")
    v = sub.add_parser("verify", help="known-load check of one plate of the lab")
    v.add_argument("--lab", required=True, metavar="LAB.yaml", help="lab file naming the plate")
    v.add_argument("--plate", required=True, metavar="ID", help="the plate's device name in the lab file")
    v.add_argument("--mass-kg", type=float, required=True, metavar="KG", help="the known mass (kg)")
    v.add_argument("--at", type=float, nargs=2, metavar=("X_M", "Y_M"),
                   help="where the mass stands, lab frame (m); omit to check the force only")
    v.add_argument("--measure-s", type=float, default=2.0, help="averaging period (s, default 2)")
    v.add_argument("--load-delay-s", type=float, default=None,
                   help="wait this long for the mass instead of asking for Enter")
    v.add_argument("--record", action="store_true",
                   help="append the result to the calibration file's verification history")
    v.add_argument("--note", default="", help="free text stored with --record")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; 0 on success, 3 when a known-load check fails its tolerance."""
    if args.action == "show":
        return _show(args)
    return _verify(args)


def _show(args: argparse.Namespace) -> int:
    from labsuite.calibration import load_calibration

    cal = load_calibration(args.file)
    print(f"{cal.calibration_id}: plate {cal.plate_serial} ({cal.manufacturer} {cal.model}), "
          f"dated {cal.date.isoformat()}, {cal.age_days()} days old")
    print(f"matrix 6x{cal.n_inputs} ({cal.input_units} -> N, N*m); tolerance "
          f"{cal.force_tolerance_n} N, {cal.cop_tolerance_m * 1000:.1f} mm")
    print("corners_m: " + "; ".join(" ".join(f"{v:g}" for v in c) for c in cal.corners_m)
          + " | origin_m: " + " ".join(f"{v:g}" for v in cal.origin_m))
    for rec in cal.verifications:
        cop = rec.get("cop_error_m")
        cop_text = "" if cop is None else f", COP error {cop * 1000:.1f} mm"
        print(f"  {rec['date']}: {rec['mass_kg']} kg, force error {rec['force_error_n']:.2f} N"
              f"{cop_text}: {'pass' if rec['passed'] else 'FAIL'}")
    warning = cal.age_warning(args.max_age_days) if args.max_age_days is not None else cal.future_warning()
    if warning:
        print(f"warning: {warning}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from labsuite.calibration import append_verification, verify_known_load
    from labsuite.constants import GRAVITY_M_S2
    from labsuite.errors import CalibrationError, ConfigError, DeviceError
    from labsuite.labconfig import load_lab_config

    config = load_lab_config(args.lab)
    if args.plate not in config.calibrations:
        plates = sorted(config.calibrations)
        raise ConfigError(f"{args.lab}: --plate {args.plate!r} is not a force plate of this lab; "
                          f"plates: {plates}")
    if not args.mass_kg > 0:
        raise ConfigError(f"--mass-kg: expected a mass > 0 kg, got {args.mass_kg}")
    for warning in config.calibration_warnings():
        print(f"warning: {warning}")
    cal = config.calibrations[args.plate]
    driver = config.build_driver(args.plate)
    calibrator = getattr(driver, "calibrator", None)
    if calibrator is None:
        raise ConfigError(f"{args.lab}: device {args.plate!r} has no calibration to verify")
    driver.open()
    try:
        print(f"taring {args.plate}: keep the plate empty ...", flush=True)
        deadline = time.monotonic() + calibrator.settings.duration_s + 15.0
        while calibrator.taring or calibrator.offsets is None:
            driver.read(0.05)
            if calibrator.tare_error:
                raise CalibrationError(calibrator.tare_error)
            if time.monotonic() > deadline:
                raise DeviceError(f"{args.plate}: no tare within {deadline:.0f} s: is the plate streaming?")
        where = "" if args.at is None else f" at x = {args.at[0]} m, y = {args.at[1]} m"
        if args.load_delay_s is None:
            input(f"tared. Place {args.mass_kg} kg{where}, let it settle, then press Enter ")
        else:
            print(f"tared. Place {args.mass_kg} kg{where}; measuring in {args.load_delay_s} s", flush=True)
            _drain(driver, args.load_delay_s)
        _drain(driver, 0.0)
        blocks = []
        end = time.monotonic() + args.measure_s
        while time.monotonic() < end:
            blocks += [c.data for c in driver.read(0.05) if len(c.data)]
        if not blocks:
            raise DeviceError(f"{args.plate}: no samples in {args.measure_s} s")
        channels = np.concatenate(blocks).astype(np.float64)
    finally:
        driver.close()
    point = None if args.at is None else (args.at[0], args.at[1])
    result = verify_known_load(channels, cal, args.mass_kg, point, note=args.note)
    expected = args.mass_kg * GRAVITY_M_S2
    print(f"force: {result.force_n:.2f} N measured, {expected:.2f} N expected, error "
          f"{result.force_error_n:.2f} N (tolerance {cal.force_tolerance_n} N)")
    if result.cop_error_m is not None:
        cop = "none" if result.cop_m is None else f"({result.cop_m[0]:.4f}, {result.cop_m[1]:.4f}) m"
        print(f"COP: {cop}, error {result.cop_error_m * 1000:.2f} mm "
              f"(tolerance {cal.cop_tolerance_m * 1000:.1f} mm)")
    print(f"{cal.calibration_id}: {'PASS' if result.passed else 'FAIL'}")
    if args.record:
        append_verification(cal.source_file, result)
        print(f"recorded in {cal.source_file}")
    return 0 if result.passed else EXIT_FAILED_CHECK


def _drain(driver: Any, seconds: float) -> None:
    """Read and discard for ``seconds`` (at least one read), so the buffer holds only new data."""
    import time

    end = time.monotonic() + seconds
    driver.read(0.01)
    while time.monotonic() < end:
        driver.read(0.05)
