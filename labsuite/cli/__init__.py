"""The ``labsuite`` command: one subcommand per module of this package.

Each module ``labsuite/cli/<name>.py`` that defines ``COMMAND`` (the subcommand name), ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int`` becomes a subcommand. Modules keep heavy imports
(numba, h5py, Qt) inside ``run`` so that ``labsuite --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from labsuite import __version__
from labsuite.errors import LabsuiteError


def _command_modules() -> list[ModuleType]:
    modules = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "COMMAND"):
            modules.append(module)
    return modules


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="labsuite",
        description="Run a gait-retraining lab: acquisition, real-time step metrics, "
        "protocols, feedback and session archives.",
    )
    parser.add_argument("--version", action="version", version=f"labsuite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.COMMAND, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``labsuite`` console command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except LabsuiteError as exc:
        print(f"labsuite {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"labsuite {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`labsuite inspect ... | head`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command ended by a closed pipe


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
