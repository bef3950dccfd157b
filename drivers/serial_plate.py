"""Serial force-plate amplifier: LSFP binary frames over a serial port, calibrated and tared.

Reads raw amplifier channels (pyserial), checks every frame, maps the amplifier's sample counter
onto the LSL clock, applies tare and calibration matrix (``labsuite.calibration``) and publishes
Fx Fy Fz (N) Mx My Mz (N·m) with the calibration id in the stream metadata.

LSFP frame, version 1 (labsuite serial force plate; all integers little-endian)::

    offset  size  field
    0       2     sync bytes 0xA5 0x5A
    2       1     n, the number of channels (6 or 8)
    3       1     status flags: bit 0 amplifier overload, bits 1-7 reserved (0)
    4       2     frame counter, uint16, +1 per sample, wraps 65535 -> 0
    6       4n    channels, int32 ADC counts, in the order of the calibration matrix columns
    6+4n    2     CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over bytes 2 .. 5+4n

A frame with a bad CRC, an unexpected channel count or reserved bits set is counted in
``health.frames_bad`` and skipped (the parser resynchronises on the next sync bytes); counter jumps
are counted in ``health.extra['frames_missing']`` and keep their place in time.
"""

from __future__ import annotations

import binascii
import logging
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labsuite import checks as check
from labsuite.calibration import PlateCalibration, PlateCalibrator, TareSettings
from labsuite.drivers.base import Chunk, Driver
from labsuite.errors import ConfigError, DeviceError
from labsuite.streams.contracts import BELTS, StreamSpec

log = logging.getLogger(__name__)

SYNC = b"\xa5\x5a"
HEADER_SIZE = 6
CRC_SIZE = 2


def frame_size(n_channels: int) -> int:
    """Bytes of one LSFP frame with ``n_channels`` channels."""
    return HEADER_SIZE + 4 * n_channels + CRC_SIZE


def crc16_ccitt(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(counter: int, counts: np.ndarray, status: int = 0) -> bytes:
    """Build one LSFP frame (used by tools and documentation examples)."""
    values = [int(v) for v in np.asarray(counts).ravel()]
    body = struct.pack(f"<BBH{len(values)}i", len(values), status, counter & 0xFFFF, *values)
    return SYNC + body + struct.pack("<H", crc16_ccitt(body))


@dataclass
class FrameParser:
    """Incremental LSFP parser: feed bytes, get (counters, counts, status) of the good frames."""

    n_channels: int
    frames_bad: int = 0
    bad_reasons: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    _buf: bytearray = field(default_factory=bytearray)
    _resync: bool = False

    def feed(self, data: bytes) -> tuple[list[int], list[tuple[int, ...]], list[int]]:
        """Parse everything complete in the buffer; keep a trailing partial frame for later."""
        self._buf.extend(data)
        size = frame_size(self.n_channels)
        counters: list[int] = []
        rows: list[tuple[int, ...]] = []
        status: list[int] = []
        buf = self._buf
        pos = 0
        fmt = f"<{self.n_channels}i"
        while True:
            start = buf.find(SYNC, pos)
            if start < 0:
                # Keep a last byte that may be the first half of the next sync pair.
                pos = max(pos, len(buf) - 1)
                break
            if start > pos and not self._resync:
                # Bytes after a rejected frame are its own remains, not a second fault.
                self._bad(f"{start - pos} stray bytes before sync")
            if len(buf) - start < size:
                pos = start
                break
            frame = bytes(buf[start:start + size])
            n, flags, counter = struct.unpack_from("<BBH", frame, 2)
            crc = struct.unpack_from("<H", frame, size - 2)[0]
            if n != self.n_channels:
                self._bad(f"byte 2 (channel count): expected {self.n_channels}, got {n}")
                pos = start + 1
                continue
            if crc != crc16_ccitt(frame[2:size - 2]):
                self._bad(f"bytes {size - 2}..{size - 1} (CRC): mismatch for counter {counter}")
                pos = start + 1
                continue
            if flags & 0xFE:
                self._bad(f"byte 3 (status): reserved bits set ({flags:#04x})")
                pos = start + size
                continue
            self._resync = False
            counters.append(counter)
            rows.append(struct.unpack_from(fmt, frame, HEADER_SIZE))
            status.append(flags)
            pos = start + size
        del buf[:pos]
        return counters, rows, status

    def discard(self) -> int:
        """Drop buffered bytes (connection lost); returns 1 if a partial frame was dropped."""
        partial = 1 if len(self._buf) >= len(SYNC) and SYNC in self._buf else 0
        self._buf.clear()
        self._resync = False
        if partial:
            self._bad("partial frame at disconnect")
        return partial

    def _bad(self, reason: str) -> None:
        self._resync = True
        self.frames_bad += 1
        self.bad_reasons.append(reason)


def read_serial(port: Any, timeout_s: float, max_bytes: int, what: str) -> tuple[bytes, float]:
    """What a serial port has within ``timeout_s`` (at most ``max_bytes`` beyond the first byte).

    Returns the bytes and their arrival on the LSL clock; DeviceError naming ``what`` (the device
    and its port) when the port went away. Shared by the serial drivers (plates, x-IMU3).
    """
    import pylsl
    import serial

    if port is None:
        raise DeviceError(f"{what}: not open")
    try:
        port.timeout = timeout_s
        data = port.read(1)
        waiting = port.in_waiting
        if waiting:
            data += port.read(min(waiting, max_bytes))
    except (serial.SerialException, OSError) as exc:
        raise DeviceError(f"{what}: connection lost ({exc})") from None
    return bytes(data), pylsl.local_clock()


class DeviceClock:
    """Map a device's own time base (seconds) onto the LSL clock.

    The offset (LSL − device) is the smallest arrival delay seen (a sample can never be received
    before it was taken), allowed to creep up by ``max_drift`` per second so clock drift between
    the device and this machine is followed; timestamps never go backwards. Also used by the
    x-IMU3 driver.
    """

    def __init__(self, max_drift: float = 2e-4) -> None:
        self.max_drift = max_drift
        self.offset_s: float | None = None
        self._last_arrival = 0.0
        self._last_ts = -np.inf

    def reset(self) -> None:
        """Forget the mapping (after a reconnect the device clock may have restarted)."""
        self.offset_s = None

    def map(self, device_s: np.ndarray, arrival_lsl_s: float) -> np.ndarray:
        """LSL timestamps of samples taken at ``device_s``, the last of which arrived at ``arrival``."""
        dev = np.asarray(device_s, dtype=np.float64)
        candidate = arrival_lsl_s - float(dev[-1])
        if self.offset_s is None:
            self.offset_s = candidate
        else:
            crept = self.offset_s + self.max_drift * max(0.0, arrival_lsl_s - self._last_arrival)
            self.offset_s = min(crept, candidate)
        self._last_arrival = arrival_lsl_s
        ts = self.offset_s + dev
        if ts[0] <= self._last_ts:
            # Never step back in time: shift this block just past the previous sample.
            ts = ts + (self._last_ts - ts[0] + 1e-6)
        self._last_ts = float(ts[-1])
        return ts


@dataclass(frozen=True)
class SerialPlateSettings:
    """One serial amplifier: port, speed, rate, which belt, calibration and tare."""

    port: str
    source_id: str
    belt: str
    calibration: PlateCalibration
    baudrate: int = 921600
    rate_hz: float = 1000.0
    tare: TareSettings = field(default_factory=TareSettings)
    name: str | None = None
    read_chunk_bytes: int = 65536

    def __post_init__(self) -> None:
        check.text("serial plate ", "port", self.port, "a device path such as /dev/ttyUSB0")
        check.one_of("serial plate ", "belt", self.belt, BELTS)
        check.positive("serial plate ", self, "rate_hz")
        check.integer("serial plate ", "baudrate", self.baudrate, low=1)
        needed = frame_size(self.calibration.n_inputs) * self.rate_hz * 10
        if needed > self.baudrate:
            raise ConfigError(f"serial plate baudrate: {self.baudrate} baud cannot carry "
                              f"{self.rate_hz} frames/s of {frame_size(self.calibration.n_inputs)} "
                              f"bytes (needs >= {int(needed)})")


class SerialPlateDriver(Driver):
    """A force plate behind a serial amplifier speaking LSFP (module docstring)."""

    def __init__(self, settings: SerialPlateSettings) -> None:
        super().__init__()
        self.settings = settings
        self.calibrator = PlateCalibrator(settings.calibration, settings.rate_hz, settings.tare)
        self.parser = FrameParser(settings.calibration.n_inputs)
        self.clock = DeviceClock()
        self._serial: Any = None
        self._sample_index = 0
        self._last_counter: int | None = None
        for key in ("frames_missing", "overload_frames"):
            self.health.extra[key] = 0.0
        self.health.extra["tare_ok"] = 0.0

    def stream_specs(self) -> list[StreamSpec]:
        """The plate stream, with geometry, calibration id and plate serial in its metadata."""
        s = self.settings
        return [s.calibration.stream_spec(s.source_id, belt=s.belt, rate_hz=s.rate_hz, name=s.name,
                                          model="serial force-plate amplifier (LSFP)")]

    def open(self) -> None:
        """Open the port; the first open also starts a tare over the first ``tare.duration_s``."""
        import serial

        try:
            self._serial = serial.Serial(self.settings.port, self.settings.baudrate, timeout=0)
            # Bytes queued while nobody listened belong to an unknown past: start clean.
            self._serial.reset_input_buffer()
        except (serial.SerialException, OSError, ValueError) as exc:
            self.close()
            raise DeviceError(f"serial plate on {self.settings.port}: cannot open ({exc}); check "
                              "the cable and that no other program holds the port") from None
        self.parser.discard()
        self.parser.frames_bad = 0
        self._last_counter = None
        self.clock.reset()
        if self.calibrator.offsets is None and not self.calibrator.taring:
            self.calibrator.start_tare()

    def close(self) -> None:
        """Close the port (safe twice); a partial frame left in the buffer counts as bad."""
        port, self._serial = self._serial, None
        if port is not None:
            port.close()
        self.health.frames_bad += self.parser.discard()

    def read(self, timeout_s: float) -> list[Chunk]:
        """Read what arrived within ``timeout_s``; DeviceError when the port goes away."""
        data, arrival = read_serial(self._serial, timeout_s, self.settings.read_chunk_bytes,
                                    f"serial plate on {self.settings.port}")
        if not data:
            return []
        bad_before = self.parser.frames_bad
        counters, rows, status = self.parser.feed(data)
        self.health.frames_bad += self.parser.frames_bad - bad_before
        if self.parser.frames_bad > bad_before:
            self.health.last_error = self.parser.bad_reasons[-1]
        if not counters:
            return []
        index = np.empty(len(counters), dtype=np.int64)
        for i, c in enumerate(counters):
            if self._last_counter is not None:
                step = (c - self._last_counter) & 0xFFFF
                if step == 0:
                    step = 1  # a repeated counter is a device fault; keep time moving
                self.health.extra["frames_missing"] += step - 1
                self._sample_index += step
            self._last_counter = c
            index[i] = self._sample_index
        self.health.frames_ok += len(counters)
        self.health.extra["overload_frames"] += sum(1 for s in status if s & 1)
        ts = self.clock.map(index / self.settings.rate_hz, arrival)
        was_taring = self.calibrator.taring
        channels = self.calibrator.process(np.asarray(rows, dtype=np.float64))
        if was_taring and not self.calibrator.taring:
            self._report_tare()
        return [Chunk(0, ts, channels.astype(np.float32))]

    def _report_tare(self) -> None:
        if self.calibrator.tare_error:
            self.health.extra["tare_ok"] = 0.0
            self.health.last_error = self.calibrator.tare_error
            log.warning("%s", self.calibrator.tare_error)
        else:
            self.health.extra["tare_ok"] = 1.0
            log.info("plate %s tared", self.settings.calibration.plate_serial)
