"""The programme state file: one participant's programme kept next to their session files.

A plain JSON file ``<DIR>/<participant>.programme.json`` (format ``labsuite-programme-state/1``,
documented in ``docs/protocols.md``): the programme's first baseline, the sessions done, the current
progression step, the last training session's retention and every session's decision. ``labsuite
run`` reads it before a session (``labsuite/lab/run.py``) and writes it after (temp file + rename).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labsuite import ids
from labsuite.atomic import write_text_atomic
from labsuite.errors import ConfigError
from labsuite.protocol import progression as prog

FORMAT: Literal["labsuite-programme-state/1"] = "labsuite-programme-state/1"
SUFFIX = ".programme.json"
MAX_BYTES = 1 << 20  # a programme of hundreds of sessions is ~100 kB

Num = float | None  # JSON has no NaN: a missing number is null


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class BaselineRecord(_Strict):
    """The programme's first baseline and where it was measured."""

    cadence_spm: float
    valr_bw_per_s: Num = None
    vilr_bw_per_s: Num = None
    tibial_peak_g: Num = None
    contact_s: Num = None
    strike_pattern: Literal["rearfoot", "midfoot", "forefoot"] | None = None
    session: int | None = None
    file: str | None = None
    date_utc: str = ""


class RetentionRecord(_Strict):
    """A training session's last retention stage and whether a pain rule fired."""

    session: int | None = None
    in_band_pct: Num = None
    cadence_spm: Num = None
    valr_bw_per_s: Num = None
    target_spm: Num = None
    pain_rule_fired: bool = False
    pain_detail: str = ""
    end_reason: str = ""


class HistoryEntry(_Strict):
    """One session of the programme as it was decided and as it ended."""

    kind: Literal["training", "recheck"]
    session: int | None = None
    recheck: int | None = None
    file: str | None = None
    date_utc: str = ""
    action: str = ""
    step: int | None = None
    step_percent: Num = None
    reason: str = ""
    end_reason: str = ""
    regression: bool | None = None
    regression_reason: str = ""


class ProgrammeState(_Strict):
    """The whole file."""

    format: Literal["labsuite-programme-state/1"]
    participant: Annotated[str, Field(pattern=ids.PARTICIPANT_ID_PATTERN)]
    protocol: str
    created_utc: str
    updated_utc: str
    baseline: BaselineRecord | None = None
    sessions_done: Annotated[int, Field(ge=0)] = 0
    step_index: Annotated[int, Field(ge=0)] | None = None
    last_training: RetentionRecord | None = None
    last_training_utc: str = ""
    rechecks_done: Annotated[int, Field(ge=0)] = 0
    history: list[HistoryEntry] = []

    # ---- what the rules need -----------------------------------------------------------------
    def programme_baseline(self) -> prog.Baseline | None:
        """The first baseline for the stage machine (None before it was measured)."""
        b = self.baseline
        if b is None:
            return None
        return prog.Baseline(cadence_spm=b.cadence_spm, valr_bw_per_s=_nan(b.valr_bw_per_s),
                             vilr_bw_per_s=_nan(b.vilr_bw_per_s), tibial_peak_g=_nan(b.tibial_peak_g),
                             contact_s=_nan(b.contact_s), strike_pattern=b.strike_pattern)

    def last_outcome(self) -> prog.Outcome | None:
        """The last training session's outcome for :func:`labsuite.protocol.progression.decide`."""
        r = self.last_training
        if r is None:
            return None
        return prog.Outcome(retention_in_band_pct=_nan(r.in_band_pct),
                            retention_cadence_spm=_nan(r.cadence_spm),
                            retention_valr_bw_per_s=_nan(r.valr_bw_per_s),
                            retention_target_spm=_nan(r.target_spm),
                            pain_rule_fired=r.pain_rule_fired, pain_detail=r.pain_detail,
                            end_reason=r.end_reason)


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


def num(v: float) -> float | None:
    """A number for the file: None for NaN or infinity."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def utc_now() -> str:
    """The time now as the file writes it (ISO 8601, UTC, seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def state_path(folder: str | os.PathLike[str], participant_id: str) -> Path:
    """The state file of a participant in ``folder``; the id is checked before it names a file."""
    pid = ids.check_participant_id(participant_id, "participant id")
    return Path(folder) / f"{pid}{SUFFIX}"


def new_state(participant_id: str, protocol: str) -> ProgrammeState:
    """An empty state (no session yet)."""
    now = utc_now()
    return ProgrammeState(format=FORMAT, participant=ids.check_participant_id(participant_id),
                          protocol=protocol, created_utc=now, updated_utc=now)


def load_state(path: str | os.PathLike[str], *, participant_id: str | None = None,
               protocol: str | None = None) -> ProgrammeState | None:
    """Read a state file (None when there is none); ConfigError naming the file and field if bad.

    Refused: a file that is too big, not JSON, not of this format (foreign), or invalid in any
    field; one that belongs to another participant or (``protocol`` given) another protocol.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the programme state file: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{p}: programme state file larger than {MAX_BYTES // 1024} KiB; "
                          "expected a small JSON file (damaged or not a state file)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: programme state file is not UTF-8 text (byte {exc.start}); "
                          "damaged or not a state file") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: programme state file is not valid JSON (line {exc.lineno}, "
                          f"column {exc.colno}: {exc.msg}); damaged, or written by another "
                          "program") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{p}: not a labsuite programme state file (format {got!r}, expected "
                          f"{FORMAT!r}); move it away if it belongs to another program")
    try:
        state = ProgrammeState.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise ConfigError(f"{p}: programme state field {where}: {err['msg']} (got "
                          f"{err.get('input')!r}); the file is damaged or was edited by hand"
                          ) from None
    if participant_id is not None and state.participant != participant_id:
        raise ConfigError(f"{p}: the programme state belongs to participant {state.participant!r}, "
                          f"not {participant_id!r}")
    if protocol is not None and state.protocol != protocol:
        raise ConfigError(f"{p}: {state.participant}'s programme state is for protocol "
                          f"{state.protocol!r}, not {protocol!r}; a participant follows one "
                          "programme per folder (use another --out folder, or move the file)")
    return state


def save_state(path: str | os.PathLike[str], state: ProgrammeState) -> Path:
    """Write the state atomically: a temporary file in the same folder, flushed, then renamed."""
    text = json.dumps(state.model_dump(mode="json"), indent=2, allow_nan=False) + "\n"
    return write_text_atomic(path, text)


def updated(state: ProgrammeState, **changes: Any) -> ProgrammeState:
    """A copy with ``changes`` applied and validated again, ``updated_utc`` set to now."""
    data = {**state.model_dump(), **changes, "updated_utc": utc_now()}
    return ProgrammeState.model_validate(data)
