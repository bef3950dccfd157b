"""The stage record: one row per protocol stage as it was run, shared by runner, archive and reports.

The protocol runner publishes each finished stage as a ``stage_end`` marker carrying this record as
JSON (so any LSL recorder captures it); the archive turns those markers into the session's stage
table. Times are LSL seconds; targets are NaN when a stage has none.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from labsuite.errors import ArchiveError

STAGE_KINDS = ("quiet_standing", "baseline", "cadence", "rest", "retention")
END_REASONS = ("time", "steps", "in_band", "skipped", "aborted", "safety_stop", "pain_stop",
               "interrupted")

EVENT_STAGE_START = "stage_start"
EVENT_STAGE_END = "stage_end"


@dataclass(frozen=True)
class StageRecord:
    """One stage as run. ``feedback_json`` and ``summary_json`` are JSON objects as text."""

    index: int
    name: str
    kind: str
    start_s: float
    end_s: float
    target_cadence_spm: float = math.nan
    band_low_spm: float = math.nan
    band_high_spm: float = math.nan
    belt_speed_m_s: float = math.nan
    end_reason: str = ""
    feedback_json: str = "{}"
    summary_json: str = "{}"

    def to_marker_fields(self) -> dict[str, Any]:
        """Return the fields for a ``stage_end`` marker (NaN encoded as null)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}

    @classmethod
    def from_marker(cls, obj: dict[str, Any]) -> StageRecord:
        """Rebuild a record from a decoded ``stage_end`` marker; ArchiveError naming a bad field."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in obj:
                if f.default is not MISSING:
                    continue
                raise ArchiveError(f"stage_end marker lacks field {f.name!r}: {json.dumps(obj)[:200]}")
            value = obj[f.name]
            try:
                if f.type in ("float", float):
                    kwargs[f.name] = math.nan if value is None else float(value)
                elif f.type in ("int", int):
                    kwargs[f.name] = int(value)
                else:
                    kwargs[f.name] = "" if value is None else str(value)
            except (TypeError, ValueError):
                raise ArchiveError(f"stage_end marker field {f.name!r}: expected {f.type}, "
                                   f"got {value!r}") from None
        return cls(**kwargs)


STAGE_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(StageRecord))
