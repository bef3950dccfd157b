"""``labsuite validate PROTOCOL.yaml ...``: check protocol files and list every problem found.

Exits 0 when every file is valid, 1 otherwise; nothing is started. Each problem names the file,
line and column, the field path and what was expected.
"""

from __future__ import annotations

import argparse
import sys

COMMAND = "validate"
HELP = "check protocol files (YAML) and print every problem with its file, line and field"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("protocols", nargs="+", metavar="PROTOCOL.yaml", help="protocol file(s)")
    parser.add_argument("--session", type=int, default=None,
                        help="also resolve programme session N (1-based) and show its stages")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")


def run(args: argparse.Namespace) -> int:
    """Validate each file; print a stage outline for valid ones unless --quiet."""
    from labsuite.errors import ConfigError
    from labsuite.protocol.schema import load_protocol

    failed = 0
    for path in args.protocols:
        try:
            protocol = load_protocol(path)
            if args.session is not None or protocol.programme is None:
                protocol = protocol.for_session(args.session)
        except ConfigError as exc:
            failed += 1
            print(exc, file=sys.stderr)
            continue
        if not args.quiet:
            print(f"{path}: valid protocol {protocol.name!r}")
            if protocol.programme is not None and args.session is None:
                print(f"  programme {protocol.programme.name!r}: {len(protocol.programme.sessions)} "
                      "sessions (give --session N to see one)")
            prog = protocol.programme.progression if protocol.programme is not None else None
            if prog is not None:
                print(f"  progression: steps {', '.join(f'{x:+g} %' for x in prog.steps_percent)}; "
                      f"advance when retention has >= {prog.advance_in_band_percent:g} % of steps "
                      f"in band, {prog.on_pain.replace('_', ' ')} after a pain rule fired")
            rc = protocol.programme.rechecks if protocol.programme is not None else None
            if rc is not None:
                print(f"  rechecks: {', '.join(f'{d:g}' for d in rc.after_days)} days after the last "
                      f"training session, {rc.duration_s:g} s without cues; regression when more "
                      f"than {rc.max_gain_lost_percent:g} % of the gain is lost or VALR rises more "
                      f"than {rc.max_valr_rise_percent:g} %")
            for i, stage in enumerate(protocol.stages):
                speed = protocol.stage_speed_m_s(i)
                target = ""
                spm = getattr(stage, "target_spm", None)
                percent = getattr(stage, "target_percent", None)
                if spm is not None:
                    target = f" target {spm:g} spm"
                elif percent is not None:
                    of = "programme baseline" if getattr(stage, "of", None) == "programme_baseline" \
                        else "session baseline"
                    what = "the progression step" if percent == "progression" else f"{percent:+g} %"
                    target = f" target {what} of the {of}"
                cues = getattr(stage, "cues", None)
                if cues is not None and cues.fading is not None:
                    fading = cues.fading
                    target += f", feedback {100 * fading.on_fraction:g} % of every {fading.period_s:g} s"
                print(f"  [{i}] {stage.name:<16} {stage.kind:<15} {stage.duration_s:>7g} s "
                      f"belt {speed:g} m/s{target}")
    return 1 if failed else 0
