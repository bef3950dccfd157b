"""The processor role: force-plate and IMU streams from LSL in, ``labsuite-steps`` out.

The I/O wrapper around :class:`~labsuite.realtime.processor.StepProcessor` (which knows nothing of
LSL or threads): readers from :mod:`labsuite.streams.acquisition` hand chunks over on their worker
threads, one lock serialises them into the processor, and every completed step is pushed to the
LSL steps stream and to a queue for in-process consumers. :func:`run_processor` is the
Supervisor role of ``labsuite run`` and ``labsuite record``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from labsuite.errors import ConfigError, DeviceError, LabsuiteError
from labsuite.plates import PlateGeometry
from labsuite.realtime.processor import ProcessorSettings, StepProcessor
from labsuite.steps import steps_to_rows
from labsuite.streams.acquisition import Acquisition, StreamQuery, StreamReader
from labsuite.streams.contracts import (
    INCLINE,
    KIND_FORCE_PLATE,
    KIND_IMU,
    SPEED_LEFT,
    SPEED_RIGHT,
    steps_spec,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveStats:
    """Counters of a running :class:`LiveRunner`."""

    started: bool
    steps: int
    queue_dropped: int
    chunks: int
    rejected_chunks: int
    last_error: str


class LiveRunner:
    """Feed a :class:`StepProcessor` from LSL and publish its steps.

    ``plates`` maps belt ('left'/'right' or 'single') to a stream source_id or query, ``imus`` maps
    side to one, ``treadmill`` (optional) is the belt-speed stream used for step length.
    ``settings`` is a template: its rate and plate geometry are replaced by what the force-plate
    streams announce (``desc/setup/force_platform``) once they are all connected; samples that
    arrive before that are not processed. Timestamps are on this machine's clock (the readers
    correct them). Steps go to the LSL stream ``steps_spec(steps_source_id)``
    (one sample per step, stamped with its toe-off time) and to :attr:`steps_queue` as
    STEP_DTYPE arrays; when the queue is full the oldest item is dropped and counted.
    """

    def __init__(self, settings: ProcessorSettings, plates: Mapping[str, str | StreamQuery], *,
                 imus: Mapping[str, str | StreamQuery] | None = None,
                 treadmill: str | StreamQuery | None = None, steps_source_id: str,
                 steps_name: str = "labsuite-steps", queue_size: int = 1000,
                 buffer_s: float = 10.0) -> None:
        if settings.body_weight_n is None and settings.body_mass_kg is None:
            raise ConfigError("LiveRunner: ProcessorSettings needs body_mass_kg or body_weight_n")
        want = ["left", "right"] if settings.layout == "split" else ["single"]
        if sorted(plates) != want:
            raise ConfigError(f"LiveRunner plates: layout {settings.layout!r} needs streams for "
                              f"{want}, got {sorted(plates)}")
        imus = dict(imus or {})
        if sorted(imus) != sorted(settings.imu_sides):
            raise ConfigError(f"LiveRunner imus: ProcessorSettings.imu_sides is "
                              f"{settings.imu_sides}, streams given for {sorted(imus)}")
        if queue_size < 1:
            raise ConfigError(f"LiveRunner queue_size: expected >= 1, got {queue_size}")
        self.template = settings
        self.steps_queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=queue_size)
        self.processor: StepProcessor | None = None
        self._lock = threading.Lock()
        self._steps_spec = steps_spec(steps_source_id, name=steps_name)
        self._outlet: Any = None
        self._n_steps = 0
        self._dropped = 0
        self._chunks = 0
        self._rejected = 0
        self._last_error = ""
        self._plate_readers = {
            belt: StreamReader(q, on_chunk=self._plate_chunk, buffer_s=buffer_s)
            for belt, q in plates.items()}
        self._belt_of = {id(r): belt for belt, r in self._plate_readers.items()}
        self._imu_readers = {
            side: StreamReader(q, on_chunk=self._imu_chunk, buffer_s=buffer_s)
            for side, q in imus.items()}
        self._side_of = {id(r): side for side, r in self._imu_readers.items()}
        self._treadmill = (StreamReader(treadmill, on_chunk=self._treadmill_chunk, buffer_s=buffer_s)
                           if treadmill is not None else None)

    @property
    def readers(self) -> list[StreamReader]:
        """Every stream reader of this runner."""
        out = [*self._plate_readers.values(), *self._imu_readers.values()]
        return out + ([self._treadmill] if self._treadmill is not None else [])

    def start(self) -> LiveRunner:
        """Create the steps outlet and start reading (returns self)."""
        import pylsl

        self._outlet = pylsl.StreamOutlet(self._steps_spec.to_info())
        Acquisition(self.readers).start()
        return self

    def stop(self) -> np.ndarray:
        """Stop reading; release and publish the steps still waiting; return them."""
        Acquisition(self.readers).stop()
        with self._lock:
            rest = self.processor.flush() if self.processor is not None else np.empty(0)
            if len(rest):
                self._publish(rest)
        self._outlet = None
        return rest

    def run_until(self, stop: threading.Event, *, status_s: float = 10.0) -> np.ndarray:
        """Serve as a session's processor process until ``stop`` is set, then stop.

        Logs the counters every ``status_s``; returns the steps released at the stop. Call
        :meth:`start` first.
        """
        while not stop.wait(status_s):
            st = self.stats()
            log.info("steps %d, chunks %d, rejected %d, queue drops %d%s", st.steps, st.chunks,
                     st.rejected_chunks, st.queue_dropped,
                     "" if st.started else " (waiting for the force-plate streams)")
        return self.stop()

    def wait_started(self, timeout_s: float) -> bool:
        """Block until every plate stream is connected and the processor exists."""
        if not Acquisition(self._plate_readers.values()).wait_connected(timeout_s):
            return False
        with self._lock:
            self._ensure_processor()
        return self.processor is not None

    def stats(self) -> LiveStats:
        """Counters: steps published, queue drops, chunks processed and rejected, last error."""
        return LiveStats(self.processor is not None, self._n_steps, self._dropped, self._chunks,
                         self._rejected, self._last_error)

    # ---- reader callbacks (worker threads) -----------------------------------------------------
    def _ensure_processor(self) -> None:
        if self.processor is not None:
            return
        specs = {belt: r.spec for belt, r in self._plate_readers.items()}
        if any(s is None for s in specs.values()):
            return
        geoms = []
        rates = set()
        for belt, spec in specs.items():
            assert spec is not None
            if spec.kind != KIND_FORCE_PLATE:
                raise DeviceError(f"stream {spec.name!r} for belt {belt!r} is a {spec.kind} "
                                  "stream, expected a force plate")
            geoms.append(PlateGeometry.from_spec(spec, belt=belt))
            rates.add(spec.rate_hz)
        if len(rates) != 1:
            raise DeviceError(f"force-plate streams run at different rates {sorted(rates)}; "
                              "expected one rate for all belts")
        settings = replace(self.template, plates=tuple(geoms), rate_hz=rates.pop())
        self.processor = StepProcessor(settings)
        log.info("step processor started: %s", settings)

    def _plate_chunk(self, reader: StreamReader, ts: np.ndarray, data: np.ndarray) -> None:
        belt = self._belt_of[id(reader)]
        with self._lock:
            try:
                self._ensure_processor()
                if self.processor is None:
                    return
                steps = self.processor.feed_plate(belt, ts, data)
            except LabsuiteError as exc:
                self._reject(f"belt {belt}: {exc}")
                return
            self._chunks += 1
            if len(steps):
                self._publish(steps)

    def _imu_chunk(self, reader: StreamReader, ts: np.ndarray, data: np.ndarray) -> None:
        side = self._side_of[id(reader)]
        if reader.spec is not None and reader.spec.kind != KIND_IMU:
            self._reject(f"IMU {side}: stream {reader.spec.name!r} is a {reader.spec.kind} stream")
            return
        with self._lock:
            if self.processor is None:
                return
            try:
                steps = self.processor.feed_imu(side, ts, data)
            except LabsuiteError as exc:
                self._reject(f"IMU {side}: {exc}")
                return
            self._chunks += 1
            if len(steps):
                self._publish(steps)

    def _treadmill_chunk(self, reader: StreamReader, ts: np.ndarray, data: np.ndarray) -> None:
        spec = reader.spec
        if spec is None or not len(data):
            return
        try:
            speeds = [float(data[-1, spec.channel_index(c)]) for c in (SPEED_LEFT, SPEED_RIGHT)]
            _ = spec.channel_index(INCLINE)
        except DeviceError as exc:
            self._reject(f"treadmill: {exc}")
            return
        with self._lock:
            if self.processor is not None:
                # the belt under the feet: the mean of both belts (equal unless split-speed)
                self.processor.set_belt_speed(max(0.0, sum(speeds) / 2))

    def _reject(self, message: str) -> None:
        self._rejected += 1
        self._last_error = message
        log.warning("step processor rejected a chunk: %s", message)

    def _publish(self, steps: np.ndarray) -> None:
        rows = steps_to_rows(steps)
        if self._outlet is not None:
            for row, toe in zip(rows, steps["toe_off_s"], strict=True):
                self._outlet.push_sample(row.tolist(), float(toe))
        self._n_steps += len(steps)
        try:
            self.steps_queue.put_nowait(steps)
        except queue.Full:
            try:
                self.steps_queue.get_nowait()
            except queue.Empty:  # a consumer emptied it meanwhile
                pass
            self._dropped += 1
            self.steps_queue.put_nowait(steps)


def run_processor(stop: Any, plates: dict[str, str], imus: dict[str, str], treadmill: str | None,
                  steps_source_id: str, layout: str, mode: str, mass_kg: float) -> None:
    """Processor role: the live step processor from the plate/IMU streams to ``steps_source_id``."""
    # geometry and rate are placeholders: LiveRunner takes them from the plate streams' metadata
    settings = ProcessorSettings(
        rate_hz=1000.0, plates=tuple(PlateGeometry.lab_aligned(b) for b in plates), layout=layout,
        mode=mode, body_mass_kg=mass_kg, imu_sides=tuple(sorted(imus)))
    runner = LiveRunner(settings, plates, imus=imus, treadmill=treadmill,
                        steps_source_id=steps_source_id)
    runner.start()
    try:
        stop.wait()
    finally:
        runner.stop()
