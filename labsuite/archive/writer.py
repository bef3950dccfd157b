"""SessionWriter: one crash-safe HDF5 file per session, appended by its own thread in SWMR mode.

Sits at the end of the data flow: acquisition readers (and the recorder) hand it chunks through a
queue and never block on HDF5; the writer thread appends them and flushes at least once a second,
so a kill -9 loses at most the last flush interval and a second process can read the file live.
The layout is in labsuite.archive.layout and docs/archive.md.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import platform
import queue
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from labsuite import __version__
from labsuite.archive import layout as L
from labsuite.archive.integrity import WriterLock
from labsuite.archive.naming import claim
from labsuite.errors import ArchiveError, ConfigError, DeviceError, LabsuiteError
from labsuite.ids import check_participant_id
from labsuite.markers import StageEnd, from_fields
from labsuite.stages import StageRecord
from labsuite.steps import STEP_DTYPE, STEP_FIELDS
from labsuite.streams.contracts import KIND_MARKERS, StreamSpec
from labsuite.streams.messages import decode

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_STOP = object()


@dataclass(frozen=True)
class WriterSettings:
    """How the writer stores data.

    ``flush_interval_s``: time between flushes (at most 1 s: a crash loses at most this much).
    ``compression``: None (default), "gzip" (readable everywhere) or "lzf" (h5py only). Measured on
    the simulated lab (scripts/bench_archive.py): sensor noise hardly compresses, and appending to
    compressed chunks at every flush rewrites them to new file space, so gzip made the file 1.9x
    the raw data (and a flush took up to 1.2 s) while no compression stays at 1.0x.
    ``late_stream_slots``: spare stream groups for streams that appear after the file went SWMR.
    ``min_free_mb``: free disk space required at start on top of the expected session size.
    """

    flush_interval_s: float = 0.5
    compression: str | None = None
    compression_level: int = 1
    late_stream_slots: int = 8
    min_free_mb: float = 64.0

    def __post_init__(self) -> None:
        if not (0.01 <= self.flush_interval_s <= 1.0):
            raise ConfigError(f"flush_interval_s: expected 0.01..1.0 s (flush at least once a second), "
                              f"got {self.flush_interval_s!r}")
        if self.compression not in (None, "gzip", "lzf"):
            raise ConfigError(f"compression: expected None, 'gzip' or 'lzf', got {self.compression!r}")
        if not (0 <= self.compression_level <= 9):
            raise ConfigError(f"compression_level: expected 0..9, got {self.compression_level!r}")
        if not (0 <= self.late_stream_slots <= 64):
            raise ConfigError(f"late_stream_slots: expected 0..64, got {self.late_stream_slots!r}")
        if not (self.min_free_mb >= 0 and math.isfinite(self.min_free_mb)):
            raise ConfigError(f"min_free_mb: expected a finite number >= 0, got {self.min_free_mb!r}")


@dataclass(frozen=True)
class StreamHandle:
    """What :meth:`SessionWriter.add_stream` returns; pass it to ``append``/``add_clock_offset``."""

    key: str
    spec: StreamSpec
    late: bool = False


@dataclass
class WriterStats:
    """Counters of the writer thread (read from any thread; values are snapshots)."""

    samples_written: dict[str, int] = field(default_factory=dict)  # per stream key, flushed
    samples_queued: int = 0  # handed to the writer, not yet flushed
    flushes: int = 0
    last_flush_lsl_s: float = math.nan
    max_flush_s: float = 0.0
    cpu_s: float = 0.0  # CPU time of the writer thread
    error: str = ""


def expected_bytes_per_s(specs: Sequence[StreamSpec]) -> float:
    """Return the raw data rate of ``specs`` (samples, timestamps), bytes/s, before compression."""
    total = 0.0
    for s in specs:
        rate = s.rate_hz if s.rate_hz > 0 else 10.0
        item = 64 if s.dtype == "string" else s.numpy_dtype.itemsize
        total += rate * (8 + item * s.channel_count)
    return total


class SessionWriter:
    """Write one session file. Create it, ``add_stream`` the streams, then append from any thread.

    The file is created (and free space checked) in the constructor, so an unwritable path is an
    :class:`ArchiveError` at session start. Streams added before :meth:`start` (or the first append)
    get their own groups; a stream added later goes to one of ``late_stream_slots`` spare groups
    (HDF5 forbids new objects once readers may attach). When the spares are used up the stream is
    refused with an ArchiveError and an ``events`` entry, never dropped silently.

    ``stages_from_markers`` (default True) builds the ``stages`` table from every ``stage_end``
    marker; ``labsuite recover`` turns it off and copies the original table with
    :meth:`append_stage`. Extra keyword arguments become root attributes (str, int, float or bool).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        participant_id: str,
        mass_kg: float | None = None,
        protocol_text: str | None = None,
        protocol_path: str | os.PathLike[str] | None = None,
        session_number: int | None = None,
        settings: WriterSettings | None = None,
        expected_rate_bytes_per_s: float | None = None,
        expected_duration_s: float = 3600.0,
        on_event: Callable[[str, str], None] | None = None,
        stages_from_markers: bool = True,
        **extra_attrs: Any,
    ) -> None:
        self.path = Path(path)
        self.settings = settings or WriterSettings()
        self._on_event = on_event
        self._stages_from_markers = stages_from_markers
        check_participant_id(participant_id, "participant_id")
        if mass_kg is not None and not (math.isfinite(mass_kg) and 0 < mass_kg < 500):
            raise ConfigError(f"mass_kg: expected a body mass in kg (0..500), got {mass_kg!r}")
        if session_number is not None and int(session_number) < 0:
            raise ConfigError(f"session_number: expected an integer >= 0, got {session_number!r}")
        if protocol_text is None and protocol_path is not None:
            try:
                protocol_text = Path(protocol_path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"protocol file {protocol_path}: cannot read it as UTF-8 text "
                                  f"({exc})") from None
        for key, value in extra_attrs.items():
            if not isinstance(value, (str, int, float, bool, np.integer, np.floating)):
                raise ConfigError(f"session attribute {key!r}: expected str, int, float or bool, "
                                  f"got {type(value).__name__}")
        self._check_target(expected_rate_bytes_per_s, expected_duration_s)

        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._handles: dict[str, StreamHandle] = {}
        self._late_free = [f"{L.LATE_PREFIX}{i}" for i in range(self.settings.late_stream_slots)]
        self._started = False
        self._closed = False
        self._error: ArchiveError | None = None
        self._thread: threading.Thread | None = None
        self._stats = WriterStats()
        self._queued = 0
        self._targets: dict[str, _Target] = {}
        self._writer_lock: WriterLock | None = None

        # The name is claimed with O_EXCL first (labsuite/archive/naming.py): of two writers given
        # one name only one gets it, whatever HDF5's own file locking does.
        claim(self.path)
        try:
            self._file = h5py.File(self.path, "w", libver="latest")
        except (OSError, ValueError) as exc:
            self.path.unlink(missing_ok=True)  # ours: claimed empty a moment ago
            raise ArchiveError(f"cannot create session file {self.path}: {exc}. Check that the folder "
                               "exists and is writable") from None
        try:
            self._write_header(participant_id, mass_kg, protocol_text, protocol_path, session_number,
                               extra_attrs)
            self._create_fixed_groups()
        except Exception:
            self._file.close()
            raise

    # ---- setup (caller thread, before SWMR) ------------------------------------------------
    def _check_target(self, rate: float | None, duration_s: float) -> None:
        folder = self.path.parent
        if not folder.is_dir():
            raise ArchiveError(f"cannot create session file {self.path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise ArchiveError(f"cannot create session file {self.path}: folder {folder} is not writable")
        free = shutil.disk_usage(folder).free
        need = self.settings.min_free_mb * _MIB + (rate or 0.0) * max(duration_s, 0.0)
        if free < need:
            raise ArchiveError(
                f"not enough free space for session file {self.path}: {free / _MIB:.0f} MB free on "
                f"{folder}, a {duration_s:.0f} s session at {(rate or 0) / 1024:.0f} kB/s needs about "
                f"{need / _MIB:.0f} MB (incl. {self.settings.min_free_mb:.0f} MB margin); free space or "
                "record elsewhere")

    def _write_header(self, participant_id: str, mass_kg: float | None, protocol_text: str | None,
                      protocol_path: Any, session_number: int | None,
                      extra: Mapping[str, Any]) -> None:
        import numba
        import pylsl

        a = self._file.attrs
        a["format"] = L.FORMAT_NAME
        a["format_version"] = L.FORMAT_VERSION
        a["participant_id"] = participant_id
        a["mass_kg"] = float(mass_kg) if mass_kg is not None else math.nan
        a["session_number"] = int(session_number) if session_number is not None else -1
        text = protocol_text or ""
        a["protocol_text"] = text
        a["protocol_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest() if text else ""
        a["protocol_path"] = str(protocol_path or "")
        a["labsuite_version"] = __version__
        a["pylsl_version"] = getattr(pylsl, "__version__", "")
        a["liblsl_version"] = str(pylsl.library_version())
        a["liblsl_info"] = str(pylsl.library_info())
        a["numpy_version"] = np.__version__
        a["numba_version"] = numba.__version__
        a["h5py_version"] = h5py.version.version
        a["hdf5_version"] = h5py.version.hdf5_version
        a["python_version"] = sys.version.split()[0]
        a["platform"] = platform.platform()
        a["host"] = socket.gethostname()
        a["start_time_utc"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
        a["start_lsl_s"] = float(pylsl.local_clock())
        # Fixed-size values rewritten in place at close (an attribute is never created under SWMR).
        a["complete"] = False
        a["end_lsl_s"] = math.nan
        a["flush_interval_s"] = self.settings.flush_interval_s
        for key, value in extra.items():
            if key in a or key in L.UNHASHED_ATTRS:
                raise ConfigError(f"session attribute {key!r}: reserved by the file format")
            a[key] = value
        # HDF5 does not checksum attribute values (they sit in an unchecked heap): this does.
        a[L.HEADER_SHA256] = L.header_digest(dict(a.items()))

    def _create_fixed_groups(self) -> None:
        f = self._file
        f.create_group(L.STREAMS)
        steps = f.create_group(L.STEPS)
        ds = steps.create_dataset("table", (0,), maxshape=(None,), chunks=(256,), dtype=STEP_DTYPE,
                                  **self._compression())
        ds.attrs["units"] = json.dumps({sf.name: sf.unit for sf in STEP_FIELDS})
        ds.attrs["descriptions"] = json.dumps({sf.name: sf.description for sf in STEP_FIELDS})
        self._targets["/steps"] = _Target(table=ds)
        self._targets["/steps"].committed = _committed(steps)
        self._targets["/steps"].checksums = _checksums(steps)
        for name, doc in ((L.MARKERS, "markers appended by the session process itself (LSL local clock)"),
                          (L.STAGES, "one JSON StageRecord per finished stage (from stage_end markers)"),
                          (L.CALIBRATION, "one JSON calibration record per call"),
                          (L.EVENTS, "writer and recorder events as JSON: gaps, late streams, errors")):
            g = f.create_group(name)
            g.attrs["description"] = doc
            self._targets["/" + name] = self._text_target(g, with_time=True)
        video = f.create_group(L.VIDEO)
        video.attrs["description"] = ("the session's video files (beside the session file) and the "
                                      "frame table: which frame of which file was taken when")
        seg = f.create_group(L.VIDEO_SEGMENTS)
        seg.attrs["description"] = ("one JSON object per video segment: camera, segment, file "
                                    "(relative to the session file's folder), first frame")
        self._targets["/" + L.VIDEO_SEGMENTS] = self._text_target(seg, with_time=True)
        frames = f.create_group(L.VIDEO_FRAMES)
        ds = frames.create_dataset("table", (0,), maxshape=(None,), chunks=(4096,), dtype=L.FRAME_DTYPE,
                                   **self._compression())
        ds.attrs["description"] = json.dumps({
            "frame_index": "the camera's frame index", "time_s": "raw LSL time of the frame, s",
            "segment": "row of video/segments (file and camera)",
            "position": "frame number within that file, from 0"})
        tgt = _Target(table=ds)
        tgt.committed = _committed(frames)
        tgt.checksums = _checksums(frames)
        self._targets["/" + L.VIDEO_FRAMES] = tgt
        self._video_segments = 0
        for slot in self._late_free:
            g = f[L.STREAMS].create_group(slot)
            g.attrs["late_slot"] = True
            tgt = self._text_target(g, with_time=True)
            tgt.flat = g.create_dataset(L.TIME_SERIES, (0,), maxshape=(None,), chunks=(8192,),
                                        dtype="f8", **self._compression())
            tgt.clock = g.create_dataset(L.CLOCK_OFFSETS, (0, 2), maxshape=(None, 2), chunks=(64, 2),
                                         dtype="f8", fillvalue=np.nan)
            tgt.spec_log = self._text_target(g, with_time=False, prefix="spec")
            self._targets[slot] = tgt

    def _compression(self) -> dict[str, Any]:
        c = self.settings.compression
        if c is None:
            return {}
        if c == "gzip":
            return {"compression": "gzip", "compression_opts": self.settings.compression_level,
                    "shuffle": True}
        return {"compression": "lzf", "shuffle": True}

    def _text_target(self, g: h5py.Group, *, with_time: bool, prefix: str = "text") -> _Target:
        tgt = _Target()
        if with_time:
            tgt.ts = g.create_dataset(L.TIME_STAMPS, (0,), maxshape=(None,), chunks=(1024,), dtype="f8",
                                      fillvalue=np.nan, **self._compression())
            tgt.committed = _committed(g)
            tgt.checksums = _checksums(g)
        tgt.text = g.create_dataset(f"{prefix}_data", (0,), maxshape=(None,), chunks=(16384,),
                                    dtype="u1", **self._compression())
        tgt.text_end = g.create_dataset(f"{prefix}_end", (0,), maxshape=(None,), chunks=(1024,),
                                        dtype="i8")
        return tgt

    # ---- public API -------------------------------------------------------------------------
    def add_stream(self, spec: StreamSpec) -> StreamHandle:
        """Register a stream; before :meth:`start` it gets its own group, later a spare slot.

        Raises ArchiveError when the source_id was added already or no spare slot is left.
        """
        with self._lock:
            self._raise_if_failed()
            if spec.source_id in self._handles:
                raise ArchiveError(f"{self.path}: stream {spec.source_id!r} was added already")
            if not self._started:
                key = L.stream_key(spec.source_id, set(self._file[L.STREAMS].keys()))
                self._targets[key] = self._create_stream_group(key, spec)
                handle = StreamHandle(key, spec)
            else:
                if not self._late_free:
                    msg = (f"stream {spec.source_id!r} appeared after recording started and all "
                           f"{self.settings.late_stream_slots} spare slots are used: it is NOT recorded "
                           "in this file; start a new recording to include it")
                    self._queue.put(("event", "late_stream_refused", msg, spec.source_id))
                    raise ArchiveError(f"{self.path}: {msg}")
                key = self._late_free.pop(0)
                handle = StreamHandle(key, spec, late=True)
                self._queue.put(("late_spec", key, L.spec_to_json(spec)))
                self._queue.put(("event", "late_stream",
                                 f"stream {spec.source_id!r} appeared after the start; stored in "
                                 f"{L.STREAMS}/{key}", spec.source_id))
            self._handles[spec.source_id] = handle
            return handle

    def handle(self, source_id: str) -> StreamHandle:
        """Return the handle of an added stream."""
        try:
            return self._handles[source_id]
        except KeyError:
            raise ArchiveError(f"{self.path}: no stream {source_id!r} was added") from None

    def start(self) -> None:
        """Switch the file to SWMR mode and start the writer thread (also done by the first append)."""
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._started:
            return
        self._raise_if_failed()
        self._file.swmr_mode = True
        self._file.flush()
        # HDF5 released its own lock for SWMR; hold ours until the file is closed, so readers can
        # tell this live file from one whose writer died (labsuite/archive/integrity.py).
        self._writer_lock = WriterLock(self.path)
        self._started = True
        self._thread = threading.Thread(target=self._run, name=f"SessionWriter {self.path.name}",
                                        daemon=True)
        self._thread.start()

    def append(self, handle: StreamHandle, timestamps_raw: np.ndarray, data: Any) -> None:
        """Queue samples of one stream: ``timestamps_raw`` (n,) LSL s, ``data`` (n, channels).

        Copies the arrays (callers may reuse their buffers) and returns at once.
        """
        ts = np.array(timestamps_raw, dtype=np.float64, copy=True).reshape(-1)
        spec = handle.spec
        n = len(ts)
        if spec.dtype == "string":
            rows = [list(r) if isinstance(r, (list, tuple, np.ndarray)) else [r] for r in data]
            if len(rows) != n or any(len(r) != spec.channel_count for r in rows):
                raise ArchiveError(f"stream {spec.source_id!r}: expected {n} samples of "
                                   f"{spec.channel_count} string channel(s)")
            texts = [str(r[0]) if len(r) == 1 else json.dumps([str(v) for v in r]) for r in rows]
            self._put(("text", handle.key, ts, texts, spec.kind == KIND_MARKERS), n)
            return
        arr = np.array(data, dtype=spec.numpy_dtype, copy=True)
        if arr.ndim == 1 and spec.channel_count == 1:
            arr = arr.reshape(-1, 1)
        if arr.shape != (n, spec.channel_count):
            raise ArchiveError(f"stream {spec.source_id!r}: expected data of shape ({n}, "
                               f"{spec.channel_count}) for {n} timestamps, got {arr.shape}")
        self._put(("data", handle.key, ts, arr), n)

    def add_clock_offset(self, handle: StreamHandle, local_time: float, offset: float) -> None:
        """Record one clock-offset measurement of a stream (corrected time = raw + offset)."""
        self._put(("clock", handle.key, float(local_time), float(offset)), 0)

    def append_steps(self, steps: np.ndarray) -> None:
        """Queue step records (a ``STEP_DTYPE`` structured array)."""
        arr = np.asarray(steps)
        if arr.dtype != STEP_DTYPE:
            raise ArchiveError(f"append_steps: expected a STEP_DTYPE structured array, got dtype {arr.dtype}")
        self._put(("steps", arr.copy().reshape(-1)), 0)

    def add_video_segment(self, record: Mapping[str, Any], first_time_s: float) -> int:
        """Store one video segment's record (JSON); returns its row, for the frames' ``segment``."""
        try:
            text = json.dumps(L._jsonable(dict(record)), separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ArchiveError(f"video segment record: not serialisable as JSON ({exc})") from None
        with self._lock:
            row = self._video_segments
            self._video_segments += 1
            self._put_locked(("text", "/" + L.VIDEO_SEGMENTS, np.array([float(first_time_s)]), [text],
                              False), 0)
        return row

    def append_video_frames(self, frames: np.ndarray) -> None:
        """Queue rows of the frame table (``layout.FRAME_DTYPE``)."""
        arr = np.asarray(frames)
        if arr.dtype != L.FRAME_DTYPE:
            raise ArchiveError(f"append_video_frames: expected a FRAME_DTYPE array, got dtype {arr.dtype}")
        self._put(("frames", arr.copy().reshape(-1)), 0)

    def append_marker(self, timestamp: float, text: str) -> None:
        """Queue a marker of this process (LSL local time); ``stage_end`` markers fill the stage table."""
        self._put(("text", "/" + L.MARKERS, np.array([float(timestamp)]), [str(text)], True), 0)

    def append_stage(self, record: StageRecord) -> None:
        """Queue a stage record as such (``labsuite recover`` copies them).

        A live session writes ``stage_end`` markers instead; the writer builds the records itself.
        """
        row = json.dumps(record.to_marker_fields(), separators=(",", ":"))
        end = record.end_s if math.isfinite(record.end_s) else math.nan
        self._put(("text", "/" + L.STAGES, np.array([end]), [row], False), 0)

    def set_calibration(self, record: Mapping[str, Any], *, timestamp: float | None = None) -> None:
        """Store a calibration record (plate matrix, zero offsets, verification...) as JSON."""
        import pylsl

        try:
            text = json.dumps(L._jsonable(dict(record)), separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ArchiveError(f"calibration record: not serialisable as JSON ({exc})") from None
        t = pylsl.local_clock() if timestamp is None else float(timestamp)
        self._put(("text", "/" + L.CALIBRATION, np.array([t]), [text], False), 0)

    def log_event(self, kind: str, detail: str, *, source_id: str = "",
                  timestamp: float | None = None) -> None:
        """Store a recorder/writer event (gap, reconnect, error) in the ``events`` log."""
        self._put(("event", kind, detail, source_id, timestamp), 0)

    def stats(self) -> WriterStats:
        """A snapshot of the writer's counters."""
        s = self._stats
        return WriterStats(dict(s.samples_written), self._queued, s.flushes, s.last_flush_lsl_s,
                           s.max_flush_s, s.cpu_s, s.error)

    @property
    def failed(self) -> ArchiveError | None:
        """The error that stopped recording, or None."""
        return self._error

    def close(self, timeout_s: float = 60.0) -> None:
        """Write what is queued, mark the file complete and close it; ArchiveError if writing failed."""
        with self._lock:
            if self._closed:
                return
            if not self._started and self._error is None:
                self._start_locked()
            self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise ArchiveError(f"{self.path}: the writer thread did not finish within {timeout_s} s; "
                                   "the file holds everything up to its last flush")
        if self._error is not None:
            raise self._error

    def __enter__(self) -> SessionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals ---------------------------------------------------------------------------
    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ArchiveError(f"{self.path}: the session writer is closed")

    def _put(self, op: tuple[Any, ...], n: int) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ArchiveError(f"{self.path}: the session writer is closed")
        if not self._started:
            with self._lock:
                self._start_locked()
        self._enqueue(op, n)

    def _put_locked(self, op: tuple[Any, ...], n: int) -> None:
        """:meth:`_put` for a caller that holds ``self._lock`` already."""
        self._raise_if_failed()
        self._start_locked()
        self._enqueue(op, n)

    def _enqueue(self, op: tuple[Any, ...], n: int) -> None:
        if n:
            with self._count_lock:
                self._queued += n
        self._queue.put(op)

    def _create_stream_group(self, key: str, spec: StreamSpec) -> _Target:
        g = self._file[L.STREAMS].create_group(key)
        a = g.attrs
        a["name"] = spec.name
        a["kind"] = spec.kind
        a["lsl_type"] = spec.lsl_type
        a["source_id"] = spec.source_id
        a["rate_hz"] = float(spec.rate_hz)
        a["dtype"] = spec.dtype
        a["channel_labels"] = json.dumps(list(spec.labels))
        a["channel_units"] = json.dumps(list(spec.units))
        a["channel_types"] = json.dumps([c.type for c in spec.channels])
        a["manufacturer"] = spec.manufacturer
        a["model"] = spec.model
        a["serial_number"] = spec.serial_number
        a["setup_json"] = json.dumps(L._jsonable(spec.setup))
        a["can_drop_samples"] = bool(spec.can_drop_samples)
        a["spec_json"] = L.spec_to_json(spec)
        rows = 256 if spec.rate_hz <= 0 else int(min(8192, max(64, 2 ** math.ceil(math.log2(spec.rate_hz)))))
        tgt = _Target()
        tgt.ts = g.create_dataset(L.TIME_STAMPS, (0,), maxshape=(None,), chunks=(rows,), dtype="f8",
                                  fillvalue=np.nan, **self._compression())
        tgt.committed = _committed(g)
        tgt.checksums = _checksums(g)
        if spec.dtype == "string":
            tgt.text = g.create_dataset("text_data", (0,), maxshape=(None,), chunks=(16384,), dtype="u1",
                                        **self._compression())
            tgt.text_end = g.create_dataset("text_end", (0,), maxshape=(None,), chunks=(1024,), dtype="i8")
        else:
            c = spec.channel_count
            tgt.data = g.create_dataset(L.TIME_SERIES, (0, c), maxshape=(None, c), chunks=(rows, c),
                                        dtype=spec.numpy_dtype, **self._compression())
        tgt.clock = g.create_dataset(L.CLOCK_OFFSETS, (0, 2), maxshape=(None, 2), chunks=(64, 2), dtype="f8",
                                     fillvalue=np.nan)
        return tgt

    def _emit(self, kind: str, detail: str) -> None:
        if self._on_event is not None:
            self._on_event(kind, detail)
        else:
            log.info("%s: %s", kind, detail)

    def _run(self) -> None:
        import pylsl

        interval = self.settings.flush_interval_s
        next_flush = time.monotonic() + interval
        stopping = False
        try:
            while not stopping:
                timeout = max(0.0, next_flush - time.monotonic())
                try:
                    op = self._queue.get(timeout=timeout)
                except queue.Empty:
                    op = None
                while op is not None:
                    if op is _STOP:
                        stopping = True
                        break
                    self._apply(op)
                    try:
                        op = self._queue.get_nowait()
                    except queue.Empty:
                        op = None
                if stopping or time.monotonic() >= next_flush:
                    self._flush(pylsl.local_clock())
                    next_flush = time.monotonic() + interval
            # Clean close: mark the file complete only after everything reached the disk.
            self._file.attrs["end_lsl_s"] = float(pylsl.local_clock())
            self._file.attrs["complete"] = True
            self._file.flush()
            self._stats.cpu_s = time.thread_time()
            self._file.close()
            self._release_lock()
        except Exception as exc:  # the writer thread must never die silently: report, keep the file
            log.exception("session writer failed")
            lost = sum(t.pending_n for t in self._targets.values())
            self._stats.cpu_s = time.thread_time()
            self._error = ArchiveError(
                f"writing {self.path} failed ({type(exc).__name__}: {exc}); recording stopped. The file "
                f"keeps everything flushed up to LSL time {self._stats.last_flush_lsl_s:.3f} "
                f"({sum(self._stats.samples_written.values())} samples); about {lost} buffered samples "
                "were not written")
            self._stats.error = str(self._error)
            self._emit("error", str(self._error))
            try:
                self._file.close()
            except (OSError, RuntimeError) as close_exc:
                log.warning("closing %s after the error also failed: %s", self.path, close_exc)
            self._release_lock()

    def _release_lock(self) -> None:
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None

    def _apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "data":
            _, key, ts, arr = op
            self._targets[key].add_data(ts, arr)
        elif kind == "text":
            _, key, ts, texts, is_marker = op
            self._targets[key].add_text(ts, texts)
            if is_marker and self._stages_from_markers:
                for t, text in zip(ts, texts, strict=True):
                    self._maybe_stage(float(t), text)
        elif kind == "clock":
            _, key, local_time, offset = op
            self._targets[key].clock_rows.append((local_time, offset))
        elif kind == "steps":
            self._targets["/steps"].add_table(op[1])
        elif kind == "frames":
            self._targets["/" + L.VIDEO_FRAMES].add_table(op[1])
        elif kind == "late_spec":
            _, key, text = op
            self._targets[key].spec_log.add_text(None, [text])  # type: ignore[union-attr]
        elif kind == "event":
            _, ev_kind, detail, source_id, *rest = op
            import pylsl

            t = rest[0] if rest and rest[0] is not None else pylsl.local_clock()
            text = json.dumps({"kind": ev_kind, "detail": detail, "source_id": source_id})
            self._targets["/" + L.EVENTS].add_text(np.array([float(t)]), [text])
            if ev_kind in ("late_stream_refused",):
                self._emit(ev_kind, detail)
        else:  # pragma: no cover - internal ops only
            raise AssertionError(f"unknown writer op {kind!r}")

    def _maybe_stage(self, t: float, text: str) -> None:
        try:
            obj = decode(text)
        except DeviceError:
            return  # kept verbatim in the markers; not a stage record
        if obj.get("event") != StageEnd.EVENT:
            return
        try:
            marker = from_fields(obj, strict=True)
        except LabsuiteError as exc:
            self._apply(("event", "bad_stage_marker", str(exc), ""))
            return
        assert isinstance(marker, StageEnd)
        rec = marker.record
        row = json.dumps(rec.to_marker_fields(), separators=(",", ":"))
        end = rec.end_s if math.isfinite(rec.end_s) else t
        self._targets["/" + L.STAGES].add_text(np.array([end]), [row])

    def _flush(self, now_lsl: float) -> None:
        t0 = time.perf_counter()
        written: dict[str, int] = {}
        for key, tgt in self._targets.items():
            n = tgt.write()
            if n and not key.startswith("/"):
                written[key] = n
        self._file.flush()
        # Only now say how many rows are complete: if the disk fills mid-flush, HDF5 may already have
        # grown a dataset whose new rows never reached the disk; readers trust this count.
        for tgt in self._targets.values():
            tgt.commit()
        self._file.flush()
        # Counted as written only once on disk and committed (progress displays rely on it).
        for key, n in written.items():
            self._stats.samples_written[key] = self._stats.samples_written.get(key, 0) + n
        with self._count_lock:
            self._queued -= sum(written.values())
        self._stats.flushes += 1
        self._stats.last_flush_lsl_s = now_lsl
        self._stats.max_flush_s = max(self._stats.max_flush_s, time.perf_counter() - t0)
        self._stats.cpu_s = time.thread_time()


class _Target:
    """Datasets of one stream (or table) and the samples waiting for the next flush."""

    def __init__(self, table: h5py.Dataset | None = None) -> None:
        self.ts: h5py.Dataset | None = None
        self.data: h5py.Dataset | None = None
        self.flat: h5py.Dataset | None = None
        self.text: h5py.Dataset | None = None
        self.text_end: h5py.Dataset | None = None
        self.clock: h5py.Dataset | None = None
        self.table = table
        self.spec_log: _Target | None = None
        self.ts_parts: list[np.ndarray] = []
        self.data_parts: list[np.ndarray] = []
        self.text_parts: list[str] = []
        self.table_parts: list[np.ndarray] = []
        self.clock_rows: list[tuple[float, float]] = []
        self.pending_n = 0
        self.committed: h5py.Dataset | None = None
        self.checksums: h5py.Dataset | None = None
        self.rows = 0
        self._committed_rows = 0

    def commit(self) -> None:
        if self.committed is not None and self.rows != self._committed_rows:
            self.committed[0] = self.rows
            self._committed_rows = self.rows

    def add_data(self, ts: np.ndarray, arr: np.ndarray) -> None:
        self.ts_parts.append(ts)
        self.data_parts.append(arr)
        self.pending_n += len(ts)

    def add_text(self, ts: np.ndarray | None, texts: list[str]) -> None:
        if ts is not None:
            self.ts_parts.append(ts)
        self.text_parts.extend(texts)
        self.pending_n += len(texts)

    def add_table(self, rows: np.ndarray) -> None:
        self.table_parts.append(rows)
        self.pending_n += len(rows)

    def write(self) -> int:
        """Append everything pending to the datasets; return the number of samples written."""
        n = self.pending_n
        if self.clock_rows and self.clock is not None:
            _append(self.clock, np.array(self.clock_rows, dtype=np.float64))
            self.clock_rows.clear()
        if self.spec_log is not None:
            self.spec_log.write()
        if n == 0:
            return 0
        # Samples go before timestamps, so a reader that sees a timestamp also sees its sample.
        # Every flush also appends [rows so far, CRC-32 of the new rows] (layout.row_crc32):
        # sample values have no checksum of their own in HDF5, so a reader can find changed bytes.
        parts: dict[str, Any] = {}
        if self.data_parts:
            arr = np.concatenate(self.data_parts)
            if self.data is not None:
                parts[L.TIME_SERIES] = arr = np.ascontiguousarray(arr, dtype=self.data.dtype)
                _append(self.data, arr)
            elif self.flat is not None:
                parts[L.TIME_SERIES] = flat = np.ascontiguousarray(arr, dtype=np.float64).reshape(-1)
                _append(self.flat, flat)
            self.data_parts.clear()
        if self.text_parts:
            assert self.text is not None and self.text_end is not None
            encoded = [t.encode("utf-8") for t in self.text_parts]
            base = int(self.text_end[-1]) if self.text_end.shape[0] else 0
            ends = base + np.cumsum([len(b) for b in encoded], dtype=np.int64)
            raw = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            parts[L.TEXT_END], parts[L.TEXT_DATA] = ends, raw
            _append(self.text, raw)
            _append(self.text_end, ends)
            self.text_parts.clear()
        if self.table_parts:
            assert self.table is not None
            rows = np.ascontiguousarray(np.concatenate(self.table_parts), dtype=self.table.dtype)
            parts["table"] = rows
            _append(self.table, rows)
            self.table_parts.clear()
        if self.ts_parts:
            assert self.ts is not None
            parts[L.TIME_STAMPS] = ts = np.ascontiguousarray(np.concatenate(self.ts_parts), dtype=np.float64)
            _append(self.ts, ts)
            self.ts_parts.clear()
        if self.checksums is not None:
            text0 = int(parts[L.TEXT_END][-1]) - len(parts[L.TEXT_DATA]) if L.TEXT_END in parts else 0
            _append(self.checksums, _block_checksums(parts, self.rows, n, text0))
        self.pending_n = 0
        self.rows += n
        return n


def _committed(g: h5py.Group) -> h5py.Dataset:
    """The row count a reader may trust (written after the rows themselves reached the disk)."""
    return g.create_dataset(L.COMMITTED, data=np.zeros(1, dtype=np.int64), maxshape=(1,), chunks=(1,))


def _block_checksums(parts: dict[str, Any], rows0: int, n: int, text0: int) -> np.ndarray:
    """[rows so far, CRC-32] for each block of at most ``L.CRC_BLOCK_ROWS`` of a flush's ``n`` rows.

    Blocks keep a damaged byte from costing more than one block plus what follows it.
    ``text0`` is the byte offset of the flush's first text byte (text logs).
    """
    per = {k: (len(v) // n if n and k not in (L.TEXT_DATA, L.TEXT_END) else 1) for k, v in parts.items()}
    out = []
    for a in range(0, n, L.CRC_BLOCK_ROWS):
        b = min(n, a + L.CRC_BLOCK_ROWS)
        block = {k: v[a * per[k]:b * per[k]] for k, v in parts.items() if k != L.TEXT_DATA}
        if L.TEXT_DATA in parts:
            ends = parts[L.TEXT_END]
            lo = (int(ends[a - 1]) if a else text0) - text0
            block[L.TEXT_DATA] = parts[L.TEXT_DATA][lo:int(ends[b - 1]) - text0]
        out.append((rows0 + b, L.row_crc32(block)))
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def _checksums(g: h5py.Group) -> h5py.Dataset:
    """One row per flush: [rows complete after it, CRC-32 of the rows it added] (format 2)."""
    return g.create_dataset(L.CHECKSUMS, (0, 2), maxshape=(None, 2), chunks=(256, 2), dtype="i8")


def _append(ds: h5py.Dataset, arr: np.ndarray) -> None:
    if len(arr) == 0:
        return
    n0 = ds.shape[0]
    ds.resize(n0 + len(arr), axis=0)
    ds[n0:] = arr
