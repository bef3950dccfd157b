"""``labsuite drivers``: list the device drivers labsuite has, or check a lab file's devices.

``list`` reads the registry (``labsuite.drivers.registry``) without importing any driver;
``check`` validates a lab file (devices, calibration files and their age) without opening devices.
"""

from __future__ import annotations

import argparse

COMMAND = "drivers"
HELP = "List the available device drivers, or validate a lab file's devices."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``list`` and ``check`` actions."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="show every driver, its transport and whether it can run here")
    check = sub.add_parser("check", help="validate a lab file and show its devices and stream ids")
    check.add_argument("lab", metavar="LAB.yaml", help="lab file")


def run(args: argparse.Namespace) -> int:
    """Print the table or the lab summary; a bad lab file exits with status 1 (ConfigError)."""
    if args.action == "list":
        from labsuite.drivers.registry import DRIVERS

        width = max(len(d.kind) for d in DRIVERS)
        print(f"{'kind':<{width}}  {'transport':<9}  {'status':<9}  description")
        for info in DRIVERS:
            ok, why = info.available()
            print(f"{info.kind:<{width}}  {info.transport:<9}  {'ready' if ok else 'missing':<9}  "
                  f"{info.description}; publishes {info.publishes}" + ("" if ok else f" [{why}]"))
        return 0
    from labsuite.labconfig import load_lab_config

    config = load_lab_config(args.lab)
    print(f"lab {config.lab_id}: {len(config.device_names)} devices "
          f"(calibration limit {config.model.calibration_max_age_days} days)")
    for name in config.device_names:
        dev = config.device(name)
        cal = config.calibrations.get(name)
        cal_text = f", calibration {cal.calibration_id} ({cal.date.isoformat()})" if cal else ""
        print(f"  {name}: {dev.kind}, stream {config.source_id(name)}{cal_text}")
    for warning in config.calibration_warnings():
        print(f"warning: {warning}")
    return 0
