"""x-IMU3 inertial sensor on a serial port (USB CDC or UART), mounted on the tibia.

Decodes the x-IMU3 communication protocol's inertial messages, ASCII or binary, maps the
sensor's microsecond timestamps onto the LSL clock and publishes ax ay az (m/s²) gx gy gz (rad/s)
in the tibia frame of ``imu_spec`` (x along the tibia towards the knee).

Inertial message (x-IMU3 user manual, "Communication protocol"); every message ends with 0x0A::

    ASCII   I,<timestamp us>,<gyr x>,<gyr y>,<gyr z>,<acc x>,<acc y>,<acc z> 0x0A   (deg/s, g)
    binary  0xC9 ('I' + 0x80), uint64 timestamp (us), 6 x float32, little-endian, then 0x0A;
            byte-stuffed: 0x0A -> 0xDB 0xDC, 0xDB -> 0xDB 0xDD

Other message types (magnetometer, quaternion, ...) are skipped and counted; a malformed inertial
message (field count, number format, stuffing, length) is counted in ``health.frames_bad``.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from labsuite import checks as check
from labsuite.constants import GRAVITY_M_S2
from labsuite.drivers.base import Chunk, Driver
from labsuite.drivers.serial_plate import DeviceClock, read_serial
from labsuite.errors import ConfigError, DeviceError
from labsuite.streams.contracts import StreamSpec, imu_spec

log = logging.getLogger(__name__)

END, ESC, ESC_END, ESC_ESC = 0x0A, 0xDB, 0xDC, 0xDD
BINARY_INERTIAL = 0x80 + ord("I")
_BINARY_INERTIAL = struct.Struct("<Q6f")
_MAX_LINE = 512
_MAX_READ_BYTES = 1 << 20  # one read takes what is waiting, up to this much


def unstuff(body: bytes) -> bytes:
    """Undo x-IMU3 byte stuffing; DeviceError naming the offset of an invalid escape."""
    if ESC not in body:
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        b = body[i]
        if b == ESC:
            nxt = body[i + 1] if i + 1 < len(body) else None
            if nxt == ESC_END:
                out.append(END)
            elif nxt == ESC_ESC:
                out.append(ESC)
            else:
                got = "end of message" if nxt is None else hex(nxt)
                raise DeviceError(f"x-IMU3 binary message byte {i + 1}: expected 0xDC or 0xDD after "
                                  f"the escape byte 0xDB, got {got}")
            i += 2
        else:
            out.append(b)
            i += 1
    return bytes(out)


def decode_inertial(message: bytes) -> tuple[int, np.ndarray] | None:
    """Decode one message (without its 0x0A); (timestamp_us, [gx gy gz ax ay az] deg/s, g).

    Returns None for a well-formed message of another type; DeviceError if an inertial message
    is malformed.
    """
    if not message:
        return None
    first = message[0]
    if first == BINARY_INERTIAL:
        raw = unstuff(message)
        if len(raw) != 1 + _BINARY_INERTIAL.size:
            raise DeviceError(f"x-IMU3 binary inertial message: expected {1 + _BINARY_INERTIAL.size} "
                              f"bytes after unstuffing, got {len(raw)}")
        ts, *values = _BINARY_INERTIAL.unpack_from(raw, 1)
        return ts, np.asarray(values, dtype=np.float64)
    if first == ord("I"):
        text = message.rstrip(b"\r").decode("ascii", errors="replace")
        fields = text.split(",")
        if len(fields) != 8:
            raise DeviceError(f"x-IMU3 ASCII inertial message {text[:60]!r}: expected 8 comma-separated "
                              f"fields, got {len(fields)}")
        try:
            ts = int(fields[1])
            values = [float(v) for v in fields[2:]]
        except ValueError:
            raise DeviceError(f"x-IMU3 ASCII inertial message {text[:60]!r}: expected an integer "
                              "timestamp and six numbers") from None
        return ts, np.asarray(values, dtype=np.float64)
    return None


def parse_axes(axes: str) -> np.ndarray:
    """Parse an axis map like ``"-z,y,x"`` (tibia x, y, z from sensor axes) into a 3x3 matrix."""
    parts = [p.strip().lower() for p in axes.split(",")]
    rot = np.zeros((3, 3))
    if len(parts) != 3:
        raise ConfigError(f"x-IMU3 axes {axes!r}: expected three comma-separated axes such as '-z,y,x'")
    for row, part in enumerate(parts):
        sign = -1.0 if part.startswith("-") else 1.0
        name = part.lstrip("+-")
        if name not in ("x", "y", "z"):
            raise ConfigError(f"x-IMU3 axes {axes!r}: {part!r} is not one of x, y, z, -x, -y, -z")
        rot[row, "xyz".index(name)] = sign
    if abs(abs(np.linalg.det(rot)) - 1.0) > 1e-9:
        raise ConfigError(f"x-IMU3 axes {axes!r}: each sensor axis must be used exactly once")
    return rot


@dataclass(frozen=True)
class XIMU3Settings:
    """One x-IMU3: port, nominal rate, which tibia, and how its axes sit on the tibia."""

    port: str
    source_id: str
    side: str
    location: str = ""
    baudrate: int = 115200
    rate_hz: float = 400.0
    axes: str = "x,y,z"
    name: str | None = None
    serial_number: str = ""

    def __post_init__(self) -> None:
        check.text("x-IMU3 ", "port", self.port, "a device path such as /dev/ttyACM0")
        check.one_of("x-IMU3 ", "side", self.side, ("left", "right"))
        check.positive("x-IMU3 ", self, "rate_hz")
        parse_axes(self.axes)


class XIMU3Driver(Driver):
    """An x-IMU3 publishing the labsuite IMU stream (tibia frame, SI units)."""

    def __init__(self, settings: XIMU3Settings) -> None:
        super().__init__()
        self.settings = settings
        self.rotation = parse_axes(settings.axes)
        self.clock = DeviceClock()
        self.device_info: dict[str, Any] = {}
        self._serial: Any = None
        self._buf = bytearray()
        self._last_us: int | None = None
        self._elapsed_s = 0.0
        self._mapped: list[tuple[np.ndarray, list[np.ndarray]]] = []
        for key in ("frames_missing", "other_messages", "clock_resets"):
            self.health.extra[key] = 0.0

    def stream_specs(self) -> list[StreamSpec]:
        """The IMU stream, tibia-mounted."""
        s = self.settings
        return [imu_spec(s.source_id, location=s.location or f"{s.side} distal tibia", side=s.side,
                         rate_hz=s.rate_hz, name=s.name, manufacturer="x-io Technologies",
                         model="x-IMU3", serial_number=s.serial_number)]

    def open(self) -> None:
        """Open the port and ping the device (its answer fills ``device_info``)."""
        import serial

        try:
            self._serial = serial.Serial(self.settings.port, self.settings.baudrate, timeout=0)
            self._serial.reset_input_buffer()
            self._serial.write(b'{"ping":null}\n')
        except (serial.SerialException, OSError, ValueError) as exc:
            self.close()
            raise DeviceError(f"x-IMU3 on {self.settings.port}: cannot open ({exc}); check the cable "
                              "and that the x-IMU3 GUI is not holding the port") from None
        self._buf.clear()
        self._last_us = None
        self.clock.reset()

    def close(self) -> None:
        """Close the port (safe twice); a partial message left behind counts as bad."""
        port, self._serial = self._serial, None
        if port is not None:
            port.close()
        if self._buf:
            self.health.frames_bad += 1
            self._buf.clear()

    def read(self, timeout_s: float) -> list[Chunk]:
        """Decode the inertial messages that arrived within ``timeout_s``."""
        data, arrival = read_serial(self._serial, timeout_s, _MAX_READ_BYTES,
                                    f"x-IMU3 on {self.settings.port}")
        if not data:
            return []
        self._buf.extend(data)
        stamps: list[float] = []
        rows: list[np.ndarray] = []
        self._mapped = []
        while True:
            end = self._buf.find(END)
            if end < 0:
                if len(self._buf) > _MAX_LINE:  # no terminator in sight: line noise
                    self.health.frames_bad += 1
                    self.health.last_error = f"x-IMU3: {len(self._buf)} bytes without a message end"
                    self._buf.clear()
                break
            message = bytes(self._buf[:end])
            del self._buf[:end + 1]
            self._message(message, stamps, rows, arrival)
        if rows:
            self._mapped.append((self.clock.map(np.asarray(stamps), arrival), rows))
        chunks = []
        for ts, block in self._mapped:
            values = np.asarray(block)
            gyro = np.deg2rad(values[:, 0:3]) @ self.rotation.T
            acc = values[:, 3:6] * GRAVITY_M_S2 @ self.rotation.T
            chunks.append(Chunk(0, ts, np.hstack([acc, gyro]).astype(np.float32)))
        return chunks

    def _message(self, message: bytes, stamps: list[float], rows: list[np.ndarray],
                 arrival: float) -> None:
        if message.startswith(b"{"):
            self._response(message)
            return
        try:
            decoded = decode_inertial(message)
        except DeviceError as exc:
            self.health.frames_bad += 1
            self.health.last_error = str(exc)
            return
        if decoded is None:
            self.health.extra["other_messages"] += 1
            return
        ts_us, values = decoded
        if not np.isfinite(values).all():
            self.health.frames_bad += 1
            self.health.last_error = "x-IMU3 inertial message with NaN or inf"
            return
        if self._last_us is not None:
            step_us = ts_us - self._last_us
            if step_us <= 0:
                # The device restarted its clock (reset, power cycle): samples so far keep the
                # old mapping, later ones start a new one.
                self.health.extra["clock_resets"] += 1
                if rows:
                    self._mapped.append((self.clock.map(np.asarray(stamps), arrival), list(rows)))
                stamps.clear()
                rows.clear()
                self.clock.reset()
                self._elapsed_s = 0.0
            else:
                period_us = 1e6 / self.settings.rate_hz
                missing = round(step_us / period_us) - 1
                if missing > 0:
                    self.health.extra["frames_missing"] += missing
                self._elapsed_s += step_us * 1e-6
        self._last_us = ts_us
        self.health.frames_ok += 1
        stamps.append(self._elapsed_s)
        rows.append(values)

    def _response(self, message: bytes) -> None:
        try:
            obj = json.loads(message.decode("utf-8", errors="replace"))
        except json.JSONDecodeError:
            self.health.frames_bad += 1
            self.health.last_error = f"x-IMU3 response {message[:60]!r} is not JSON"
            return
        if isinstance(obj, dict) and isinstance(obj.get("ping"), dict):
            self.device_info = dict(obj["ping"])
            log.info("x-IMU3 on %s: %s", self.settings.port, self.device_info)
