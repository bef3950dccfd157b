"""The data side of the feedback windows (no Qt): streams in, drawable snapshots out.

Readers from :mod:`labsuite.streams.acquisition` pull the plates, IMUs, treadmill, camera, the
``labsuite-steps`` stream and the session's markers on their worker threads. Plate chunks are turned
into lab-frame vertical force and COP (:class:`~labsuite.plates.PlateGeometry`) on those
threads and kept in ring buffers; markers update a :class:`~labsuite.markers.SessionState`. The
GUI timer only calls :meth:`LiveFeed.snapshot` (copies) and draws.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from labsuite import checks as check
from labsuite.errors import ConfigError, DeviceError, LabsuiteError
from labsuite.ids import check_lab_id, check_participant_id, markers_source_id
from labsuite.markers import Beat, Marker, SessionState, decode, from_fields
from labsuite.plates import PlateGeometry
from labsuite.steps import STEP_DTYPE, STEP_FIELD_NAMES, rows_to_steps
from labsuite.streams.acquisition import Acquisition, ReaderStats, StreamQuery, StreamReader
from labsuite.streams.ring import RingBuffer

log = logging.getLogger(__name__)

IMU_SIDES = ("left", "right")

# Columns of a belt's display ring: time is kept apart; these are the lab-frame values.
COL_FZ = 0
COL_COP_X = 1
COL_COP_Y = 2


@dataclass(frozen=True)
class FeedSettings:
    """Which streams the windows show and how much of them.

    ``plates`` and ``imus`` are (belt or side, source_id) pairs; ``extra_source_ids`` are streams
    shown only in the health table (treadmill, camera). ``stage_step_limits`` gives, per stage
    index, the step count that ends the stage (None: ends on time), for the "steps left" display.
    ``fps`` is the drawing rate of the windows (30-60 recommended). ``beats_source_id`` is the
    audio metronome's beat stream, folded into the session view like the session's markers (its
    beats are the clicks; without it the session's own beats are the only ones).
    """

    lab_id: str
    plates: tuple[tuple[str, str], ...]
    steps_source_id: str
    participant_id: str = ""
    session_file: str = ""
    imus: tuple[tuple[str, str], ...] = ()
    extra_source_ids: tuple[str, ...] = ()
    window_s: float = 5.0
    history_steps: int = 300
    fps: float = 40.0
    stage_step_limits: tuple[int | None, ...] = ()
    beats_source_id: str = ""

    def __post_init__(self) -> None:
        check_lab_id(self.lab_id)
        if self.participant_id:
            check_participant_id(self.participant_id)
        belts = [b for b, _ in self.plates]
        if sorted(belts) not in (["left", "right"], ["single"]):
            raise ConfigError(f"FeedSettings.plates: expected belts left and right, or single; "
                              f"got {belts}")
        for side, _ in self.imus:
            if side not in IMU_SIDES:
                raise ConfigError(f"FeedSettings.imus: side {side!r} is not one of {IMU_SIDES}")
        for name, sid in (*self.plates, *self.imus, ("steps_source_id", self.steps_source_id),
                          *(("extra_source_ids", s) for s in self.extra_source_ids),
                          *((("beats_source_id", self.beats_source_id),) if self.beats_source_id else ())):
            if not isinstance(sid, str) or not sid or "'" in sid:
                raise ConfigError(f"FeedSettings {name}: expected a source_id without quotes, "
                                  f"got {sid!r}")
        check.number("FeedSettings.", "window_s", self.window_s, low=0.5, high=60.0, unit="s")
        check.number("FeedSettings.", "fps", self.fps, low=1.0, high=120.0, unit="frames/s")
        check.integer("FeedSettings.", "history_steps", self.history_steps, low=10, high=100_000)

    @classmethod
    def for_sim_lab(cls, sim: Any, *, steps_source_id: str, **kwargs: Any) -> FeedSettings:
        """Settings for the simulated lab ``sim`` (a ``drivers.sim.lab.SimLabSettings``)."""
        devices = tuple(sim.devices)
        plates = tuple((d[3:], sim.source_id(d)) for d in devices if d.startswith("fp-"))
        imus = tuple((d[4:], sim.source_id(d)) for d in devices if d.startswith("imu-"))
        extra = tuple(sim.source_id(d) for d in devices if d in ("treadmill", "camera"))
        return cls(lab_id=sim.lab_id, plates=plates, imus=imus, extra_source_ids=extra,
                   steps_source_id=steps_source_id, **kwargs)

    @classmethod
    def for_protocol(cls, protocol: Any, **kwargs: Any) -> FeedSettings:
        """Settings with the stage step limits of a parsed protocol (``until_steps`` etc.)."""
        limits = tuple(getattr(s, "until_steps", None) or getattr(s, "until_in_band_steps", None)
                       for s in protocol.stages)
        return cls(stage_step_limits=limits, **kwargs)


@dataclass(frozen=True)
class BeltTrace:
    """The last ``window_s`` of one belt: LSL times (s), vertical GRF (N), lab COP x, y (m)."""

    belt: str
    t_s: np.ndarray
    fz_n: np.ndarray
    cop_m: np.ndarray


@dataclass(frozen=True)
class HealthRow:
    """One row of the stream health table."""

    label: str
    source_id: str
    nominal_rate_hz: float
    stats: ReaderStats


@dataclass(frozen=True)
class Snapshot:
    """Everything one frame draws, copied out of the buffers at LSL time ``now_s``."""

    now_s: float
    traces: tuple[BeltTrace, ...]
    steps: np.ndarray
    steps_total: int
    session: SessionState
    events: tuple[str, ...]
    stage_steps: int
    stage_step_limit: int | None
    # the newest beat at or before now_s: the audio metronome's beat markers arrive about one output
    # latency before their click sounds, stamped with the time it does
    beat_s: float = math.nan


class LiveFeed:
    """Readers for everything the windows show; thread-safe snapshots for the GUI timer."""

    def __init__(self, settings: FeedSettings) -> None:
        self.settings = settings
        s = settings
        self._lock = threading.Lock()
        self._rings: dict[str, RingBuffer] = {}
        self._geometry: dict[str, tuple[Any, PlateGeometry]] = {}
        # slot name -> source_id, in table order
        self._sources: dict[str, str] = {f"plate:{b}": sid for b, sid in s.plates}
        self._sources.update({f"imu:{side}": sid for side, sid in s.imus})
        self._sources.update({f"extra:{sid}": sid for sid in s.extra_source_ids})
        self._sources["steps"] = s.steps_source_id
        self._sources["markers"] = markers_source_id(s.lab_id)
        if s.beats_source_id:
            self._sources["beats"] = s.beats_source_id
        self._readers: dict[str, StreamReader] = {k: self._make_reader(k) for k in self._sources}
        self._steps = np.empty(0, dtype=STEP_DTYPE)
        self._steps_total = 0
        self._view = SessionState()
        self._events: deque[str] = deque(maxlen=200)
        self._beats: deque[float] = deque(maxlen=16)
        self.errors: deque[str] = deque(maxlen=50)
        self.bad_chunks = 0

    # ---- control ---------------------------------------------------------------------------
    def _make_reader(self, slot: str) -> StreamReader:
        query = StreamQuery(source_id=self._sources[slot])
        if slot.startswith("plate:"):
            belt = slot[6:]
            return StreamReader(query, buffer_s=max(2.0, self.settings.window_s),
                                on_chunk=lambda r, ts, d: self._plate_chunk(belt, r, ts, d))
        if slot == "steps":
            return StreamReader(query, on_chunk=self._steps_chunk, buffer_s=60.0)
        if slot in ("markers", "beats"):
            return StreamReader(query, on_chunk=self._markers_chunk, buffer_s=60.0)
        return StreamReader(query, buffer_s=2.0)

    @property
    def readers(self) -> list[StreamReader]:
        """Every reader of the feed, in table order (plates, IMUs, others, steps, markers)."""
        return [self._readers[k] for k in self._sources]

    def start(self) -> LiveFeed:
        """Start every reader (returns self)."""
        Acquisition(self.readers).start()
        return self

    def stop(self) -> None:
        """Stop every reader."""
        Acquisition(self.readers).stop()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until the plates, steps and markers streams were all found once."""
        keys = [k for k in self._sources if k.startswith("plate:") or k in ("steps", "markers")]
        return Acquisition(self._readers[k] for k in keys).wait_connected(timeout_s)

    # ---- reader callbacks (worker threads) -------------------------------------------------
    def _plate_chunk(self, belt: str, reader: StreamReader, ts: np.ndarray, data: np.ndarray) -> None:
        try:
            spec, plate = self._geometry_of(belt, reader)
            grf, cop, _ = plate.to_lab(np.asarray(data, dtype=np.float64)[:, :6])
        except LabsuiteError as exc:
            self.bad_chunks += 1
            self.errors.append(f"plate {belt}: {exc}")
            return
        ring = self._rings.get(belt)
        if ring is None or ring.capacity < int(spec.rate_hz * self.settings.window_s):
            rate = spec.rate_hz if spec.rate_hz > 0 else 1000.0
            ring = RingBuffer(int(rate * (self.settings.window_s + 1.0)), 3, np.float64)
            self._rings[belt] = ring
        rows = np.empty((len(ts), 3))
        rows[:, COL_FZ] = grf[:, 2]
        rows[:, COL_COP_X:] = cop
        ring.write(ts, rows)

    def _geometry_of(self, belt: str, reader: StreamReader) -> tuple[Any, PlateGeometry]:
        spec = reader.spec
        cached = self._geometry.get(belt)
        if cached is not None and cached[0] is spec:
            return cached
        if spec is None:
            raise DeviceError(f"plate {belt}: no stream description yet")
        out = (spec, PlateGeometry.from_spec(spec, belt=belt))
        self._geometry[belt] = out
        return out

    def _steps_chunk(self, reader: StreamReader, ts: np.ndarray, data: np.ndarray) -> None:
        spec = reader.spec
        if spec is None or spec.labels != STEP_FIELD_NAMES:
            self.bad_chunks += 1
            self.errors.append(f"steps stream {self.settings.steps_source_id}: channels are not "
                               "the step record")
            return
        new = rows_to_steps(np.asarray(data, dtype=np.float64))
        keep = self.settings.history_steps
        with self._lock:
            self._steps = np.concatenate([self._steps, new])[-keep:]
            self._steps_total += len(new)

    def _markers_chunk(self, reader: StreamReader, ts: np.ndarray, data: np.ndarray) -> None:
        for t, row in zip(ts, data, strict=True):
            try:
                m = decode(str(row[0]))
            except LabsuiteError as exc:
                self.errors.append(str(exc))
                continue
            self.errors.extend(m.problems)
            self.apply_marker(float(t), m)

    # ---- markers ---------------------------------------------------------------------------
    def apply_marker(self, t_s: float, marker: Marker | Mapping[str, Any]) -> None:
        """Fold one marker stamped ``t_s`` (LSL time) into the session view; a dict is decoded."""
        m = marker if isinstance(marker, Marker) else from_fields(marker)
        with self._lock:
            if not m.FREQUENT and m.event:
                self._events.append(m.describe())
            self._view.apply(t_s, m)
            if isinstance(m, Beat):
                self._beats.append(t_s)

    # ---- snapshots (GUI thread) ------------------------------------------------------------
    def snapshot(self, now_s: float | None = None) -> Snapshot:
        """Copy out what one frame draws: the last ``window_s`` of each belt, steps, session."""
        import pylsl

        now = pylsl.local_clock() if now_s is None else now_s
        traces = []
        for belt, _ in self.settings.plates:
            ring = self._rings.get(belt)
            if ring is None:
                traces.append(BeltTrace(belt, np.empty(0), np.empty(0), np.empty((0, 2))))
                continue
            reader = self._readers[f"plate:{belt}"]
            rate = reader.spec.rate_hz if reader.spec is not None and reader.spec.rate_hz > 0 \
                else 1000.0
            t, rows = ring.latest(int(rate * self.settings.window_s))
            traces.append(BeltTrace(belt, t, rows[:, COL_FZ], rows[:, COL_COP_X:]))
        with self._lock:
            steps = self._steps.copy()
            total = self._steps_total
            view = self._view.copy()
            events = tuple(self._events)
            beat = max((t for t in self._beats if t <= now), default=math.nan)
        in_stage = int(np.sum(steps["strike_s"] >= view.stage_start_s)) \
            if math.isfinite(view.stage_start_s) else 0
        limits = self.settings.stage_step_limits
        limit = limits[view.stage_index] if 0 <= view.stage_index < len(limits) else None
        return Snapshot(now, tuple(traces), steps, total, view, events, in_stage, limit, beat)

    def health(self) -> list[HealthRow]:
        """One row per stream: measured rate, gaps, dropped samples, lag."""
        rows = []
        for r in self.readers:
            spec = r.spec
            label = spec.name if spec is not None else str(r.query.source_id)
            label = label.removeprefix("labsuite-")
            rows.append(HealthRow(label, str(r.query.source_id),
                                  spec.rate_hz if spec is not None else math.nan, r.stats()))
        return rows
