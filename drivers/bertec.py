"""Bertec instrumented treadmill belt control over the legacy TCP remote-control protocol.

The treadmill controller is the TCP server (port 4000 by default); this driver connects, reads the
32-byte feedback packets (belt speeds, incline) and sends 64-byte speed commands built here.
Commands come from the session through :class:`~labsuite.drivers.treadmill.TreadmillDriver`.

Command packet (64 bytes, integers big-endian signed 16 bit)::

    0        format, 0
    1..8     belt speeds in mm/s: right, left, right-rear, left-rear
    9..16    belt accelerations in mm/s^2 (same order), never 0
    17..18   incline in 0.01 deg
    19..36   bytewise complement (255 - b) of bytes 1..18
    37..63   0

Feedback packet (32 bytes): byte 0 format (0), bytes 1..8 the four belt speeds (mm/s), bytes 9..10
the incline (0.01 deg), the rest reserved. A packet with another format byte, a speed or incline
outside the treadmill model's range (``BERTEC_TREADMILL``) or a speed change faster than the belt
can make is counted in ``health.frames_bad`` and never used (``TreadmillDriver`` has the rules).
"""

from __future__ import annotations

import math
import select
import socket
import struct
from dataclasses import dataclass, field

from labsuite import checks as check
from labsuite.drivers.treadmill import (
    BERTEC_TREADMILL,
    BeltState,
    TreadmillDriver,
    TreadmillModel,
    TreadmillSettings,
)
from labsuite.errors import ConfigError, DeviceError

COMMAND_SIZE = 64
FEEDBACK_SIZE = 32
COMMAND_FORMAT = 0
FEEDBACK_FORMAT = 0
DEFAULT_PORT = 4000
_INT16_MAX = 32767
# Where each feedback field sits in the packet, for messages that name the bytes.
_FEEDBACK_BYTES = {"right_m_s": "1..2", "left_m_s": "3..4", "right_rear_m_s": "5..6",
                   "left_rear_m_s": "7..8", "incline_deg": "9..10"}


def _to_int16(value: float, scale: float, what: str) -> int:
    scaled = round(value * scale)
    if not -_INT16_MAX <= scaled <= _INT16_MAX:
        raise ConfigError(f"Bertec command {what} = {value}: out of the int16 range of the protocol")
    return scaled


def encode_command(right_m_s: float, left_m_s: float, accel_m_s2: float, incline_deg: float, *,
                   right_rear_m_s: float | None = None, left_rear_m_s: float | None = None) -> bytes:
    """Build the 64-byte Bertec speed command (speeds m/s, acceleration m/s², incline deg).

    The rear belts (on four-belt treadmills) default to the front speeds. The acceleration applies
    to every belt and is sent as at least 1 mm/s², never 0 (the controller treats 0 as invalid).
    """
    for name, value in (("right_m_s", right_m_s), ("left_m_s", left_m_s), ("accel_m_s2", accel_m_s2),
                        ("incline_deg", incline_deg)):
        if not math.isfinite(value):
            raise ConfigError(f"Bertec command {name}: expected a finite number, got {value!r}")
    rr = right_m_s if right_rear_m_s is None else right_rear_m_s
    lr = left_m_s if left_rear_m_s is None else left_rear_m_s
    speeds = [_to_int16(v, 1000.0, n) for v, n in ((right_m_s, "right_m_s"), (left_m_s, "left_m_s"),
                                                    (rr, "right_rear_m_s"), (lr, "left_rear_m_s"))]
    accel = max(1, abs(_to_int16(accel_m_s2, 1000.0, "accel_m_s2")))
    incline = _to_int16(incline_deg, 100.0, "incline_deg")
    body = struct.pack(">4h4hh", *speeds, accel, accel, accel, accel, incline)
    packet = bytes([COMMAND_FORMAT]) + body + bytes(255 - b for b in body)
    return packet + bytes(COMMAND_SIZE - len(packet))


def decode_feedback(packet: bytes, model: TreadmillModel = BERTEC_TREADMILL) -> BeltState:
    """Decode one 32-byte feedback packet, every field range-checked against ``model``.

    DeviceError naming the byte(s) and the field when it is malformed or out of range.
    """
    if len(packet) != FEEDBACK_SIZE:
        raise DeviceError(f"Bertec feedback: expected {FEEDBACK_SIZE} bytes, got {len(packet)}")
    if packet[0] != FEEDBACK_FORMAT:
        raise DeviceError(f"Bertec feedback byte 0 (format): expected {FEEDBACK_FORMAT}, got {packet[0]}")
    right, left, right_rear, left_rear, incline = struct.unpack_from(">4hh", packet, 1)
    state = BeltState(right / 1000.0, left / 1000.0, incline / 100.0,
                      right_rear_m_s=right_rear / 1000.0, left_rear_m_s=left_rear / 1000.0)
    problem = model.frame_problem(state)
    if problem is not None:
        name, text = problem
        raise DeviceError(f"Bertec feedback bytes {_FEEDBACK_BYTES[name]} ({name}): {text}")
    return state


@dataclass(frozen=True)
class BertecSettings:
    """Where the Bertec controller listens, and the treadmill's limits."""

    host: str
    port: int = DEFAULT_PORT
    connect_timeout_s: float = 3.0
    treadmill: TreadmillSettings = field(
        default_factory=lambda: TreadmillSettings(source_id="labsuite-bertec-treadmill",
                                                  manufacturer="Bertec",
                                                  model="instrumented treadmill"))

    def __post_init__(self) -> None:
        check.text("Bertec ", "host", self.host, "a host name or IP address")
        check.integer("Bertec ", "port", self.port, low=1, high=65535)
        check.positive("Bertec ", self, "connect_timeout_s")


def parse_host_port(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Parse ``HOST[:PORT]``; ConfigError saying what was expected."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, str(default_port)
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"address {text!r}: expected HOST:PORT with a numeric port") from None
    if not host or not 0 < port < 65536:
        raise ConfigError(f"address {text!r}: expected HOST:PORT with a port in 1..65535")
    return host, port


class BertecTreadmill(TreadmillDriver):
    """Bertec treadmill over TCP: feedback in, commands out; see the module docstring for bytes."""

    MODEL = BERTEC_TREADMILL

    def __init__(self, settings: BertecSettings) -> None:
        super().__init__(settings.treadmill)
        self.bertec = settings
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    def _connect(self) -> None:
        self._buffer.clear()
        try:
            self._sock = socket.create_connection((self.bertec.host, self.bertec.port),
                                                  timeout=self.bertec.connect_timeout_s)
        except OSError as exc:
            raise DeviceError(f"Bertec treadmill at {self.bertec.host}:{self.bertec.port}: cannot "
                              f"connect ({exc}); is the treadmill software running with remote "
                              "control enabled?") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self._buffer:
            # A partial packet left when the connection ended is a bad frame, not data.
            self.health.frames_bad += 1
            self._buffer.clear()

    def _send_belt_command(self, right_m_s: float, left_m_s: float, accel_m_s2: float,
                           incline_deg: float) -> None:
        if self._sock is None:
            raise DeviceError("Bertec treadmill: not connected")
        packet = encode_command(right_m_s, left_m_s, accel_m_s2, incline_deg)
        try:
            self._sock.sendall(packet)
        except OSError as exc:
            raise DeviceError(f"Bertec treadmill: sending a command failed ({exc})") from None

    def _read_frames(self, timeout_s: float) -> list[BeltState | str]:
        sock = self._sock
        if sock is None:
            raise DeviceError("Bertec treadmill: not connected")
        try:
            ready, _, _ = select.select([sock], [], [], max(timeout_s, 0.0))
            while ready:
                data = sock.recv(4096)
                if not data:
                    raise DeviceError(f"Bertec treadmill at {self.bertec.host}:{self.bertec.port} "
                                      "closed the connection")
                self._buffer.extend(data)
                ready, _, _ = select.select([sock], [], [], 0.0)
        except OSError as exc:
            raise DeviceError(f"Bertec treadmill: connection lost ({exc})") from None
        frames: list[BeltState | str] = []
        while len(self._buffer) >= FEEDBACK_SIZE:
            packet = bytes(self._buffer[:FEEDBACK_SIZE])
            del self._buffer[:FEEDBACK_SIZE]
            try:
                frames.append(decode_feedback(packet, self.MODEL))
            except DeviceError as exc:
                frames.append(str(exc))
        return frames
