"""The session catalogue: every participant and session in a folder, one row per file, with an index.

``labsuite sessions DIR`` (``labsuite/cli/sessions.py``) lists what :func:`catalogue` returns. Each
session file is read once through :mod:`labsuite.archive.reader` (damaged files are listed as such)
and its row kept in ``DIR/.labsuite-sessions.json``, keyed by the file's path, size and modification
time: a file that changed is read again, a file that went away is dropped; the HDF5 files stay the
source of truth and the index can be deleted at any time.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labsuite import ids
from labsuite.atomic import write_text_atomic
from labsuite.errors import ArchiveError, ConfigError, LabsuiteError

INDEX_NAME = ".labsuite-sessions.json"
INDEX_FORMAT = "labsuite-catalogue-index/1"
INDEX_VERSION = 1  # bump when a row's fields change: old rows are read again
MAX_DEPTH = 3  # DIR, DIR/<participant>/, DIR/<site>/<participant>/
MAX_INDEX_BYTES = 64 << 20

COLUMNS: tuple[tuple[str, str], ...] = (
    ("participant", "pseudonymous participant id"),
    ("file", "session file, relative to DIR"),
    ("date_utc", "session start (UTC)"),
    ("protocol", "protocol name"),
    ("kind", "training, recheck, or empty outside programmes"),
    ("session", "programme session number"),
    ("recheck", "recheck number"),
    ("status", "complete, stopped (ended early), cut short, live (being written) or damaged"),
    ("end_reason", "session_end reason"),
    ("duration_s", "first to last marker (s)"),
    ("n_steps", "steps recorded"),
    ("baseline_cadence_spm", "baseline stage cadence (stage machine, last N steps)"),
    ("training_cadence_spm", "last cadence stage's cadence (last 30 steps)"),
    ("retention_cadence_spm", "last retention stage's cadence (last 30 steps)"),
    ("retention_in_band_pct", "retention steps in the band"),
    ("baseline_valr_bw_per_s", "baseline VALR"),
    ("retention_valr_bw_per_s", "retention VALR (last 30 steps)"),
    ("action", "progression decision"),
    ("regression", "recheck flagged a regression (true/false, empty when no recheck)"),
    ("problem", "why the file could not be read fully (damaged), else empty"),
)
COLUMN_NAMES = tuple(c for c, _ in COLUMNS)


@dataclass(frozen=True)
class ScanStats:
    """What one refresh did: files seen, read anew, taken from the index, dropped from it."""

    files: int
    read: int
    cached: int
    dropped: int


def session_paths(folder: Path) -> list[Path]:
    """Every ``*.h5`` under ``folder`` (at most MAX_DEPTH levels), sorted; symlinks not followed."""
    out: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as exc:
            raise ConfigError(f"{d}: cannot list the folder: {exc.strerror}") from None
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False) and depth < MAX_DEPTH:
                walk(Path(e.path), depth + 1)
            elif e.is_file(follow_symlinks=False) and e.name.endswith(".h5"):
                out.append(Path(e.path))

    walk(folder, 1)
    return out


def read_row(path: Path) -> dict[str, Any]:
    """One file's row (keys :data:`COLUMN_NAMES` but ``file``): read through the archive reader."""
    from labsuite.archive.reader import STATUS_DAMAGED, open_session
    from labsuite.markers import decode

    row: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)
    try:
        sess = open_session(path, allow_damaged=True)
    except ArchiveError as exc:
        return {**row, "status": "unreadable", "problem": str(exc)}
    with sess:
        attrs = sess.attrs
        status = sess.status
        problems = sess.problems
        markers = sess.markers
        stages = sess.stages
        n_steps = len(sess.steps)
    start = prog = rc = end = base = None
    times = []
    for m in markers:
        try:
            mk = decode(str(m["text"]))
        except LabsuiteError:
            continue
        times.append(float(m["time_s"]))
        if mk.event == "session_start" and start is None:
            start = mk
        elif mk.event == "programme" and prog is None:
            prog = mk
        elif mk.event == "recheck":
            rc = mk
        elif mk.event == "session_end":
            end = mk
        elif mk.event == "baseline" and getattr(mk, "ok", False):
            base = mk

    def summary(kind: str, key: str, scale: float = 1.0) -> float | None:
        recs = [s for s in stages if s.kind == kind]
        if not recs:
            return None
        try:
            v = json.loads(recs[-1].summary_json or "{}").get(key)
        except json.JSONDecodeError:
            return None
        return None if v is None else float(v) * scale

    reason = getattr(end, "reason", "") if end is not None else ""
    if status == STATUS_DAMAGED:
        shown = "damaged"
    elif status == "complete" and reason and reason != "completed":
        shown = "stopped"
    else:
        shown = status
    number = attrs.get("session_number", -1)
    row.update(
        participant=str(attrs.get("participant_id", "")), date_utc=str(attrs.get("start_time_utc", "")),
        protocol=getattr(start, "protocol", "") or Path(str(attrs.get("protocol_path", "") or "")).stem,
        kind=getattr(prog, "kind", "") or "",
        session=int(number) if isinstance(number, (int, float)) and number >= 0 else None,
        recheck=getattr(rc, "number", None) if rc is not None else getattr(prog, "recheck", None),
        status=shown, end_reason=reason,
        duration_s=(max(times) - min(times)) if len(times) > 1 else None, n_steps=n_steps,
        baseline_cadence_spm=_num(getattr(base, "cadence_spm", None)),
        training_cadence_spm=summary("cadence", "cadence_spm"),
        retention_cadence_spm=summary("retention", "cadence_spm"),
        retention_in_band_pct=summary("retention", "in_band_fraction", 100.0),
        baseline_valr_bw_per_s=_num(getattr(base, "valr_bw_per_s", None)),
        retention_valr_bw_per_s=summary("retention", "valr_bw_per_s"),
        action=getattr(prog, "action", "") if prog is not None else "",
        regression=bool(rc.regression) if rc is not None else None,  # type: ignore[attr-defined]
        problem="; ".join(problems)[:300] if problems else "")
    return row


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _load_index(path: Path) -> dict[str, Any]:
    """The index's entries; an unreadable or foreign index is ignored (it is rebuilt, not trusted)."""
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT \
            or data.get("version") != INDEX_VERSION or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def catalogue(folder: str | os.PathLike[str], *, participant: str | None = None,
              use_index: bool = True, on_progress: Callable[[int, int], None] | None = None
              ) -> tuple[list[dict[str, Any]], ScanStats]:
    """Rows of every session file under ``folder`` (of one participant when given), sorted.

    Sorted by participant, then date. ``use_index`` False reads every file (and rewrites the
    index). ``on_progress(done, total)`` is called as files are read. ConfigError for a folder that
    does not exist or a bad participant id.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder of session files")
    if participant is not None:
        ids.check_participant_id(participant, "--participant")
    paths = session_paths(root)
    index_path = root / INDEX_NAME
    old = _load_index(index_path) if use_index else {}
    new: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    read = cached = 0
    todo: list[tuple[Path, str, list[int]]] = []
    for p in paths:
        rel = p.relative_to(root).as_posix()
        st = p.stat()
        key = [st.st_size, st.st_mtime_ns]
        entry = old.get(rel)
        if isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("row"), dict) \
                and entry["row"].get("status") not in ("live",):
            new[rel] = entry
            cached += 1
        else:
            todo.append((p, rel, key))
    for i, (p, rel, key) in enumerate(todo):
        row = read_row(p)
        read += 1
        # a live file changes under us: never trust its row later
        new[rel] = {"key": key, "row": row}
        if on_progress is not None:
            on_progress(i + 1, len(todo))
    for rel, entry in new.items():
        row = {**entry["row"], "file": rel}
        if participant is None or row.get("participant") == participant:
            rows.append(row)
    dropped = len(set(old) - set(new))
    if read or dropped or not index_path.exists():
        try:
            write_text_atomic(index_path, json.dumps(
                {"format": INDEX_FORMAT, "version": INDEX_VERSION, "files": new}, allow_nan=False))
        except OSError:
            pass  # a read-only folder still lists; the next run reads the files again
    rows.sort(key=lambda r: (str(r.get("participant") or ""), str(r.get("date_utc") or ""),
                             str(r["file"])))
    return rows, ScanStats(len(paths), read, cached, dropped)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table, one participant block after another."""
    head = (f"{'participant':<12} {'date (UTC)':<16} {'protocol':<24} {'kind':<8} {'#':>3} "
            f"{'status':<10} {'min':>5} {'steps':>6} {'base':>6} {'train':>6} {'ret':>6} "
            f"{'in band':>7} {'VALR b':>7} {'VALR r':>7}  decision / flag   file")
    lines = [head, "-" * len(head)]
    for r in rows:
        number = r["session"] if r["session"] is not None else (
            f"r{r['recheck']}" if r["recheck"] is not None else "")
        flag = ("REGRESSION" if r["regression"] else "kept") if r["regression"] is not None \
            else (r["action"] or "")
        status = r["status"] or ""
        lines.append(
            f"{r['participant'] or '?':<12} {str(r['date_utc'] or '')[:16]:<16} "
            f"{str(r['protocol'] or '')[:24]:<24} {r['kind'] or '':<8} {number:>3} {status[:10]:<10} "
            f"{_t(r['duration_s'], 60, 1):>5} {r['n_steps'] if r['n_steps'] is not None else '':>6} "
            f"{_t(r['baseline_cadence_spm']):>6} {_t(r['training_cadence_spm']):>6} "
            f"{_t(r['retention_cadence_spm']):>6} {_t(r['retention_in_band_pct'], 1, 0):>7} "
            f"{_t(r['baseline_valr_bw_per_s']):>7} {_t(r['retention_valr_bw_per_s']):>7}  "
            f"{flag:<17} {r['file']}")
    people = sorted({str(r["participant"]) for r in rows})
    lines.append(f"{len(rows)} sessions of {len(people)} participants")
    return "\n".join(lines)


def _t(v: Any, div: float = 1.0, digits: int = 1) -> str:
    return "-" if v is None else f"{float(v) / div:.{digits}f}"
