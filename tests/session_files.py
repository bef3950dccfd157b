"""Realistic session files for the archive tests: the same generator scripts/fuzz_inputs.py fuzzes.

A 20 s simulated session (two belt plates, two IMUs, a marker stream with two stages, the
processor's steps) written by the real SessionWriter.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_inputs.py"
_spec = importlib.util.spec_from_file_location("fuzz_inputs", _SCRIPT)
assert _spec and _spec.loader
fuzz_inputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_inputs)


def make_session(path: Path, duration_s: float = 20.0, seed: int = 1) -> Path:
    """Write the session file and return its path."""
    return fuzz_inputs.make_session(path, duration_s, seed)
