"""Lab-side acquisition: resolve LSL streams, pull them, survive drivers dying.

A :class:`StreamReader` owns one stream: it resolves it (by source_id, type or name), pulls chunks
straight into a preallocated buffer (``pull_chunk(dest_obj=...)``), keeps the latest samples in a
:class:`RingBuffer`, measures the clock offset every few seconds, counts gaps and dropped samples
against the nominal rate, and when the source is lost re-resolves it and carries on, recording
the gap. Consumers get each chunk through ``on_chunk``: on the reader's thread, or, for a reader
made with ``caller_pulls=True``, in the thread that calls :meth:`StreamReader.pull`.

Timestamps: consumers get them on this machine's clock (the sender's raw timestamp plus the
clock offset measured last, ``time_correction``). Only the archive asks for raw timestamps
(``raw_timestamps=True``), because it stores the measured offsets beside them, as XDF does.
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
EVENT_CALLBACK_ERROR = "callback_error"

# A callback error is logged (with its traceback) the first time it is seen; repeats are counted.
_MAX_LOGGED_CALLBACK_ERRORS = 20


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
    callback_errors: int = 0


class StreamReader:
    """Read one LSL stream into a ring buffer; find it again when it comes back.

    ``on_chunk(reader, timestamps, data)`` runs for every chunk; ``timestamps`` are on this
    machine's clock (raw + ``offset_s``; raw with ``raw_timestamps=True``, for the archive alone);
    ``data`` is a view into a reused buffer, so copy it if you keep it. An exception raised by
    ``on_chunk`` or ``on_event`` never stops the reader: it is counted (``stats().callback_errors``),
    logged with its traceback the first time, and passed to ``on_event`` as ``callback_error``.

    Two ways to pull. By default the worker thread pulls and calls ``on_chunk`` there, with each
    chunk as soon as it arrives (a pull waits for the first sample only; ``pull_timeout_s`` is
    how long it waits when nothing comes, i.e. how often it looks at the stop flag and clock).
    With ``caller_pulls=True`` the worker only finds, opens, reconnects and measures the clock
    offset; the owner calls :meth:`pull` from its own loop, which drains
    what the inlet holds at once and calls ``on_chunk`` in that thread. A watchdog that pulls
    right before it looks never mistakes data that its stalled process has not pulled yet for
    data that stopped (the session's force watchdog, the treadmill's heartbeat watchdog).
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
        caller_pulls: bool = False,
        raw_timestamps: bool = False,
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
        self.caller_pulls = caller_pulls
        self.raw_timestamps = raw_timestamps
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
        self._callback_errors = 0
        self._logged_errors: set[tuple[str, str]] = set()
        self._connected = False
        self._last_ts = float("nan")
        self._recent: deque[tuple[float, int]] = deque()  # (last timestamp of chunk, n) for the rate
        self._buf: np.ndarray | None = None
        # caller_pulls: the open inlet the caller pulls from; the lock keeps the worker from
        # closing it (or asking it for the clock offset) in the middle of a pull
        self._inlet: Any = None
        self._inlet_lock = threading.Lock()
        self._lost = threading.Event()
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

    @property
    def connected(self) -> bool:
        """True while the stream has an open inlet."""
        return self._connected

    def pull(self) -> int:
        """Pull what the stream holds now, without waiting; return the number of samples.

        Only for a reader made with ``caller_pulls=True``. Every chunk goes to ``on_chunk`` in the
        calling thread before this returns (a backlog larger than ``max_chunk`` comes as several
        chunks). Returns 0 while the stream is not connected; a loss found here is handed to the
        worker thread, which reports it and looks for the stream again.
        """
        import pylsl

        if not self.caller_pulls:
            raise ConfigError("StreamReader.pull(): this reader pulls on its own thread; make it "
                              "with caller_pulls=True to pull from yours")
        total = 0
        with self._inlet_lock:
            inlet, spec = self._inlet, self.spec
            if inlet is None or spec is None:
                return 0
            try:
                while True:
                    n = self._pull_once(inlet, spec, 0.0)
                    total += n
                    if n < self.max_chunk:
                        break
            except pylsl.util.LostError:
                self._inlet = None
                self._lost.set()
        return total

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
                           self._reconnects, self._connected, self._last_ts, self._callback_errors)

    def clock_offsets(self) -> np.ndarray:
        """Return the measured clock offsets as a (k, 2) array of [local_time, offset_s]."""
        return np.asarray(self._offsets, dtype=float).reshape(-1, 2)

    # ---- worker ----------------------------------------------------------------------------
    def _event(self, kind: str, detail: str) -> None:
        import pylsl

        self.events.append((pylsl.local_clock(), kind, detail))
        log.info("%s %s: %s", self.query, kind, detail)
        if self.on_event is not None:
            try:
                self.on_event(self, kind, detail)
            except Exception as exc:  # a consumer's bug must not stop the stream: count, log once
                self._callback_failed("on_event", exc, report=False)

    def _deliver(self, ts: np.ndarray, data: np.ndarray) -> None:
        if self.on_chunk is None:
            return
        try:
            self.on_chunk(self, ts, data)
        except Exception as exc:  # a consumer's bug must not stop the stream: count, log once
            self._callback_failed("on_chunk", exc, report=True)

    def _callback_failed(self, which: str, exc: Exception, *, report: bool) -> None:
        self._callback_errors += 1
        key = (type(exc).__name__, str(exc)[:200])
        if key in self._logged_errors or len(self._logged_errors) >= _MAX_LOGGED_CALLBACK_ERRORS:
            return
        self._logged_errors.add(key)
        log.error("%s: %s raised %s: %s; the reader goes on (repeats are counted in "
                  "stats().callback_errors)", self.query, which, key[0], exc, exc_info=exc)
        if report:
            self._event(EVENT_CALLBACK_ERROR, f"{which} raised {key[0]}: {key[1]}")

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
                if self.caller_pulls:
                    self._serve_caller(inlet)
                else:
                    self._pull_loop(inlet, spec)
            except pylsl.util.LostError:
                dead.add(uid)
                lost_at = time.monotonic()
                self._event(EVENT_LOST, f"{spec.name} ({spec.source_id}) lost; waiting for it to return")
            finally:
                self._connected = False
                with self._inlet_lock:
                    self._inlet = None
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
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_clock:
                self._check_clock(inlet)
                next_clock = now + self.clock_check_s
            self._pull_once(inlet, spec, self.pull_timeout_s)

    def _serve_caller(self, inlet: Any) -> None:
        """caller_pulls: hand the open inlet to :meth:`pull`; measure the clock; notice a loss."""
        import pylsl

        self._check_clock(inlet)  # the first measurement may block: do it before handing over
        self._lost.clear()
        with self._inlet_lock:
            self._inlet = inlet
        next_clock = time.monotonic() + self.clock_check_s
        while not self._stop.wait(0.05):
            if self._lost.is_set():
                raise pylsl.util.LostError("lost while the owner pulled")
            if time.monotonic() >= next_clock:
                # after the first measurement liblsl answers from its background estimate at once
                with self._inlet_lock:
                    self._check_clock(inlet, timeout_s=0.1)
                next_clock = time.monotonic() + self.clock_check_s

    def _pull_once(self, inlet: Any, spec: StreamSpec, timeout_s: float) -> int:
        """One pull: count, keep in the ring, hand to on_chunk; return the samples pulled.

        ``min_samples=1``: wait up to ``timeout_s`` for the first sample only, then take what
        else is there at once. Without it liblsl waits until ``max_chunk`` samples or the
        timeout, so every chunk sat in the inlet for the whole pull window (20 ms: about 26 ms
        of the live path's latency, issue 15).
        """
        if self._buf is not None:
            _, ts_arr = inlet.pull_chunk(timeout=timeout_s, max_samples=self.max_chunk,
                                         dest_obj=self._buf, min_samples=1, as_numpy=True)
            n = len(ts_arr)
            if n == 0:
                return 0
            data = self._buf[:n]
            raw = ts_arr
        else:
            samples, ts_list = inlet.pull_chunk(timeout=timeout_s, max_samples=self.max_chunk,
                                                min_samples=1)
            n = len(ts_list)
            if n == 0:
                return 0
            data = np.asarray(samples, dtype=object).reshape(n, -1)
            raw = np.asarray(ts_list, dtype=np.float64)
        self._account(raw, spec)
        corrected = raw + self.offset_s
        assert self.ring is not None
        self.ring.write(corrected, data)
        self._deliver(raw if self.raw_timestamps else corrected, data)
        return n

    def _account(self, ts: np.ndarray, spec: StreamSpec) -> None:
        period = 1.0 / spec.rate_hz if spec.rate_hz > 0 else 0.0
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

    def _check_clock(self, inlet: Any, timeout_s: float = 2.0) -> None:
        import pylsl

        try:
            offset = inlet.time_correction(timeout=timeout_s)
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

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop every reader: all are asked at once, then each is waited for (``timeout_s`` each)."""
        for reader in self.readers:
            reader.request_stop()
        for reader in self.readers:
            reader.stop(timeout_s)

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until every reader has found its stream once (True) or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        return all(r.wait_connected(max(0.0, deadline - time.monotonic())) for r in self.readers)

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
