"""Recorder: every stream of a session (or the ones named) from LSL into one SessionWriter.

The recorder role of DESIGN.md: acquisition readers (labsuite.streams.acquisition) pull each stream
on their own thread and hand chunks straight to the writer's queue; clock offsets, gaps, losses and
reconnects go into the file too. The steps stream also fills the step table and stage_end markers
the stage table; camera streams fill the frame table and the list of video segments, with each
file's path relative to the session file (labsuite.video.naming). Used by ``labsuite record`` and
by the session runner (``run_recorder`` role).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labsuite import checks as check
from labsuite.archive import layout as L
from labsuite.archive import naming
from labsuite.archive.layout import FRAME_DTYPE
from labsuite.archive.writer import SessionWriter, StreamHandle, WriterSettings, expected_bytes_per_s
from labsuite.errors import ArchiveError, ConfigError
from labsuite.ids import check_participant_id
from labsuite.steps import STEP_FIELD_NAMES, empty_steps
from labsuite.streams.acquisition import Acquisition, StreamQuery, StreamReader
from labsuite.streams.contracts import (
    CAMERA_FRAME_INDEX,
    CAMERA_POSITION,
    CAMERA_SEGMENT,
    KIND_CAMERA,
    KIND_STEPS,
    StreamSpec,
)
from labsuite.video.naming import relative_to_session, segment_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecorderSettings:
    """What to record and where.

    ``source_ids`` empty: every stream visible at the start, and any that appears later (kept in
    the writer's spare slots). Named streams not visible after ``wait_s`` are looked for all along
    and recorded from the moment they appear. ``path`` overrides the file name made from
    ``out_dir``, the participant and the UTC start time (labsuite.archive.naming). ``part`` > 1
    continues the session of ``path`` in its numbered part file (a restarted recorder).
    """

    participant_id: str
    out_dir: Path = Path(".")
    path: Path | None = None
    source_ids: tuple[str, ...] = ()
    wait_s: float = 2.0
    watch_new_streams: bool = True
    mass_kg: float | None = None
    protocol_path: Path | None = None
    protocol_text: str | None = None
    session_number: int | None = None
    expected_duration_s: float = 3600.0
    writer: WriterSettings = field(default_factory=WriterSettings)
    exclude_source_ids: tuple[str, ...] = ()
    part: int = 1

    def __post_init__(self) -> None:
        check_participant_id(self.participant_id, "participant_id")
        check.positive("", self, "wait_s", "expected_duration_s")
        naming.part_path("x.h5", self.part)  # ConfigError naming the bad part number
        if self.part > 1 and self.path is None:
            raise ConfigError("part > 1 continues a session: give the path of its first file")

    def session_path(self) -> Path:
        """The file to write: ``path`` (or ``out_dir/<new unique name>``), as part ``part``."""
        first = Path(self.path) if self.path is not None else Path(self.out_dir) / naming.session_file_name(
            self.participant_id, self.session_number)
        return naming.part_path(first, self.part)


@dataclass(frozen=True)
class StreamProgress:
    """One stream's counters for the progress display."""

    source_id: str
    name: str
    received: int
    written: int
    measured_rate_hz: float
    gaps: int
    dropped: int
    reconnects: int
    connected: bool


class _Recorded:
    """One stream being recorded: its reader, its writer handle, and what was passed on."""

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self.reader: Any = None
        self.handle: StreamHandle | None = None
        self.offsets_sent = 0
        self.refused = False
        self.video_rows: dict[int, int] = {}  # camera segment number -> row of video/segments


class Recorder:
    """Record LSL streams into a session file until :meth:`stop`.

    ``on_message(text)`` receives warnings and errors for the operator (late streams, refused
    streams, write errors); by default they are logged.
    """

    def __init__(self, settings: RecorderSettings,
                 on_message: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.path = settings.session_path()
        self._on_message = on_message or (lambda text: log.warning("%s", text))
        self._streams: dict[str, _Recorded] = {}
        self._lock = threading.Lock()
        self._writer: SessionWriter | None = None
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: ArchiveError | None = None
        self.start_monotonic = math.nan

    # ---- control ---------------------------------------------------------------------------
    def start(self) -> Path:
        """Find the streams, create the file and start recording; returns the file path.

        Raises ArchiveError when the file cannot be created or no stream is visible.
        """
        s = self.settings
        wanted = set(s.source_ids)
        # A restarted recorder takes the stream descriptions from the part before (a quick file
        # read instead of an LSL discovery): it records again sooner (labsuite/lab/watch.py).
        specs = _specs_of_previous_part(self.path, s.part) if s.part > 1 else []
        if not specs or (wanted and not wanted <= {sp.source_id for sp in specs}):
            specs = _discover(s.wait_s, wanted)
        specs = [sp for sp in specs if sp.source_id not in s.exclude_source_ids]
        if wanted:
            missing = sorted(wanted - {sp.source_id for sp in specs})
            if missing:
                self._on_message(f"not visible yet, recorded from the moment they appear: {missing}")
        elif not specs:
            raise ArchiveError(f"no LSL streams visible after {s.wait_s} s; start the drivers (or "
                               "`labsuite simulate`) first, or wait longer with --wait-s")
        if s.path is None:
            prepare_out_dir(Path(s.out_dir))
        # Every named stream not visible yet gets a spare slot of its own, on top of the pool
        # kept for streams nobody named.
        n_missing = len(wanted - {sp.source_id for sp in specs})
        writer_settings = dataclasses.replace(
            s.writer, late_stream_slots=min(64, s.writer.late_stream_slots + n_missing))
        part_attrs: dict[str, Any] = {L.PART: int(s.part), L.FIRST_FILE: naming.split_part(self.path)[0].name}
        self._writer = SessionWriter(
            self.path, participant_id=s.participant_id, mass_kg=s.mass_kg,
            protocol_text=s.protocol_text, protocol_path=s.protocol_path,
            session_number=s.session_number, settings=writer_settings,
            expected_rate_bytes_per_s=expected_bytes_per_s(specs),
            expected_duration_s=s.expected_duration_s,
            on_event=lambda kind, detail: self._on_message(f"{kind}: {detail}"),
            **part_attrs)
        for spec in specs:
            rec = _Recorded(spec.source_id)
            rec.handle = self._writer.add_stream(spec)
            self._streams[spec.source_id] = rec
        for sid in sorted(wanted - set(self._streams)):
            self._streams[sid] = _Recorded(sid)
        self._writer.start()
        if s.part > 1:  # only now: an event before start() would switch the file to SWMR early
            previous = naming.part_path(naming.split_part(self.path)[0], s.part - 1)
            self._writer.log_event(
                L.EVENT_RECORDING_RESUMED,
                f"part {s.part} of the session: the recorder was restarted; what the streams sent "
                f"between the last flush of {previous.name} and the first samples here is missing")
        self.start_monotonic = time.monotonic()
        for rec in list(self._streams.values()):
            self._start_reader(rec)
        if s.watch_new_streams and not wanted:
            self._watcher = threading.Thread(target=self._watch_loop, name="recorder-watch", daemon=True)
            self._watcher.start()
        return self.path

    def stop(self) -> None:
        """Stop the readers, write what is queued and close the file (marked complete)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(10.0)
        Acquisition(r.reader for r in self._streams.values() if r.reader is not None).stop(10.0)
        if self._writer is not None:
            self._sync_offsets()
            try:
                self._writer.close()
            except ArchiveError as exc:
                self._error = self._error or exc
        if self._error is not None:
            raise self._error

    @property
    def writer(self) -> SessionWriter:
        """The session writer (after :meth:`start`)."""
        if self._writer is None:
            raise ArchiveError("the recorder has not started")
        return self._writer

    @property
    def failed(self) -> ArchiveError | None:
        """The error that stopped recording, or None."""
        return self._error or (self._writer.failed if self._writer is not None else None)

    def tick(self) -> None:
        """Pass new clock offsets to the writer; call about once a second."""
        self._sync_offsets()

    def progress(self) -> list[StreamProgress]:
        """Counters per stream: received, written (flushed), rate, gaps, dropped, reconnects."""
        written = self._writer.stats().samples_written if self._writer is not None else {}
        out = []
        for sid, rec in sorted(self._streams.items()):
            st = rec.reader.stats() if rec.reader is not None else None
            key = rec.handle.key if rec.handle is not None else ""
            name = rec.reader.spec.name if rec.reader is not None and rec.reader.spec is not None else sid
            out.append(StreamProgress(
                sid, name, st.samples if st else 0, written.get(key, 0),
                st.measured_rate_hz if st else math.nan, st.gaps if st else 0, st.dropped if st else 0,
                st.reconnects if st else 0, bool(st and st.connected)))
        return out

    def connected(self) -> bool:
        """True when every stream visible at the start has a connected reader."""
        return all(r.reader is not None and r.reader.connected
                   for r in self._streams.values() if r.handle is not None)

    def run(self, duration_s: float | None = None, *, report: Callable[[str], None] | None = print,
            stop_event: Any = None, on_ready: Callable[[], None] | None = None) -> Path:
        """Start, record until ``duration_s``, ``stop_event`` or Ctrl-C, stop; print progress each second.

        ``on_ready()`` is called once every stream found at the start has a connected reader
        (at the latest ``wait_s`` after the start: a stream that vanished does not hold it back).
        """
        self.start()
        if on_ready is not None:
            deadline = time.monotonic() + self.settings.wait_s
            while not self.connected() and time.monotonic() < deadline and self.failed is None:
                time.sleep(0.02)
            on_ready()
        try:
            t_end = None if duration_s is None else self.start_monotonic + duration_s
            while True:
                now = time.monotonic()
                if t_end is not None and now >= t_end:
                    break
                if stop_event is not None and stop_event.is_set():
                    break
                if self.failed is not None:
                    break
                wait = 1.0 if t_end is None else max(0.0, min(1.0, t_end - now))
                if stop_event is not None:
                    stop_event.wait(wait)
                else:
                    time.sleep(wait)
                self.tick()
                if report is not None:
                    report(format_progress(time.monotonic() - self.start_monotonic, self.progress(),
                                           self.writer.stats().samples_queued))
        finally:
            self.stop()
        return self.path

    # ---- internals ---------------------------------------------------------------------------
    def _start_reader(self, rec: _Recorded) -> None:
        def on_chunk(reader: Any, ts: np.ndarray, data: np.ndarray) -> None:
            self._on_chunk(rec, reader, ts, data)

        def on_event(reader: Any, kind: str, detail: str) -> None:
            self._on_event(rec, kind, detail)

        # raw timestamps: the file keeps what the sender stamped, with the measured offsets beside them
        rec.reader = StreamReader(StreamQuery(source_id=rec.source_id), on_chunk=on_chunk,
                                  on_event=on_event, raw_timestamps=True)
        rec.reader.start()

    def _on_chunk(self, rec: _Recorded, reader: Any, ts: np.ndarray, data: np.ndarray) -> None:
        if rec.refused or self._writer is None:
            return
        writer = self._writer
        try:
            if rec.handle is None:
                # A stream that appeared after the start: it goes to a spare slot.
                with self._lock:
                    if rec.handle is None:
                        rec.handle = writer.add_stream(reader.spec)
                        self._on_message(f"stream {rec.source_id!r} appeared after the start; recording it")
            writer.append(rec.handle, ts, data)
            if rec.handle.spec.kind == KIND_STEPS:
                writer.append_steps(steps_from_stream(rec.handle.spec, data))
            elif rec.handle.spec.kind == KIND_CAMERA:
                self._video_frames(rec, rec.handle.spec, ts, data)
        except ArchiveError as exc:
            if writer.failed is not None:
                self._error = writer.failed
                self._stop.set()
            else:
                rec.refused = True
                self._on_message(str(exc))

    def _video_frames(self, rec: _Recorded, spec: StreamSpec, ts: np.ndarray, data: np.ndarray) -> None:
        """Frame-table rows for a camera chunk; a new segment number gets its segment record first."""
        video = str(spec.setup.get("camera", {}).get("video_file", "")) if isinstance(
            spec.setup.get("camera"), dict) else ""
        labels = spec.labels
        if not video or CAMERA_SEGMENT not in labels or CAMERA_POSITION not in labels:
            return  # a frame counter without video (or an older camera): nothing to link
        rows = np.asarray(data, dtype=np.float64).reshape(len(ts), -1)
        part = rows[:, labels.index(CAMERA_SEGMENT)]
        keep = np.isfinite(part) & (part >= 1)
        if not keep.any():
            return
        rows, part, ts = rows[keep], part[keep].astype(np.int64), np.asarray(ts)[keep]
        index = rows[:, labels.index(CAMERA_FRAME_INDEX)].astype(np.int64)
        writer = self.writer
        for p in np.unique(part):
            if int(p) in rec.video_rows:
                continue
            first = int(np.argmax(part == p))
            file, inside = relative_to_session(segment_path(video, int(p)), self.path)
            if not inside:
                self._on_message(f"camera {spec.source_id}: video {segment_path(video, int(p))} is not "
                                 f"in the session file's folder; stored as {file!r}: copy it beside "
                                 f"{self.path.name} to review it")
            rec.video_rows[int(p)] = writer.add_video_segment(
                {"camera": spec.source_id, "camera_name": spec.name, "segment": int(p), "file": file,
                 "first_frame_index": int(index[first]), "rate_hz": spec.rate_hz,
                 "beside_session": inside}, float(ts[first]))
        out = np.empty(len(ts), dtype=FRAME_DTYPE)
        out["frame_index"] = index
        out["time_s"] = ts
        out["segment"] = [rec.video_rows[int(p)] for p in part]
        out["position"] = rows[:, labels.index(CAMERA_POSITION)].astype(np.int64)
        writer.append_video_frames(out)

    def _on_event(self, rec: _Recorded, kind: str, detail: str) -> None:
        if self._writer is not None and self._writer.failed is None:
            try:
                self._writer.log_event(kind, detail, source_id=rec.source_id)
            except ArchiveError as exc:
                log.warning("event %s of %s not stored: %s", kind, rec.source_id, exc)
        if kind in ("lost", "reconnected"):
            self._on_message(f"{rec.source_id}: {kind}: {detail}")

    def _sync_offsets(self) -> None:
        if self._writer is None:
            return
        for rec in self._streams.values():
            if rec.reader is None or rec.handle is None:
                continue
            offsets = rec.reader.clock_offsets()
            for local_time, offset in offsets[rec.offsets_sent:]:
                try:
                    self._writer.add_clock_offset(rec.handle, float(local_time), float(offset))
                except ArchiveError:
                    return
            rec.offsets_sent = len(offsets)

    def _watch_loop(self) -> None:
        import pylsl

        resolver = pylsl.ContinuousResolver(forget_after=5.0)
        try:
            while not self._stop.wait(1.0):
                for info in resolver.results():
                    sid = info.source_id()
                    if (not sid or sid in self._streams or sid in self.settings.exclude_source_ids):
                        continue
                    rec = _Recorded(sid)
                    self._streams[sid] = rec
                    self._start_reader(rec)
        finally:
            del resolver


def steps_from_stream(spec: StreamSpec, data: np.ndarray) -> np.ndarray:
    """Step records from samples of a steps stream, matched by channel label (missing: NaN).

    A processor of another labsuite version may publish fewer or more fields; none is misplaced.
    """
    rows = np.asarray(data, dtype=np.float64).reshape(len(data), -1)
    out = empty_steps(len(rows))
    labels = spec.labels
    for name in STEP_FIELD_NAMES:
        if name in labels:
            out[name] = rows[:, labels.index(name)]
    return out


def prepare_out_dir(folder: Path) -> Path:
    """Make sure ``folder`` is (or can become) a folder on a real, writable disk; create it.

    ArchiveError naming the path and the fix when it is a file, lies under a file, sits on a
    virtual file system (/proc, /sys) or cannot be created or written.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is a file" if probe == folder else f"lies under {probe}, which is a file"
        raise ArchiveError(f"--out {folder}: {what}; expected a folder for session files (give "
                           "--file PATH to name the file itself)")
    try:
        blocks = os.statvfs(probe).f_blocks
    except OSError:
        blocks = 1
    if blocks == 0:
        raise ArchiveError(f"--out {folder}: {probe} is a virtual file system (like /proc or /sys), "
                           "not a disk; record to a folder on a disk")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(f"--out {folder}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ArchiveError(f"--out {folder}: the folder is not writable by this user")
    return folder


def _specs_of_previous_part(path: Path, part: int) -> list[StreamSpec]:
    """The streams the part before ``part`` recorded (empty when it cannot be read)."""
    from labsuite.archive.reader import stream_specs

    previous = naming.part_path(naming.split_part(path)[0], part - 1)
    try:
        return sorted(stream_specs(previous), key=lambda sp: (sp.kind, sp.name, sp.source_id))
    except ArchiveError as exc:
        log.warning("stream descriptions of %s unreadable (%s); looking for the streams again",
                    previous, exc)
        return []


def _discover(wait_s: float, wanted: set[str]) -> list[StreamSpec]:
    """Descriptions of the visible streams (only the ``wanted`` source_ids when given).

    Reads full metadata only from the streams it will record: other streams on the network (other
    sessions, other labs' apps) may be slow to answer and are not worth waiting for.
    """
    import pylsl

    # A continuous resolver, as acquisition uses: one-shot resolves miss streams now and then.
    resolver = pylsl.ContinuousResolver(forget_after=max(5.0, 2 * wait_s))
    deadline = time.monotonic() + wait_s
    infos: dict[str, Any] = {}
    try:
        while True:
            for info in resolver.results():
                sid = info.source_id()
                if sid and (not wanted or sid in wanted):
                    infos.setdefault(sid, info)
            if (wanted and wanted <= set(infos)) or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    finally:
        del resolver
    specs = []
    for sid, info in infos.items():
        inlet = pylsl.StreamInlet(info)
        try:
            specs.append(StreamSpec.from_info(inlet.info(timeout=10.0)))
        except (pylsl.util.TimeoutError, pylsl.util.LostError) as exc:
            log.warning("stream %s (%s) vanished while reading its metadata: %s", info.name(), sid, exc)
        finally:
            inlet.close_stream()
    unique = {sp.source_id: sp for sp in specs}  # a stream seen twice (several interfaces) once
    return sorted(unique.values(), key=lambda sp: (sp.kind, sp.name, sp.source_id))


def format_progress(elapsed_s: float, rows: Sequence[StreamProgress], queued: int) -> str:
    """One progress line per second: per stream samples written, rate, gaps."""
    parts = []
    for p in rows:
        rate = "-" if not math.isfinite(p.measured_rate_hz) else f"{p.measured_rate_hz:.0f}Hz"
        state = "" if p.connected else " LOST"
        gaps = f" gaps={p.gaps}/{p.dropped}" if p.gaps else ""
        parts.append(f"{p.name}={p.written}/{p.received} {rate}{gaps}{state}")
    return f"[{elapsed_s:7.1f} s] " + "  ".join(parts) + (f"  queued={queued}" if queued else "")


def run_recorder(stop: Any, settings: RecorderSettings, start: int = 1, ready: Any = None) -> None:
    """Supervisor role: record until ``stop`` is set (used by ``labsuite run``).

    The supervisor's ``start``-th start writes part ``start`` of the session; ``ready`` is set once
    its readers are connected (the session then knows it records again).
    """
    rec = Recorder(dataclasses.replace(settings, part=start))
    rec.run(None, report=None, stop_event=stop, on_ready=None if ready is None else ready.set)


def spec_summary(spec: StreamSpec) -> str:
    """A short description of a stream for messages."""
    return f"{spec.name} ({spec.source_id}, {spec.channel_count} ch, {spec.rate_hz:g} Hz)"
