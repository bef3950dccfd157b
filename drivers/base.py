"""The driver contract: every device (simulated or real) implements :class:`Driver`.

A driver describes its streams, opens its device, hands back time-stamped chunks and closes.
:class:`DriverRunner` does the LSL side for all of them: one outlet per stream (re-created while
liblsl placed it outside the port range discovery asks, see ``labsuite.lslconfig``), the read/push
loop, optional commands from the session (JSON strings, see ``labsuite.streams.messages``),
reconnect after a device error with the gap left visible, and a clean shutdown.
"""

from __future__ import annotations

import abc
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labsuite.errors import DeviceError
from labsuite.streams.contracts import StreamSpec
from labsuite.streams.messages import decode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    """Samples of one stream: ``timestamps`` (n,) on the LSL clock, ``data`` (n, channels)."""

    stream: int
    timestamps: np.ndarray
    data: np.ndarray


@dataclass
class DriverHealth:
    """Counters every driver keeps: frames read, frames rejected, reconnects, last error."""

    frames_ok: int = 0
    frames_bad: int = 0
    reconnects: int = 0
    last_error: str = ""
    extra: dict[str, float] = field(default_factory=dict)


class Driver(abc.ABC):
    """One device. Subclasses implement the four methods; the runner does the rest.

    ``read`` returns whatever arrived within ``timeout_s`` (possibly nothing) and raises
    :class:`DeviceError` when the device is lost; the runner then closes, waits and re-opens.
    Timestamps are ``pylsl.local_clock()`` values of the moment each sample was taken (device
    clocks must be mapped onto it by the driver).
    """

    def __init__(self) -> None:
        self.health = DriverHealth()

    @abc.abstractmethod
    def stream_specs(self) -> list[StreamSpec]:
        """Describe the streams this driver publishes (fixed before ``open``)."""

    @abc.abstractmethod
    def open(self) -> None:
        """Connect to the device; raise DeviceError with a message saying how to fix it."""

    @abc.abstractmethod
    def read(self, timeout_s: float) -> list[Chunk]:
        """Return the chunks that arrived within ``timeout_s`` seconds (may be empty)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device. Must be safe to call twice and after a failed ``open``."""

    def handle_command(self, command: dict[str, Any], stamp_s: float | None = None) -> None:
        """React to a session command (treadmill speed, stop, heartbeat...). Default: ignore.

        ``stamp_s`` is when the session sent it, on this machine's LSL clock (None: unknown).
        """

    def on_idle(self, now_s: float) -> None:
        """Run timers (watchdogs, ramps): called every loop turn with the LSL clock."""


class DriverRunner:
    """Run a driver: publish its streams over LSL until stopped, reconnecting after device errors.

    ``command_source_id`` names a string stream (the session's commands) whose samples are decoded
    and passed to ``driver.handle_command``; it is looked up in the background, so a driver may
    start before the session does.
    """

    def __init__(
        self,
        driver: Driver,
        *,
        command_source_id: str | None = None,
        read_timeout_s: float = 0.02,
        reconnect_delay_s: float = 0.5,
        outlet_retry_s: float = 2.0,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self.driver = driver
        self.command_source_id = command_source_id
        self.read_timeout_s = read_timeout_s
        self.reconnect_delay_s = reconnect_delay_s
        self.outlet_retry_s = outlet_retry_s
        self._stop = threading.Event()
        self._on_event = on_event or (lambda kind, text: log.warning("%s: %s", kind, text))
        self.outlets: list[Any] = []
        self.samples_pushed: list[int] = []
        self.misplaced: set[int] = set()  # outlets liblsl put outside the port range
        self._retry_at = 0.0

    def stop(self) -> None:
        """Ask the loop to end; ``run`` returns after closing the device."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    def run(self, duration_s: float | None = None) -> None:
        """Open, publish and loop in the calling thread until stopped or ``duration_s`` elapses."""
        import pylsl

        specs = self.driver.stream_specs()
        self.outlets = [pylsl.StreamOutlet(s.to_info(), 0, 360) for s in specs]
        self.samples_pushed = [0] * len(specs)
        self._check_outlets(specs)
        commands = _CommandListener(self.command_source_id) if self.command_source_id else None
        deadline = None if duration_s is None else time.monotonic() + duration_s
        is_open = False
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if self.misplaced and time.monotonic() >= self._retry_at:
                    self._replace_misplaced(specs)
                if not is_open:
                    is_open = self._try_open()
                    if not is_open:
                        self._stop.wait(self.reconnect_delay_s)
                        continue
                try:
                    chunks = self.driver.read(self.read_timeout_s)
                except DeviceError as exc:
                    self.driver.health.last_error = str(exc)
                    self._on_event("device_lost", str(exc))
                    self.driver.close()
                    is_open = False
                    self.driver.health.reconnects += 1
                    continue
                for chunk in chunks:
                    self._push(specs[chunk.stream], chunk)
                # Commands are drained right before the watchdogs look, so a loop that was held up
                # (a loaded machine) judges on every heartbeat that arrived meanwhile.
                if commands is not None:
                    for stamp, cmd in commands.poll():
                        self.driver.handle_command(cmd, stamp)
                self.driver.on_idle(pylsl.local_clock())
        finally:
            if commands is not None:
                commands.close()
            self.driver.close()
            self.outlets = []  # outlets are destroyed with their last reference

    def _check_outlets(self, specs: list[StreamSpec]) -> None:
        """Note every outlet whose discovery port lies outside the configured range, and say so.

        liblsl gives an outlet a random port once every port of the range is taken (other LSL
        programs on this machine); resolvers that ask known peers never look there, so the stream
        would stay invisible, and a session would wait for it in vain.
        """
        from labsuite.lslconfig import outlet_service_port, port_range

        ports = port_range()
        for i, (spec, outlet) in enumerate(zip(specs, self.outlets, strict=True)):
            port = outlet_service_port(outlet)
            if port is not None and not ports.contains(port):
                self.misplaced.add(i)
                self._on_event("lsl_port_outside_range",
                               f"stream {spec.name!r} ({spec.source_id}) got discovery port {port}, "
                               f"outside the LSL port range {ports}: other programs hold the range, "
                               "so it cannot be found on this machine; retrying every "
                               f"{self.outlet_retry_s:g} s (widen [ports] PortRange or close them)")
        self._retry_at = time.monotonic() + self.outlet_retry_s

    def _replace_misplaced(self, specs: list[StreamSpec]) -> None:
        """Create the misplaced outlets again; keep a new one that lands inside the range."""
        import pylsl

        from labsuite.lslconfig import outlet_service_port, port_range

        ports = port_range()
        for i in sorted(self.misplaced):
            if self.outlets[i].have_consumers():
                self.misplaced.discard(i)  # found after all (multicast): keep it
                continue
            fresh = pylsl.StreamOutlet(specs[i].to_info(), 0, 360)
            port = outlet_service_port(fresh)
            if port is not None and ports.contains(port):
                self.outlets[i] = fresh
                self.misplaced.discard(i)
                self._on_event("lsl_port_in_range", f"stream {specs[i].name!r} ({specs[i].source_id}) "
                               f"now on discovery port {port}, inside {ports}")
        self._retry_at = time.monotonic() + self.outlet_retry_s

    def _try_open(self) -> bool:
        try:
            self.driver.open()
        except DeviceError as exc:
            self.driver.health.last_error = str(exc)
            self._on_event("open_failed", str(exc))
            return False
        return True

    def _push(self, spec: StreamSpec, chunk: Chunk) -> None:
        n = len(chunk.timestamps)
        if n == 0:
            return
        outlet = self.outlets[chunk.stream]
        if spec.dtype == "string":
            for ts, row in zip(chunk.timestamps, chunk.data, strict=True):
                outlet.push_sample([str(v) for v in np.atleast_1d(row)], float(ts))
        else:
            data = np.ascontiguousarray(chunk.data, dtype=spec.numpy_dtype).reshape(n, -1)
            outlet.push_chunk(data, np.ascontiguousarray(chunk.timestamps, dtype=np.float64))
        self.samples_pushed[chunk.stream] += n


class _CommandListener:
    """The session's command stream, decoded into a queue the driver loop drains.

    A StreamReader does the finding, and the finding again after a session restart.
    """

    def __init__(self, source_id: str) -> None:
        from labsuite.streams.acquisition import StreamQuery, StreamReader

        self._queue: queue.SimpleQueue[tuple[float, dict[str, Any]]] = queue.SimpleQueue()
        self._reader = StreamReader(StreamQuery(source_id=source_id), on_chunk=self._on_chunk,
                                    buffer_s=5.0).start()

    def _on_chunk(self, reader: Any, ts: np.ndarray, data: np.ndarray) -> None:
        for t, row in zip(ts, data, strict=True):
            try:
                # the sample's time stamp is its send time, which the reader has already mapped
                # onto this machine's clock
                self._queue.put((float(t), decode(str(row[0]))))
            except DeviceError as exc:
                log.warning("ignored command: %s", exc)

    def poll(self) -> list[tuple[float, dict[str, Any]]]:
        """The commands that arrived since the last call: (send time on this clock, command)."""
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self._reader.stop()
