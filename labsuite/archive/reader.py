"""Read a session file into numpy arrays: streams, steps, markers, stages, calibration, events, video.

The other end of labsuite.archive.writer: works on complete files, on files cut short by a crash
(``complete`` is False) and on files still being written (SWMR read; call :meth:`Session.refresh`).
Nothing is trusted before it is checked: the bytes first (labsuite.archive.integrity: superblock,
length, live or not), then the format name and version, then every group (required datasets,
committed counts within the dataset lengths, timestamps finite and non-decreasing, text offsets
inside their bytes, chunks inside the file). Each stream is read up to its last consistent row and
everything found wrong is listed in :attr:`Session.problems`; a file with problems is "damaged"
and opens only with ``allow_damaged`` (inspect, recover). Used by inspect, export, replay, reports.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from labsuite import __version__
from labsuite.archive import layout as L
from labsuite.archive import naming
from labsuite.archive.integrity import open_h5, probe_file
from labsuite.errors import ArchiveError, LabsuiteError
from labsuite.stages import StageRecord
from labsuite.steps import STEP_DTYPE, empty_steps
from labsuite.streams.contracts import KIND_MARKERS, StreamSpec
from labsuite.video.naming import resolve_stored

log = logging.getLogger(__name__)

MARKER_DTYPE = np.dtype([("time_s", np.float64), ("text", object), ("source_id", object)])


@dataclass(frozen=True)
class StreamData:
    """One recorded stream.

    ``timestamps`` are corrected LSL times (raw + the measured clock offset, interpolated between
    measurements); ``timestamps_raw`` as received; ``data`` (n, channels) numeric, or a list of
    strings for string streams; ``clock_offsets`` (k, 2): local time, offset s.
    """

    key: str
    spec: StreamSpec
    timestamps: np.ndarray
    timestamps_raw: np.ndarray
    data: Any
    clock_offsets: np.ndarray
    late: bool = False

    def __iter__(self) -> Any:
        # ``ts, data, spec = session.streams[sid]`` unpacks like a tuple.
        return iter((self.timestamps, self.data, self.spec))

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return len(self.timestamps)

    @property
    def duration_s(self) -> float:
        """Time from the first to the last sample, s (0 with fewer than two samples)."""
        return float(self.timestamps[-1] - self.timestamps[0]) if self.n_samples > 1 else 0.0

    @property
    def measured_rate_hz(self) -> float:
        """Mean sample rate over the recording, Hz (NaN with fewer than two samples)."""
        d = self.duration_s
        return (self.n_samples - 1) / d if d > 0 else math.nan

    def gaps(self, factor: float = 3.0) -> list[tuple[float, float]]:
        """Return (start_s, length_s) of holes longer than ``factor`` nominal sample periods."""
        if self.spec.rate_hz <= 0 or self.n_samples < 2:
            return []
        dt = np.diff(self.timestamps)
        idx = np.flatnonzero(dt > factor / self.spec.rate_hz)
        return [(float(self.timestamps[i]), float(dt[i])) for i in idx]


def corrected_times(raw: np.ndarray, clock_offsets: np.ndarray) -> np.ndarray:
    """Apply measured clock offsets to raw timestamps (linear between measurements, held outside)."""
    raw = np.asarray(raw, dtype=np.float64)
    co = np.asarray(clock_offsets, dtype=np.float64).reshape(-1, 2)
    co = co[np.isfinite(co).all(axis=1)]
    if len(co) == 0:
        return raw.copy()
    order = np.argsort(co[:, 0], kind="stable")
    return raw + np.interp(raw, co[order, 0], co[order, 1])


@dataclass(frozen=True)
class VideoSegment:
    """One video file of the session (a row of ``video/segments``).

    ``file`` is the path relative to the session file's folder as stored; ``path`` where that is
    (None when the stored name is not a safe relative path); ``camera`` the camera stream's
    source_id; ``part`` its segment number (1 = the camera's first file).
    """

    row: int
    camera: str
    part: int
    file: str
    path: Path | None
    first_frame_index: int
    first_time_s: float
    record: dict[str, Any]

    @property
    def exists(self) -> bool:
        """True when the video file is where the session file says."""
        return self.path is not None and self.path.is_file()


class DamagedFileError(ArchiveError):
    """A session file is damaged; ``problems`` lists what, the message says how to recover it."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        listing = "; ".join(problems[:5]) + (f"; ... ({len(problems) - 5} more)" if len(problems) > 5 else "")
        super().__init__(f"{path} is damaged: {listing}. `labsuite inspect {path}` lists what can still "
                         f"be read; `labsuite recover {path} --out FIXED.h5` copies it into a new file")


STATUS_COMPLETE = "complete"
STATUS_LIVE = "live"
STATUS_CUT_SHORT = "cut short"
STATUS_DAMAGED = "damaged"
# closed cleanly, but recorded in parts (the recorder was restarted): data are missing between them
STATUS_INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class PartInfo:
    """One file of a session's set (labsuite.archive.naming): its number, path and what it holds.

    ``first_s``/``last_s``: the first and last sample of any stream in it (corrected LSL s, NaN
    when it holds none); ``status`` as :attr:`Session.status` of that file alone.
    """

    part: int
    path: Path
    status: str
    first_s: float
    last_s: float
    samples: int

    @property
    def seconds(self) -> float:
        """Time from its first to its last sample, s."""
        return self.last_s - self.first_s if math.isfinite(self.first_s) else 0.0


@dataclass(frozen=True)
class RecordingGap:
    """Time between two parts in which nothing was recorded: ``start_s`` and ``length_s``.

    ``length_s`` is the longest hole any regular-rate stream shows across the boundary (its last
    sample in part ``after_part`` to its first in the next, less one sample period).
    """

    after_part: int
    start_s: float
    length_s: float


class Session:
    """An open session file; use :func:`open_session`. Everything is read and checked on open.

    ``allow_damaged`` False (the default) raises :class:`DamagedFileError` for a damaged file, so
    no export or report is ever made from one by mistake; True (inspect, recover) opens it and
    gives the consistent part of every stream, with :attr:`problems` saying what was left out.
    """

    _steps: np.ndarray

    def __init__(self, path: str | os.PathLike[str], *, allow_damaged: bool = False,
                 parts: bool = True) -> None:
        path = Path(path)
        first, number = naming.split_part(path)
        if parts and number > 1 and first.exists():
            path = first  # any file of a set opens the whole set, from its first file
        self.path = path
        self._with_parts = parts
        self._parts: list[Session] = []
        self.probe = probe_file(self.path)
        self.live = self.probe.open_for_write and self.probe.writer_alive
        self._file: h5py.File | None = None
        self._fixed_problems: list[str] = []
        if self.probe.truncated:
            p = self.probe
            self._fixed_problems.append(
                f"the file is {p.size_bytes} bytes but its writer recorded {p.stored_eof}: the last "
                f"{p.missing_bytes} bytes ({100 * p.missing_bytes / p.stored_eof:.1f} %) are missing "
                "(an interrupted copy or transfer, or a full disk)")
        try:
            # Plain read-only unless HDF5 still marks the file open for writing (live, or its
            # writer died): SWMR mode would skip HDF5's length check and retry damaged metadata
            # almost forever (labsuite/archive/integrity.py).
            self._file = open_h5(self.path, swmr=self.probe.open_for_write or self.probe.truncated)
        except OSError as exc:
            raise ArchiveError(f"cannot open session file {self.path}: HDF5 says: {exc}"
                               + (f" ({self._fixed_problems[0]})" if self._fixed_problems else "")) from None
        try:
            self._check_format()
            self._load_all()
        except BaseException:
            self.close()
            raise
        if self.problems and not allow_damaged:
            problems = self.problems
            self.close()
            raise DamagedFileError(self.path, problems)

    def _check_format(self) -> None:
        assert self._file is not None
        try:
            attrs = dict(self._file.attrs.items())
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise ArchiveError(f"{self.path}: the root attributes cannot be read ({exc}); the file is "
                               "damaged where it names itself, and cannot be read") from None
        self._attrs = {k: v.item() if isinstance(v, np.generic) else v for k, v in attrs.items()}
        fmt = _text(self._attrs.get("format"))
        if fmt != L.FORMAT_NAME:
            raise ArchiveError(f"{self.path} is not a labsuite session file (root attribute 'format' is "
                               f"{fmt!r}, expected {L.FORMAT_NAME!r})")
        version = self._attrs.get("format_version")
        if isinstance(version, (bool, np.bool_)) or not isinstance(version, (int, np.integer)):
            raise ArchiveError(f"{self.path}: root attribute 'format_version' is {version!r}, expected "
                               f"an integer (1..{L.FORMAT_VERSION}); the file is damaged")
        if version > L.FORMAT_VERSION or version < 1:
            by = _text(self._attrs.get("labsuite_version")) or "an unknown labsuite"
            raise ArchiveError(f"{self.path}: written by labsuite {by} in session format {version}; this "
                               f"is labsuite {__version__}, which reads formats 1..{L.FORMAT_VERSION}: "
                               "upgrade labsuite to read it")
        self._version = int(version)
        self._header_problems: list[str] = []
        if self._version >= 2:
            stored = _text(self._attrs.get(L.HEADER_SHA256))
            if stored != L.header_digest(attrs):
                self._header_problems.append(
                    "root attributes: they do not match their SHA-256 (header_sha256): an attribute "
                    "such as the participant id, mass, protocol or start time was changed or damaged")

    # ---- lifecycle ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """See what a live writer flushed since the last look (SWMR refresh), checked again."""
        assert self._file is not None
        for obj in _datasets(self._file):
            try:
                obj.refresh()
            except (OSError, RuntimeError):
                pass  # reported by the reload below
        self._load_all()

    def close(self) -> None:
        """Close the file (and the set's other parts)."""
        for part in self._parts:
            part.close()
        self._parts = []
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- status ------------------------------------------------------------------------------
    @property
    def problems(self) -> list[str]:
        """Everything found wrong, each naming the group, the row and what is left out (empty: fine).

        A file shorter than its writer recorded is damaged when anything committed lay in the
        missing part, or when it claims to be complete; a recording stopped by a full disk (its
        writer could not write space it had allocated) keeps every committed row and is only
        cut short (see :attr:`notes`).
        """
        if self._problems or self._header_problems or bool(self._attrs.get("complete", False)):
            return self._header_problems + self._fixed_problems + self._problems
        return []

    @property
    def notes(self) -> list[str]:
        """Facts about the file that are not damage: a tail its writer never filled, a recovery."""
        out = [] if self.problems else list(self._fixed_problems)
        if self._gaps:
            out.append(f"recorded in {len(self._part_info)} parts (the recorder was restarted): "
                       + "; ".join(f"{g.length_s:.2f} s missing after part {g.after_part}"
                                   for g in self._gaps))
        if self._version < 2:
            out.append("session format 1: sample values carry no checksums, so changed bytes in "
                       "them cannot be detected")
        if self._attrs.get("recovered_from"):
            try:
                lost = json.loads(str(self._attrs.get("recovery_lost", "[]")))
            except json.JSONDecodeError:
                lost = [str(self._attrs.get("recovery_lost"))]
            out.append(f"a copy made by `labsuite recover` from {self._attrs['recovered_from']}"
                       + (f", which had lost: {'; '.join(map(str, lost))}" if lost else
                          ", which was not damaged"))
        return out

    @property
    def status(self) -> str:
        """'damaged', 'live' (being written), 'complete' (closed cleanly) or 'cut short'.

        A session recorded in several parts is 'incomplete' once its last part is closed (data
        are missing between the parts: :attr:`recording_gaps`), 'live' or 'cut short' before.
        """
        last = self._parts[-1] if self._parts else None
        if last is None or self.problems:
            return self._file_status()
        if last.live:
            return STATUS_LIVE
        return STATUS_INCOMPLETE if bool(last._attrs.get("complete", False)) else STATUS_CUT_SHORT

    def _file_status(self) -> str:
        if self.problems:
            return STATUS_DAMAGED
        if self.live:
            return STATUS_LIVE
        return STATUS_COMPLETE if bool(self._attrs.get("complete", False)) else STATUS_CUT_SHORT

    @property
    def parts(self) -> list[PartInfo]:
        """Every file of the session's set, in order (one for a session recorded in one go)."""
        return self._part_info

    @property
    def recording_gaps(self) -> list[RecordingGap]:
        """Holes between the parts of the set (empty for a session recorded in one go)."""
        return list(self._gaps)

    @property
    def missing_s(self) -> float:
        """Seconds of the session not recorded (the sum of :attr:`recording_gaps`)."""
        return float(sum(g.length_s for g in self._gaps))

    @property
    def outcome(self) -> tuple[str, int | None, str]:
        """(outcome, exit code, detail) as ``labsuite run`` wrote them ('' when it did not)."""
        src = next((p._attrs for p in reversed(self._parts) if L.OUTCOME in p._attrs), self._attrs)
        code = src.get(L.OUTCOME_CODE)
        return (_text(src.get(L.OUTCOME)), int(code) if isinstance(code, (int, np.integer)) else None,
                _text(src.get(L.OUTCOME_DETAIL)))

    @property
    def complete(self) -> bool:
        """True only when the writer closed the file cleanly and nothing in it is damaged."""
        return self.status == STATUS_COMPLETE

    # ---- metadata ----------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes: participant_id, mass_kg, protocol text and hash, versions, host..."""
        return dict(self._attrs)

    @property
    def participant_id(self) -> str:
        """The pseudonymous participant id."""
        return _text(self._attrs.get("participant_id"))

    @property
    def mass_kg(self) -> float:
        """Body mass, kg (NaN when not given)."""
        try:
            return float(self._attrs.get("mass_kg", math.nan))
        except (TypeError, ValueError):
            return math.nan

    # ---- data --------------------------------------------------------------------------------
    @property
    def streams(self) -> dict[str, StreamData]:
        """Every recorded stream by source_id (late streams included, unused spare slots left out)."""
        return self._streams

    def stream(self, name: str) -> StreamData:
        """Return a stream by source_id, stream name or group key; ArchiveError naming the choices."""
        streams = self.streams
        if name in streams:
            return streams[name]
        for sd in streams.values():
            if name in (sd.spec.name, sd.key):
                return sd
        raise ArchiveError(f"{self.path}: no stream {name!r}; recorded streams: "
                           f"{sorted(streams)}")

    def streams_of_kind(self, kind: str) -> list[StreamData]:
        """Streams of one labsuite kind (force_plate, imu, ...), in file order."""
        return [s for s in self.streams.values() if s.spec.kind == kind]

    @property
    def steps(self) -> np.ndarray:
        """The step table (``STEP_DTYPE``; columns a file predates are NaN)."""
        return self._steps

    @property
    def markers(self) -> np.ndarray:
        """Every marker, sorted by time: fields time_s (corrected LSL s), text, source_id.

        Holds the markers of recorded marker streams and those the session appended itself
        (source_id ``""``).
        """
        rows: list[tuple[float, str, str]] = []
        ts, texts = self._logs[L.MARKERS]
        rows += [(float(t), s, "") for t, s in zip(ts, texts, strict=True)]
        for sid, sd in self.streams.items():
            if sd.spec.kind == KIND_MARKERS:
                rows += [(float(t), s, sid) for t, s in zip(sd.timestamps, sd.data, strict=False)]
        rows.sort(key=lambda r: r[0])
        arr = np.empty(len(rows), dtype=MARKER_DTYPE)
        for i, r in enumerate(rows):
            arr[i] = r
        return arr

    @property
    def video_segments(self) -> list[VideoSegment]:
        """The session's video files, in the order they were started (empty before format 3)."""
        return list(self._video_segments)

    @property
    def video_frames(self) -> np.ndarray:
        """The frame table (``layout.FRAME_DTYPE``), ``time_s`` corrected like stream timestamps.

        One row per frame written: frame index, time, ``segment`` (index into
        :attr:`video_segments`) and the frame's position in that file.
        """
        return self._video_frames

    @property
    def video_frames_raw(self) -> np.ndarray:
        """:attr:`video_frames` with ``time_s`` as the camera stamped it (what the file stores)."""
        return self._video_frames_raw

    @property
    def stages(self) -> list[StageRecord]:
        """The protocol stages as run (from ``stage_end`` markers), in order of their end."""
        return list(self._stages)

    @property
    def calibration(self) -> list[dict[str, Any]]:
        """Calibration records stored during the session (JSON objects)."""
        return [dict(c) for c in self._calibration]

    @property
    def events(self) -> list[dict[str, Any]]:
        """Writer/recorder events (gaps, reconnects, late streams, errors) with their time_s."""
        return [dict(e) for e in self._events]

    def stages_steps(self) -> list[tuple[StageRecord, int]]:
        """Number of steps whose strike falls inside each stage."""
        strikes = self.steps["strike_s"]
        return [(st, int(np.count_nonzero((strikes >= st.start_s) & (strikes < st.end_s))))
                for st in self.stages]

    # ---- loading and checking ----------------------------------------------------------------
    def _load_all(self) -> None:
        """Read this file, then (for the first file of a set) every later part, joined on."""
        for part in self._parts:
            part.close()
        self._parts = []
        self._load()
        self._part_info = [self._own_part_info()]
        self._gaps: list[RecordingGap] = []
        if not self._with_parts or naming.split_part(self.path)[1] != 1:
            return
        for number, path in naming.later_parts(self.path):
            try:
                part = Session(path, allow_damaged=True, parts=False)
            except ArchiveError as exc:
                self._problem(path.name, f"part {number} of the session cannot be read ({exc}); left out")
                continue
            self._parts.append(part)
            self._join(part, number)

    def _own_part_info(self) -> PartInfo:
        firsts = [float(sd.timestamps[0]) for sd in self._streams.values() if sd.n_samples]
        lasts = [float(sd.timestamps[-1]) for sd in self._streams.values() if sd.n_samples]
        n = sum(sd.n_samples for sd in self._streams.values())
        number = self._attrs.get(L.PART, 1)
        number = int(number) if isinstance(number, (int, np.integer)) else 1
        return PartInfo(number, self.path, self._file_status(),
                        min(firsts, default=math.nan), max(lasts, default=math.nan), n)

    def _join(self, part: Session, number: int) -> None:
        """Append a later part's data to this set's (a sample already held is not taken twice)."""
        where = part.path.name
        if part.participant_id != self.participant_id or \
                _text(part._attrs.get(L.FIRST_FILE)) not in ("", self.path.name):
            self._problem(where, f"part {number} belongs to another session (participant "
                          f"{part.participant_id!r}, first file {_text(part._attrs.get(L.FIRST_FILE))!r}); "
                          "left out")
            return
        self._problems += [f"{where}: {p}" for p in part._problems + part._header_problems]
        self._part_info.append(part._own_part_info())
        ends: list[tuple[float, float]] = []
        for sid, sd in part._streams.items():
            old = self._streams.get(sid)
            if old is None:
                self._streams[sid] = sd
                continue
            keep = np.ones(sd.n_samples, dtype=bool)
            if sd.spec.rate_hz > 0 and old.n_samples:
                keep = sd.timestamps_raw > old.timestamps_raw[-1]
                if keep.any() and old.n_samples:
                    hole = float(sd.timestamps[keep][0] - old.timestamps[-1]) - 1.0 / sd.spec.rate_hz
                    ends.append((float(old.timestamps[-1]), max(0.0, hole)))
            data = (list(old.data) + [d for d, k in zip(sd.data, keep, strict=True) if k]
                    if isinstance(old.data, list) else np.concatenate([old.data, sd.data[keep]]))
            self._streams[sid] = StreamData(
                old.key, old.spec, np.concatenate([old.timestamps, sd.timestamps[keep]]),
                np.concatenate([old.timestamps_raw, sd.timestamps_raw[keep]]), data,
                np.concatenate([old.clock_offsets, sd.clock_offsets]), old.late)
        if ends:
            start, length = max(ends, key=lambda e: e[1])
        else:
            prev, info = self._part_info[-2], self._part_info[-1]
            start, length = prev.last_s, max(0.0, info.first_s - prev.last_s)
        self._gaps.append(RecordingGap(number - 1, start, length))
        self._steps = np.concatenate([self._steps, part._steps])
        for name in (L.MARKERS, L.STAGES, L.CALIBRATION, L.EVENTS):
            ts, texts = self._logs[name]
            pts, ptexts = part._logs[name]
            self._logs[name] = (np.concatenate([ts, pts]), texts + ptexts)
        offset = len(self._video_segments)
        self._video_segments += [dataclasses.replace(v, row=v.row + offset) for v in part._video_segments]
        for attr in ("_video_frames", "_video_frames_raw"):
            rows = getattr(part, attr).copy()
            rows["segment"] += offset
            setattr(self, attr, np.concatenate([getattr(self, attr), rows]))
        self._stages += part._stages
        self._calibration += part._calibration
        self._events += part._events

    def _load(self) -> None:
        assert self._file is not None
        self._problems: list[str] = []
        f = self._file
        groups = {}
        for name in (L.STREAMS, L.STEPS, L.MARKERS, L.STAGES, L.CALIBRATION, L.EVENTS):
            try:
                g = f.get(name)
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                self._problem(name, f"the group cannot be opened ({exc}); left out")
                g = None
            else:
                if g is None:
                    self._problem(name, "the required group is missing; left out")
                elif not isinstance(g, h5py.Group):
                    self._problem(name, "expected a group, found a dataset; left out")
                    g = None
            groups[name] = g
        self._streams: dict[str, StreamData] = {}
        if groups[L.STREAMS] is not None:
            try:
                keys = list(groups[L.STREAMS].keys())
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                self._problem(L.STREAMS, f"the list of streams cannot be read ({exc}); no stream read")
                keys = []
            streams = groups[L.STREAMS]
            for key in keys:
                sd = self._guard(f"{L.STREAMS}/{key}", lambda k=key: self._read_stream(k, streams[k]))
                if sd is None:
                    continue
                if sd.spec.source_id in self._streams:
                    self._problem(f"{L.STREAMS}/{key}", f"a second stream with source_id "
                                  f"{sd.spec.source_id!r}; left out")
                    continue
                self._streams[sd.spec.source_id] = sd
        self._steps = empty_steps(0)
        if groups[L.STEPS] is not None:
            steps = self._guard(L.STEPS, lambda: self._read_steps(groups[L.STEPS]))
            if steps is not None:
                self._steps = steps
        self._logs: dict[str, tuple[np.ndarray, list[str]]] = {}
        for name in (L.MARKERS, L.STAGES, L.CALIBRATION, L.EVENTS):
            log = None
            if groups[name] is not None:
                log = self._guard(name, lambda n=name: self._read_log(n, groups[n]))
            self._logs[name] = log if log is not None else (np.empty(0), [])
        self._video_segments: list[VideoSegment] = []
        self._video_frames = np.empty(0, dtype=L.FRAME_DTYPE)
        self._video_frames_raw = self._video_frames
        if self._version >= L.FIRST_VIDEO_VERSION:
            self._guard(L.VIDEO, self._read_video)
        self._stages: list[StageRecord] = self._parse_log(
            L.STAGES, lambda obj, t: StageRecord.from_marker(obj))
        self._calibration: list[dict[str, Any]] = self._parse_log(L.CALIBRATION, lambda obj, t: obj)
        self._events: list[dict[str, Any]] = self._parse_log(
            L.EVENTS, lambda obj, t: {**obj, "time_s": float(t)})

    def _problem(self, where: str, what: str) -> None:
        self._problems.append(f"{where}: {what}")

    def _guard(self, where: str, read: Any) -> Any:
        """Run one group's reading; an HDF5 or format error becomes a problem, never a traceback."""
        try:
            return read()
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError,
                json.JSONDecodeError, LabsuiteError) as exc:
            self._problem(where, f"cannot be read ({type(exc).__name__}: {exc}); left out")
            return None

    def _parse_log(self, name: str, make: Any) -> list[Any]:
        ts, texts = self._logs[name]
        out = []
        for i, (t, text) in enumerate(zip(ts, texts, strict=True)):
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                out.append(make(obj, t))
            except (ValueError, TypeError, LabsuiteError) as exc:
                self._problem(name, f"row {i} is not a valid record ({exc}); rows {i}.. left out")
                break
        return out

    def _read_stream(self, key: str, g: Any) -> StreamData | None:
        where = f"{L.STREAMS}/{key}"
        if not isinstance(g, h5py.Group):
            raise ValueError("expected a stream group")
        late = bool(g.attrs.get("late_slot", False))
        if late:
            specs = self._read_texts(where, g, "spec", None)
            if not specs:
                return None  # an unused spare slot
            spec = L.spec_from_json(specs[0])
        else:
            spec = L.spec_from_json(_text(g.attrs["spec_json"]))
        ts_ds = _dataset(g, L.TIME_STAMPS, 1)
        limits = [ts_ds.shape[0]]
        data_ds = None
        if spec.dtype == "string":
            text_end = _dataset(g, L.TEXT_END, 1)
            limits.append(text_end.shape[0])
        else:
            data_ds = _dataset(g, L.TIME_SERIES, 1 if late else 2)
            if late:
                limits.append(data_ds.shape[0] // max(1, spec.channel_count))
            else:
                if data_ds.shape[1] != spec.channel_count:
                    raise ValueError(f"time_series has {data_ds.shape[1]} channels, the stream "
                                     f"description {spec.channel_count}")
                limits.append(data_ds.shape[0])
        n = self._trusted(where, g, min(limits))
        n = self._on_disk(where, n, ts_ds)
        raw, n = self._read_rows(where, ts_ds, n)
        raw = np.asarray(raw, dtype=np.float64)
        if spec.dtype == "string":
            ends, text = self._read_text_raw(where, g, "text", n)
            n = self._verify(where, g, min(n, len(ends)), {L.TIME_STAMPS: (raw, 1)}, (ends, text))
            data: Any = L.decode_text_log(text, ends[:n])
        elif late:
            assert data_ds is not None
            c = spec.channel_count
            n = self._on_disk(where, n, data_ds, per_row=c)
            flat, got = self._read_rows(where, data_ds, n * c)
            n = self._verify(where, g, got // c, {L.TIME_STAMPS: (raw, 1), L.TIME_SERIES: (flat, c)})
            data = np.asarray(flat[: n * c]).reshape(n, c).astype(spec.numpy_dtype)
        else:
            assert data_ds is not None
            n = self._on_disk(where, n, data_ds)
            data, n = self._read_rows(where, data_ds, n)
            n = self._verify(where, g, n, {L.TIME_STAMPS: (raw, 1), L.TIME_SERIES: (data, 1)})
            self._check_description(where, g, spec)
        # Samples of a regular stream are stamped in order; irregular streams need not be (the
        # steps of two belts are published as each belt's step completes, stamped at its strike).
        n = self._check_times(where, raw[:n], n, ordered=spec.rate_hz > 0)
        data = data[:n]
        raw = raw[:n]
        co = self._read_clock(where, g)
        return StreamData(key, spec, corrected_times(raw, co), raw, data, co, late)

    def _read_video(self) -> None:
        """The video group (format 3): segment records, then the frame table up to its first bad row."""
        assert self._file is not None
        for name in (L.VIDEO, L.VIDEO_SEGMENTS, L.VIDEO_FRAMES):
            if not isinstance(self._file.get(name), h5py.Group):
                self._problem(name, "the required group is missing (format 3 writes it); no video "
                              "frames read")
                return
        ts, texts = self._read_log(L.VIDEO_SEGMENTS, self._file[L.VIDEO_SEGMENTS])
        for i, (t, text) in enumerate(zip(ts, texts, strict=True)):
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                camera, part, file = obj["camera"], obj["segment"], obj["file"]
                if not isinstance(camera, str) or not isinstance(file, str) or \
                        isinstance(part, bool) or not isinstance(part, int) or part < 1:
                    raise ValueError("expected camera and file as text and segment >= 1")
                first = obj.get("first_frame_index", -1)
                first = int(first) if isinstance(first, int) and not isinstance(first, bool) else -1
            except (ValueError, TypeError, KeyError) as exc:
                self._problem(L.VIDEO_SEGMENTS, f"row {i} is not a valid segment record ({exc}); rows "
                              f"{i}.. left out")
                break
            try:
                path: Path | None = resolve_stored(self.path, file)
            except ArchiveError as exc:
                self._problem(L.VIDEO_SEGMENTS, f"row {i}: {exc}")
                path = None
            self._video_segments.append(VideoSegment(i, camera, part, file, path, first, float(t), obj))
        g = self._file[L.VIDEO_FRAMES]
        table = _dataset(g, "table", 1)
        if table.dtype != L.FRAME_DTYPE:
            raise ValueError(f"video/frames/table has dtype {table.dtype}, expected {L.FRAME_DTYPE}")
        n = self._trusted(L.VIDEO_FRAMES, g, table.shape[0])
        n = self._on_disk(L.VIDEO_FRAMES, n, table)
        rows, n = self._read_rows(L.VIDEO_FRAMES, table, n)
        n = self._verify(L.VIDEO_FRAMES, g, n, {"table": (rows, 1)})
        rows = np.array(rows[:n], dtype=L.FRAME_DTYPE)
        bad = (rows["segment"] < 0) | (rows["segment"] >= len(self._video_segments)) | \
            (rows["position"] < 0) | ~np.isfinite(rows["time_s"])
        if bad.any():
            k = int(np.argmax(bad))
            self._problem(L.VIDEO_FRAMES, f"row {k} names segment {int(rows['segment'][k])} (of "
                          f"{len(self._video_segments)}), position {int(rows['position'][k])}, time "
                          f"{float(rows['time_s'][k])!r}: rows {k}..{n - 1} left out")
            rows = rows[:k]
        self._video_frames_raw = rows.copy()
        # Frame times on this machine's clock: each camera's own measured clock offsets.
        for seg_rows in _group_by_camera(rows, self._video_segments):
            cam = self._video_segments[int(rows["segment"][seg_rows[0]])].camera
            sd = self._streams.get(cam)
            if sd is not None:
                rows["time_s"][seg_rows] = corrected_times(rows["time_s"][seg_rows], sd.clock_offsets)
        self._video_frames = rows

    def _trusted(self, where: str, g: Any, n: int) -> int:
        """Rows the writer confirmed complete (it writes the count after the rows reached the disk)."""
        if L.COMMITTED not in g:
            self._problem(where, "has no 'committed' row count; its rows are read unconfirmed")
            return n
        c = np.asarray(_dataset(g, L.COMMITTED, 1)[()])
        if c.shape != (1,) or c.dtype.kind not in "iu":
            raise ValueError(f"'committed' should be one integer, found shape {c.shape} {c.dtype}")
        committed = int(c[0])
        if committed < 0 or committed > n:
            self._problem(where, f"'committed' says {committed} rows but the datasets hold {n}; the "
                          f"count is damaged: {max(0, min(n, committed))} rows read")
        return max(0, min(n, committed))

    def _on_disk(self, where: str, n: int, ds: Any, per_row: int = 1) -> int:
        """Rows whose chunks lie inside the file (only a file shorter than recorded can lack some)."""
        size = self.probe.size_bytes
        itemsize = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
        if n * per_row * itemsize > size and not self.probe.open_for_write:
            self._problem(where, f"{ds.name.rsplit('/', 1)[-1]} claims {n} rows, more than the "
                          f"{size}-byte file can hold: damaged; 0 rows read")
            return 0
        if not self.probe.truncated or n == 0:
            return n
        # Walk the chunks in order and stop at the first one HDF5 cannot locate (its index block
        # lies in the missing part) or that lies (partly) past the end: rows before it are whole.
        rows = n * per_row
        step = ds.chunks[0] if ds.chunks else rows
        zeros = (0,) * (ds.ndim - 1)
        start = 0
        while start < rows:
            try:
                info = ds.id.get_chunk_info_by_coord((start, *zeros))
            except (OSError, RuntimeError, ValueError):
                break
            if info.byte_offset is None or info.byte_offset + info.size > size:
                break
            start += step
        rows = min(rows, start)
        kept = rows // per_row
        if kept < n:
            self._problem(where, f"rows {kept}..{n - 1} of {ds.name.rsplit('/', 1)[-1]} lay in the "
                          f"missing end of the file; {kept} of {n} rows read")
        return kept

    def _read_rows(self, where: str, ds: Any, n: int) -> tuple[np.ndarray, int]:
        """Read ds[:n]; if HDF5 fails part-way, read chunk by chunk and keep the readable prefix."""
        if n == 0:
            return ds[:0], 0
        try:
            return ds[:n], n
        except (OSError, RuntimeError, ValueError):
            pass
        step = ds.chunks[0] if ds.chunks else n
        parts, got = [], 0
        while got < n:
            try:
                parts.append(ds[got:min(n, got + step)])
            except (OSError, RuntimeError, ValueError) as exc:
                self._problem(where, f"rows {got}.. of {ds.name.rsplit('/', 1)[-1]} cannot be read "
                              f"(HDF5: {exc}); {got} of {n} rows read")
                break
            got += len(parts[-1])
        return (np.concatenate(parts) if parts else ds[:0]), got

    def _check_times(self, where: str, ts: np.ndarray, n: int, *, ordered: bool) -> int:
        bad = ~np.isfinite(ts)
        if ordered and len(ts) > 1:
            back = np.zeros(len(ts), dtype=bool)
            back[1:] = np.diff(ts) < 0
            bad |= back
        if not bad.any():
            return n
        k = int(np.argmax(bad))
        why = f"is not a finite number ({float(ts[k])!r})" if not np.isfinite(ts[k]) else \
            f"goes back in time ({float(ts[k - 1])!r} s, then {float(ts[k])!r} s)"
        self._problem(where, f"timestamp of row {k} {why}: rows {k}..{n - 1} left out, {k} of {n} "
                      "rows read")
        return k

    def _read_texts(self, where: str, g: Any, prefix: str, n: int | None) -> list[str]:
        ends, raw = self._read_text_raw(where, g, prefix, n)
        return L.decode_text_log(raw, ends)

    def _read_text_raw(self, where: str, g: Any, prefix: str, n: int | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(end offsets, bytes) of up to ``n`` text entries whose bytes are all there."""
        data_ds = _dataset(g, f"{prefix}_data", 1)
        end_ds = _dataset(g, f"{prefix}_end", 1)
        count = end_ds.shape[0] if n is None else min(n, end_ds.shape[0])
        ends, count = self._read_rows(where, end_ds, count)
        ends = np.asarray(ends[:count], dtype=np.int64)
        nbytes = data_ds.shape[0]
        bad = (ends < 0) | (ends > nbytes)
        bad[1:] |= np.diff(ends) < 0
        if bad.any():
            k = int(np.argmax(bad))
            live_tail = self.probe.open_for_write and not (ends[k:] < 0).any() and \
                (np.diff(ends[k - 1:]) >= 0 if k else np.array([True])).all()
            if not live_tail:  # a live writer may be between the two appends: not damage
                self._problem(where, f"{prefix}_end row {k} points outside its text ({ends[k]} of "
                              f"{nbytes} bytes): rows {k}.. left out")
            ends = ends[:k]
        used = int(ends[-1]) if len(ends) else 0
        raw, got = self._read_rows(where, data_ds, used)
        keep = int(np.searchsorted(ends, got, side="right"))
        return ends[:keep], np.asarray(raw, dtype=np.uint8)

    def _read_log(self, name: str, g: Any) -> tuple[np.ndarray, list[str]]:
        ts_ds = _dataset(g, L.TIME_STAMPS, 1)
        n = self._trusted(name, g, min(ts_ds.shape[0], _dataset(g, L.TEXT_END, 1).shape[0]))
        n = self._on_disk(name, n, ts_ds)
        ts, n = self._read_rows(name, ts_ds, n)
        ts = np.asarray(ts, dtype=np.float64)
        ends, text = self._read_text_raw(name, g, "text", n)
        n = self._verify(name, g, min(n, len(ends)), {L.TIME_STAMPS: (ts, 1)}, (ends, text))
        n = self._check_times(name, ts[:n], n, ordered=False)
        return ts[:n], L.decode_text_log(text, ends[:n])

    def _read_steps(self, g: Any) -> np.ndarray:
        table = _dataset(g, "table", 1)
        names = table.dtype.names or ()
        if "strike_s" not in names or "foot" not in names:
            raise ValueError(f"steps/table has fields {list(names)[:5]}..., expected the step record")
        n = self._trusted(L.STEPS, g, table.shape[0])
        n = self._on_disk(L.STEPS, n, table)
        rows, n = self._read_rows(L.STEPS, table, n)
        n = self._verify(L.STEPS, g, n, {"table": (rows, 1)})
        out = empty_steps(n)
        for name in STEP_DTYPE.names or ():
            if name in names:  # a column the file predates stays NaN
                out[name] = rows[name][:n]
        return out

    def _verify(self, where: str, g: Any, n: int, rows: dict[str, tuple[np.ndarray, int]],
                text: tuple[np.ndarray, np.ndarray] | None = None) -> int:
        """Check the first ``n`` rows against the writer's per-flush CRC-32s; return the rows kept.

        Rows before the first mismatch are kept. ``rows``: dataset name -> (array, values per row).
        """
        if L.CHECKSUMS not in g:
            if self._version >= 2:
                self._problem(where, "has no checksums (format 2 writes them); its rows cannot be "
                              "verified")
            return n
        ck, k = self._read_rows(where, _dataset(g, L.CHECKSUMS, 2), _dataset(g, L.CHECKSUMS, 2).shape[0])
        ck = np.asarray(ck[:k], dtype=np.int64)
        start = 0
        for end, crc in ck:
            end = int(end)
            if end > n:
                break  # rows the writer had not confirmed, or already left out
            if end <= start:
                self._problem(where, f"the checksum table is damaged (row count {end} after {start}); "
                              f"rows {start}.. left out")
                return start
            parts = {name: arr[start * per:end * per] for name, (arr, per) in rows.items()}
            if text is not None:
                ends, raw = text
                b0 = int(ends[start - 1]) if start else 0
                parts[L.TEXT_END] = ends[start:end]
                parts[L.TEXT_DATA] = raw[b0:int(ends[end - 1])]
            if L.row_crc32(parts) != int(crc) & 0xFFFFFFFF:
                self._problem(where, f"rows {start}..{end - 1} do not match their checksum (bytes "
                              f"changed after they were written): rows {start}.. left out, {start} "
                              f"of {n} rows read")
                return start
            start = end
        if start < n and not self.probe.open_for_write and len(ck):
            self._problem(where, f"rows {start}..{n - 1} have no checksum: left out")
            return start
        return n

    def _check_description(self, where: str, g: Any, spec: StreamSpec) -> None:
        """The stream's description is stored twice (attributes and spec_json): they must agree."""
        got = {"name": spec.name, "kind": spec.kind, "source_id": spec.source_id, "dtype": spec.dtype,
               "channel_labels": json.dumps(list(spec.labels))}
        for key, value in got.items():
            if key in g.attrs and _text(g.attrs[key]) != value:
                self._problem(where, f"attribute {key!r} is {_text(g.attrs[key])!r} but the stored "
                              f"description says {value!r}: the description is damaged")
        if "rate_hz" in g.attrs and float(g.attrs["rate_hz"]) != float(spec.rate_hz):
            self._problem(where, f"attribute 'rate_hz' is {float(g.attrs['rate_hz'])} but the stored "
                          f"description says {spec.rate_hz}: the description is damaged")

    def _read_clock(self, where: str, g: Any) -> np.ndarray:
        if L.CLOCK_OFFSETS not in g:
            self._problem(where, "has no clock_offsets; timestamps are used uncorrected")
            return np.empty((0, 2))
        ds = _dataset(g, L.CLOCK_OFFSETS, 2)
        n = self._on_disk(where, ds.shape[0], ds)
        co, n = self._read_rows(where, ds, n)
        return np.asarray(co[:n], dtype=np.float64).reshape(-1, 2)


def open_session(path: str | os.PathLike[str], *, allow_damaged: bool = False,
                 parts: bool = True) -> Session:
    """Open a session file for reading (complete, cut short, or still being written).

    A damaged file raises :class:`DamagedFileError` unless ``allow_damaged``. A session recorded
    in parts (``<first>.part2.h5`` ...) opens as one, from any of its files; ``parts=False``
    reads the one file alone.
    """
    return Session(path, allow_damaged=allow_damaged, parts=parts)


def stream_specs(path: str | os.PathLike[str]) -> list[StreamSpec]:
    """The stream descriptions a session file holds, read without its data.

    A restarted recorder continues with them. ArchiveError when the file cannot be opened;
    unreadable groups are skipped.
    """
    path = Path(path)
    probe = probe_file(path)
    try:
        f = open_h5(path, swmr=probe.open_for_write or probe.truncated)
    except OSError as exc:
        raise ArchiveError(f"cannot open session file {path}: HDF5 says: {exc}") from None
    specs = []
    with f:
        streams = f.get(L.STREAMS)
        for key in list(streams.keys()) if isinstance(streams, h5py.Group) else []:
            try:
                g = streams[key]
                if bool(g.attrs.get("late_slot", False)):
                    ends = np.asarray(g[f"{L.LATE_SPEC}_end"][()], dtype=np.int64)
                    if not len(ends):
                        continue  # an unused spare slot
                    text = L.decode_text_log(g[f"{L.LATE_SPEC}_data"][: int(ends[0])], ends[:1])[0]
                else:
                    text = _text(g.attrs["spec_json"])
                specs.append(L.spec_from_json(text))
            except (OSError, RuntimeError, KeyError, ValueError, TypeError, LabsuiteError) as exc:
                log.warning("%s: stream group %s unreadable (%s); skipped", path, key, exc)
    return specs


def _group_by_camera(rows: np.ndarray, segments: list[VideoSegment]) -> list[np.ndarray]:
    """Indices of ``rows`` per camera (rows of one camera share its clock offsets)."""
    if len(rows) == 0:
        return []
    cams = np.array([segments[int(k)].camera for k in rows["segment"]], dtype=object)
    return [np.flatnonzero(cams == cam) for cam in dict.fromkeys(cams.tolist())]


def _dataset(g: Any, name: str, ndim: int) -> Any:
    """Return ``g[name]`` if it is a dataset of ``ndim`` dimensions; ValueError naming it otherwise."""
    if name not in g:
        raise KeyError(f"dataset {name!r} is missing")
    ds = g[name]
    if not isinstance(ds, h5py.Dataset) or ds.ndim != ndim:
        raise ValueError(f"{name!r} should be a {ndim}-D dataset")
    return ds


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def _datasets(f: h5py.File) -> list[h5py.Dataset]:
    out: list[h5py.Dataset] = []
    f.visititems(lambda _n, obj: out.append(obj) if isinstance(obj, h5py.Dataset) else None)
    return out
