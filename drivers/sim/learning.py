"""The virtual participant's memory between sessions: the learned cadence habit and how it fades.

The participant process (``drivers/sim/lab.py``) saves the habit its planner ended with
(:attr:`~labsuite.drivers.sim.gait.GaitPlanner.habit_spm`) to ``<DIR>/<participant>.sim-memory.json``;
the next simulated session starts from :func:`carried_habit` of it: the share kept between
sessions, halved every ``half_life_days`` since (a human's memory, not the lab's programme state).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from labsuite.atomic import write_text_atomic
from labsuite.errors import ConfigError
from labsuite.ids import check_participant_id

FORMAT = "labsuite-sim-memory/1"
SUFFIX = ".sim-memory.json"
MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class SimMemory:
    """What the virtual participant remembers: its habit (steps/min) and when it left (epoch s)."""

    habit_spm: float
    saved_epoch_s: float


def memory_path(folder: str | os.PathLike[str], participant_id: str) -> Path:
    """The memory file of a virtual participant in ``folder`` (the id checked first)."""
    return Path(folder) / f"{check_participant_id(participant_id)}{SUFFIX}"


def carried_habit(habit_spm: float, days: float, *, kept_between_sessions: float,
                  half_life_days: float) -> float:
    """The habit at the start of the next session, ``days`` after the last one ended."""
    if not (math.isfinite(days) and days >= 0):
        raise ConfigError(f"days since the last simulated session: expected >= 0, got {days!r}")
    return float(habit_spm) * kept_between_sessions * 0.5 ** (days / half_life_days)


def load_memory(path: str | os.PathLike[str]) -> SimMemory | None:
    """Read a memory file (None when there is none); ConfigError naming the file when it is bad."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the simulated participant's memory: {exc.strerror}") from None
    try:
        if len(raw) > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES // 1024} KiB")
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"expected format {FORMAT!r}")
        habit, saved = data.get("habit_spm"), data.get("saved_epoch_s")
        for name, v in (("habit_spm", habit), ("saved_epoch_s", saved)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"field {name}: expected a number, got {v!r}")
        if not -40.0 <= float(habit) <= 40.0:  # type: ignore[arg-type]
            raise ValueError(f"field habit_spm: expected -40..40 steps/min, got {habit!r}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not a simulated participant's memory file ({exc}); "
                          "move it away or delete it to start the virtual participant afresh") from None
    return SimMemory(float(habit), float(saved))  # type: ignore[arg-type]


def save_memory(path: str | os.PathLike[str], habit_spm: float) -> None:
    """Write the memory atomically (temp file in the same folder, then rename)."""
    write_text_atomic(path, json.dumps({"format": FORMAT, "habit_spm": float(habit_spm),
                                        "saved_epoch_s": time.time()}) + "\n")
