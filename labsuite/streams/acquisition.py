"""Lab-side acquisition: resolve LSL streams, pull them on worker threads, survive drivers dying.

A :class:`StreamReader` owns one stream: it resolves it (by source_id, type or name), pulls chunks
straight into a preallocated buffer (``pull_chunk(dest_obj=...)``), keeps the latest samples in a
:class:`RingBuffer`, measures the clock offset every few seconds, counts gaps and dropped samples
against the nominal rate, and when the source is lost re-resolves it and carries on, recording
the gap. Consumers get each chunk through ``on_chunk`` on the reader's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from labsuite.errors import ConfigError
from labsuite.streams.contracts import StreamSpec
from labsuite.streams.ring import RingBuffer

log = logging.getLogger(__name__)

ChunkCallback = Callable[["StreamReader", np.ndarray, np.ndarray], None]
EventCallback = Callable[["StreamReader", str, str], None]

# Event kinds passed to on_event.
EVENT_CONNECTED = "connected"
EVENT_LOST = "lost"
EVENT_RECONNECTED = "reconnected"
EVENT_GAP = "gap"


@dataclass(frozen=True)
class StreamQuery:
    """Which stream to read: any of source_id, LSL type and name (all given must match)."""

    source_id: str | None = None
    type: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not (self.source_id or self.type or self.name):
            raise ConfigError("stream query: give at least one of source_id, type or name")
        for field_name in ("source_id", "type", "name"):
            value = getattr(self, field_name)
            if value is not None and "'" in value:
                raise ConfigError(f"stream query {field_name}: must not contain a quote, got {value!r}")

    def predicate(self) -> str:
        """Return the XPath predicate liblsl resolves with."""
        parts = []
        if self.source_id:
            parts.append(f"source_id='{self.source_id}'")
        if self.type:
            parts.append(f"type='{self.type}'")
        if self.name:
            parts.append(f"name='{self.name}'")
        return " and ".join(parts)

    def __str__(self) -> str:
        return self.predicate()


@dataclass(frozen=True)
class ReaderStats:
    """A snapshot of a reader's counters. ``dropped`` estimates missing samples from gaps."""

    samples: int
    chunks: int
    gaps: int
    dropped: int
    measured_rate_hz: float
    lag_s: float
    reconnects: int
    connected: bool
    last_timestamp: float


class StreamReader:
    """Read one LSL stream on a worker thread into a ring buffer; reconnect when it comes back.

    ``on_chunk(reader, timestamps_raw, data)`` runs on the worker thread for every chunk; ``data``
    is a view into a reused buffer, so copy it if you keep it. Corrected time is raw + ``offset_s``.
    """

    def __init__(
        self,
        query: StreamQuery | str,
        *,
        on_chunk: ChunkCallback | None = None,
        on_event: EventCallback | None = None,
        buffer_s: float = 30.0,
        max_chunk: int = 4096,
        pull_timeout_s: float = 0.02,
        clock_check_s: float = 5.0,
        rate_window_s: float = 5.0,
    ) -> None:
        self.query = StreamQuery(source_id=query) if isinstance(query, str) else query
        if buffer_s <= 0:
            raise ConfigError(f"buffer_s: expected > 0, got {buffer_s}")
        self.on_chunk = on_chunk
        self.on_event = on_event
        self.buffer_s = buffer_s
        self.max_chunk = max_chunk
        self.pull_timeout_s = pull_timeout_s
        self.clock_check_s = clock_check_s
        self.rate_window_s = rate_window_s
        self.spec: StreamSpec | None = None
        self.ring: RingBuffer | None = None
        self.offset_s = 0.0
        self.events: deque[tuple[float, str, str]] = deque(maxlen=1000)
        self._offsets: list[tuple[float, float]] = []
        self._samples = 0
        self._chunks = 0
        self._gaps = 0
        self._dropped = 0
        self._reconnects = 0
        self._connected = False
        self._last_ts = float("nan")
        self._recent: deque[tuple[float, int]] = deque()  # (last timestamp of chunk, n) for the rate
        self._buf: np.ndarray | None = None
        self._stop = threading.Event()
        self._connected_once = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- control ---------------------------------------------------------------------------
    def start(self) -> StreamReader:
        """Start the worker thread (returns self)."""
        if self._thread is not None:
            raise RuntimeError("reader already started")
        self._thread = threading.Thread(target=self._run, name=f"lsl-reader {self.query}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the worker thread and release the inlet."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def request_stop(self) -> None:
        """Ask the worker to stop without waiting (see :meth:`stop`)."""
        self._stop.set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until the stream was found once (True) or the timeout passed (False)."""
        return self._connected_once.wait(timeout_s)

    # ---- state -----------------------------------------------------------------------------
    def stats(self) -> ReaderStats:
        """Return a snapshot of the counters, measured rate (last few seconds) and lag."""
        import pylsl

        rate = float("nan")
        recent = list(self._recent)
        if self.spec is not None and len(recent) >= 2:
            t0, _ = recent[0]
            t1, _ = recent[-1]
            n = sum(k for _, k in recent[1:])
            if t1 > t0:
                rate = n / (t1 - t0)
        lag = (pylsl.local_clock() - (self._last_ts + self.offset_s)
               if np.isfinite(self._last_ts) else float("nan"))
        return ReaderStats(self._samples, self._chunks, self._gaps, self._dropped, rate, lag,
                           self._reconnects, self._connected, self._last_ts)

    def clock_offsets(self) -> np.ndarray:
        """Return the measured clock offsets as a (k, 2) array of [local_time, offset_s]."""
        return np.asarray(self._offsets, dtype=float).reshape(-1, 2)

    # ---- worker ----------------------------------------------------------------------------
    def _event(self, kind: str, detail: str) -> None:
        import pylsl

        self.events.append((pylsl.local_clock(), kind, detail))
        log.info("%s %s: %s", self.query, kind, detail)
        if self.on_event is not None:
            self.on_event(self, kind, detail)

    def _run(self) -> None:
        import pylsl

        # A continuous resolver, not repeated one-shot resolves: in a process that owns an outlet,
        # short one-shot resolves missed a newly started stream about half the time (measured with
        # liblsl 1.18), while the continuous resolver found it within 0.5 s every time.
        resolver: Any = None
        lost_at: float | None = None
        dead: set[str] = set()  # instances that were lost: a restarted driver is a new instance
        retry_at: dict[str, float] = {}  # instances whose opening timed out (a loaded machine)
        failures: dict[str, int] = {}
        renew_at = 0.0
        while not self._stop.is_set():
            if resolver is None:
                resolver = pylsl.ContinuousResolver(pred=self.query.predicate(), forget_after=2.0)
                renew_at = time.monotonic() + 3.0
            # Newest first; skip an instance we already lost (the resolver keeps listing a dead
            # instance until it forgets it) and one whose last attempt timed out a moment ago.
            now = time.monotonic()
            found = [i for i in sorted(resolver.results(), key=lambda i: -i.created_at())
                     if i.uid() not in dead and retry_at.get(i.uid(), 0.0) <= now]
            if not found:
                if now >= renew_at:
                    # A resolver that has seen nothing for a while is replaced: on a crowded
                    # machine a fresh one was seen to find streams an old one kept missing.
                    resolver = pylsl.ContinuousResolver(pred=self.query.predicate(), forget_after=2.0)
                    renew_at = now + 3.0
                self._stop.wait(0.1)
                continue
            info = found[0]
            uid = info.uid()
            inlet = pylsl.StreamInlet(info, max_buflen=max(1, int(np.ceil(self.buffer_s))),
                                      recover=False)
            try:
                spec = StreamSpec.from_info(inlet.info(timeout=5.0))
                inlet.open_stream(timeout=5.0)
            except pylsl.util.LostError as exc:
                log.info("%s: instance %s is gone: %s", self.query, uid, exc)
                dead.add(uid)
                inlet.close_stream()
                del inlet
                continue
            except pylsl.util.TimeoutError as exc:
                failures[uid] = failures.get(uid, 0) + 1
                retry_at[uid] = time.monotonic() + min(5.0, 0.25 * 2 ** failures[uid])
                log.info("%s: opening %s timed out (%d); retrying: %s", self.query, uid,
                         failures[uid], exc)
                inlet.close_stream()
                del inlet
                continue
            self._adopt(spec)
            self._connected = True
            if lost_at is None:
                self._event(EVENT_CONNECTED, f"{spec.name} ({spec.source_id}) {spec.rate_hz} Hz")
            else:
                self._reconnects += 1
                self._event(EVENT_RECONNECTED, f"{spec.name} back after {time.monotonic() - lost_at:.2f} s")
            self._connected_once.set()
            # Let the resolver go while connected: each one holds four UDP ports of LSL's port
            # range, and with one per reader a single session filled the 256-port range (measured
            # 184 ports), so another lab's new outlets got ports outside it and could not be found.
            resolver = None
            try:
                self._pull_loop(inlet, spec)
            except pylsl.util.LostError:
                dead.add(uid)
                lost_at = time.monotonic()
                self._event(EVENT_LOST, f"{spec.name} ({spec.source_id}) lost; waiting for it to return")
            finally:
                self._connected = False
                inlet.close_stream()
                # Destroy the dead inlet before connecting again: while it lives, liblsl's own
                # recovery attempt for it delays the next connection by seconds.
                del inlet

    def _adopt(self, spec: StreamSpec) -> None:
        """Take the stream's description; reallocate buffers only when its shape changed."""
        old = self.spec
        self.spec = spec
        if (old is None or old.channel_count != spec.channel_count or old.dtype != spec.dtype
                or old.rate_hz != spec.rate_hz):
            rate = spec.rate_hz if spec.rate_hz > 0 else 100.0
            capacity = max(16, int(self.buffer_s * rate))
            self.ring = RingBuffer(capacity, spec.channel_count, spec.numpy_dtype)
            self._buf = (np.zeros((self.max_chunk, spec.channel_count), dtype=spec.numpy_dtype)
                         if spec.dtype != "string" else None)
            self._recent.clear()

    def _pull_loop(self, inlet: Any, spec: StreamSpec) -> None:
        next_clock = 0.0
        period = 1.0 / spec.rate_hz if spec.rate_hz > 0 else 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_clock:
                self._check_clock(inlet)
                next_clock = now + self.clock_check_s
            if self._buf is not None:
                _, ts_list = inlet.pull_chunk(timeout=self.pull_timeout_s, max_samples=self.max_chunk,
                                              dest_obj=self._buf)
                n = len(ts_list)
                if n == 0:
                    continue
                ts = np.asarray(ts_list, dtype=np.float64)
                data = self._buf[:n]
            else:
                samples, ts_list = inlet.pull_chunk(timeout=self.pull_timeout_s,
                                                    max_samples=self.max_chunk)
                n = len(ts_list)
                if n == 0:
                    continue
                ts = np.asarray(ts_list, dtype=np.float64)
                data = np.asarray(samples, dtype=object).reshape(n, -1)
            self._account(ts, period, spec)
            assert self.ring is not None
            self.ring.write(ts + self.offset_s, data)
            if self.on_chunk is not None:
                self.on_chunk(self, ts, data)

    def _account(self, ts: np.ndarray, period: float, spec: StreamSpec) -> None:
        n = len(ts)
        if period > 0:
            prev = self._last_ts
            steps = np.diff(ts, prepend=prev) if np.isfinite(prev) else np.diff(ts)
            # A gap is a step longer than 1.5 sample periods; its missing samples are counted.
            big = steps > 1.5 * period
            if np.any(big):
                missing = np.rint(steps[big] / period).astype(np.int64) - 1
                self._gaps += int(big.sum())
                self._dropped += int(missing.sum())
                self._event(EVENT_GAP, f"{spec.name}: {int(missing.sum())} samples missing "
                                       f"({float(steps[big].max()):.3f} s longest)")
        self._samples += n
        self._chunks += 1
        self._last_ts = float(ts[-1])
        self._recent.append((float(ts[-1]), n))
        while self._recent and self._recent[0][0] < ts[-1] - self.rate_window_s:
            self._recent.popleft()

    def _check_clock(self, inlet: Any) -> None:
        import pylsl

        try:
            offset = inlet.time_correction(timeout=2.0)
        except pylsl.util.TimeoutError:
            return
        self.offset_s = float(offset)
        self._offsets.append((pylsl.local_clock(), self.offset_s))


class Acquisition:
    """A set of readers started and stopped together, with a status table."""

    def __init__(self, readers: Iterable[StreamReader]) -> None:
        self.readers = list(readers)

    def start(self) -> Acquisition:
        """Start every reader."""
        for reader in self.readers:
            reader.start()
        return self

    def stop(self) -> None:
        """Stop every reader."""
        for reader in self.readers:
            reader.request_stop()
        for reader in self.readers:
            reader.stop()

    def __enter__(self) -> Acquisition:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> list[tuple[StreamReader, ReaderStats]]:
        """Return (reader, stats) for every reader."""
        return [(r, r.stats()) for r in self.readers]


def discover(timeout_s: float = 2.0, *, lsl_type: str | None = None) -> list[StreamSpec]:
    """Return the descriptions of every stream visible now (optionally of one LSL type)."""
    import pylsl

    infos = (pylsl.resolve_byprop("type", lsl_type, 0, timeout_s) if lsl_type
             else pylsl.resolve_streams(timeout_s))
    specs = []
    for info in infos:
        inlet = pylsl.StreamInlet(info)
        try:
            specs.append(StreamSpec.from_info(inlet.info(timeout=5.0)))
        except (pylsl.util.TimeoutError, pylsl.util.LostError) as exc:
            log.warning("stream %s vanished while reading its metadata: %s", info.name(), exc)
        finally:
            inlet.close_stream()
    return sorted(specs, key=lambda s: (s.kind, s.name, s.source_id))
