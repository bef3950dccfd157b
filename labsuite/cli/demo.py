"""``labsuite demo``: run ``protocols/demo.yaml`` on the simulated lab, write the file, print the summary.

About two minutes, unattended (every pain check-in is answered 0, the belt starts by itself), LSL
kept on this machine. The same as ``labsuite run protocols/demo.yaml --participant DEMO
--simulate --headless --auto-start``; with ``--gui`` the operator starts the belt (Start button).
Where the system's sound output works the metronome clicks on it; on a machine without one (a
server, CI) it says so in one line and runs as with ``--no-sound`` (silent timer beats, flagged so
in the file), so the quick start is one command everywhere. ``labsuite run`` never falls back.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "demo"
HELP = "run the 2-minute demo protocol on the simulated lab and print the per-stage summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("--out", type=Path, default=Path("sessions"), metavar="DIR",
                        help="folder for the session file (default ./sessions)")
    parser.add_argument("--participant", default="DEMO", metavar="ID", help="participant id")
    parser.add_argument("--quiet", action="store_true", help="summary only, no progress lines")
    parser.add_argument("--gui", action="store_true",
                        help="open the operator console and the participant display (press its "
                             "Start button to run the belt)")
    parser.add_argument("--no-sound", action="store_true",
                        help="no metronome click even when a sound output works (silent timer beats)")


def demo_protocol_path() -> Path:
    """Find ``protocols/demo.yaml`` in the source tree, else in the installed package."""
    from importlib import resources

    from labsuite.errors import ConfigError

    here = Path(__file__).resolve().parents[2] / "protocols" / "demo.yaml"
    if here.is_file():
        return here
    shipped = Path(str(resources.files("labsuite.protocols") / "demo.yaml"))
    if shipped.is_file():
        return shipped
    raise ConfigError(f"demo protocol not found at {here} or {shipped}; run from a labsuite checkout "
                      "or reinstall labsuite")


def run(args: argparse.Namespace) -> int:
    """Run the demo session; 0 when it completed."""
    from labsuite.audio.metronome import OutputSettings
    from labsuite.cli.run import execute
    from labsuite.errors import DeviceError
    from labsuite.lab.run import RunOptions, check_sound

    sound = not args.no_sound
    if sound:
        try:
            check_sound(OutputSettings())
        except DeviceError as exc:
            print(f"labsuite demo: no working sound output ({exc}); the demo runs without sound, as "
                  "with --no-sound: the beats in the file are the session's timer (clock 'timer'). "
                  "Check an output with `labsuite audio test`.", flush=True)
            sound = False
    options = RunOptions(protocol_path=demo_protocol_path(), participant_id=args.participant,
                         simulate=True, out_dir=args.out, auto_start=not args.gui, sound=sound)
    return execute(options, pain_script=[0], quiet=args.quiet, gui=args.gui)
