"""A Qualisys Track Manager real-time server on 127.0.0.1, enough of the QTM RT protocol for force data.

Speaks the little-endian RT protocol as documented by Qualisys: every packet is ``<uint32 size
(header included)><uint32 type>`` then the body; command, error and XML bodies are NUL-terminated
strings. On connect the server sends the command "QTM RT Interface connected"; it answers
``Version``, ``QTMVersion``, ``ByteOrder``, ``GetState``, ``GetParameters Force`` (XML) and
``StreamFrames AllFrames|Frequency:n Force`` / ``StreamFrames Stop``. Data packets hold a force
component (type 4): plate count, then per plate id, force count, force number and force count × 9
float32 (force N, moment N·m, application point m) at ``frame_rate_hz`` frames per second. Plates
carry static loads (``set_channels``) or measure a :class:`~emulators.gait_scene.GaitScene`'s
participant (``play``), force and moment in the plate's frame about its origin, as QTM streams them.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time

import numpy as np

from emulators.gait_scene import GaitScene, plate_channels

PACKET_ERROR, PACKET_COMMAND, PACKET_XML, PACKET_DATA, PACKET_NO_MORE_DATA, PACKET_EVENT = 0, 1, 2, 3, 4, 6
COMPONENT_FORCE = 4
EVENT_CAPTURE_STARTED = 3


def packet(kind: int, body: bytes) -> bytes:
    return struct.pack("<II", 8 + len(body), kind) + body


def text_packet(kind: int, text: str) -> bytes:
    return packet(kind, text.encode() + b"\0")


class QTMEmulator:
    """QTM RT server streaming one or more force plates; faults on demand."""

    def __init__(self, *, plate_ids: tuple[int, ...] = (1, 2), force_rate_hz: float = 1000.0,
                 frame_rate_hz: float = 100.0) -> None:
        self.plate_ids = plate_ids
        self.force_rate_hz = force_rate_hz
        self.frame_rate_hz = frame_rate_hz
        self.per_frame = round(force_rate_hz / frame_rate_hz)
        self.channels = {pid: np.zeros(6) for pid in plate_ids}
        self._scene: GaitScene | None = None
        self._geometry: dict[int, tuple[str, np.ndarray, np.ndarray]] = {}
        self.commands: list[str] = []
        self.connections = 0
        self.mute_closed = 0
        self.frames_sent = 0
        self._faults: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(2)
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="qtm-emulator", daemon=True)
        self.rng = np.random.default_rng(5)

    def __enter__(self) -> QTMEmulator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._server.close()

    def set_channels(self, plate_id: int, channels: np.ndarray) -> None:
        """Set the static output Fx..Mz (N, N·m) of a plate."""
        with self._lock:
            self.channels[plate_id] = np.asarray(channels, float)

    def play(self, scene: GaitScene, plates: dict[int, tuple[str, np.ndarray, np.ndarray]]) -> None:
        """Measure ``scene``'s participant: ``plates`` maps plate id to (belt, corners_m, origin_m)."""
        with self._lock:
            self._scene, self._geometry = scene, dict(plates)

    def inject(self, fault: str) -> None:
        """'truncated' (force count larger than the data), 'unknown_plate', 'nan', 'skip', 'drop'.

        Or 'mute': the next connection is accepted and never answered (a QTM busy elsewhere); the
        server serves one client at a time, so the next client is only served once the mute one
        has been closed (``mute_closed`` counts those).
        """
        assert fault in ("truncated", "unknown_plate", "nan", "skip", "drop", "mute")
        with self._lock:
            self._faults.append(fault)

    # ---- server ------------------------------------------------------------------------
    def _serve(self) -> None:
        self._server.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            try:
                self._session(client)
            except OSError:
                pass  # the client went away: wait for the next one
            finally:
                client.close()

    def _session(self, client: socket.socket) -> None:
        with self._lock:
            mute = bool(self._faults) and self._faults[0] == "mute"
            if mute:
                self._faults.pop(0)
        if mute:  # a QTM that accepted but never answers: swallow everything until the client goes
            while not self._stop.is_set():
                ready, _, _ = select.select([client], [], [], 0.05)
                if ready and not client.recv(4096):
                    self.mute_closed += 1
                    return
            return
        client.sendall(text_packet(PACKET_COMMAND, "QTM RT Interface connected"))
        buf = b""
        streaming = False
        force_number = 0
        frame_number = 0
        t0 = next_frame = time.monotonic()
        while not self._stop.is_set():
            wait = max(0.0, next_frame - time.monotonic()) if streaming else 0.05
            ready, _, _ = select.select([client], [], [], wait)
            if ready:
                data = client.recv(4096)
                if not data:
                    return
                buf += data
                while len(buf) >= 8:
                    size, kind = struct.unpack_from("<II", buf)
                    if len(buf) < size:
                        break
                    body, buf = buf[8:size], buf[size:]
                    reply, start = self._on_command(kind, body)
                    if start is not None:
                        streaming = start
                        t0 = next_frame = time.monotonic()
                    for r in reply:
                        client.sendall(r)
            if not streaming or time.monotonic() < next_frame:
                continue
            with self._lock:
                fault = self._faults.pop(0) if self._faults else None
            if fault == "drop":
                return
            if fault == "skip":
                force_number += 3 * self.per_frame  # three frames lost inside QTM
                frame_number += 3
            client.sendall(self._data_packet(frame_number, force_number, t0, fault))
            self.frames_sent += 1
            frame_number += 1
            force_number += self.per_frame
            next_frame += 1.0 / self.frame_rate_hz
            if time.monotonic() - next_frame > 1.0:
                next_frame = time.monotonic()

    def _on_command(self, kind: int, body: bytes) -> tuple[list[bytes], bool | None]:
        if kind != PACKET_COMMAND:
            return [text_packet(PACKET_ERROR, "Command parse error")], None
        text = body.rstrip(b"\0").decode(errors="replace").strip()
        self.commands.append(text)
        words = text.lower().split()
        if not words:
            return [text_packet(PACKET_ERROR, "Parse error")], None
        if words[0] == "version" and len(words) == 2:
            return [text_packet(PACKET_COMMAND, f"Version set to {words[1]}")], None
        if words[0] == "qtmversion":
            return [text_packet(PACKET_COMMAND, "QTM Version is 2024.2 (emulator)")], None
        if words[0] == "byteorder":
            return [text_packet(PACKET_COMMAND, "Byte order is little endian")], None
        if words[0] == "getstate":
            return [packet(PACKET_EVENT, bytes([EVENT_CAPTURE_STARTED]))], None
        if words[0] == "getparameters" and ("force" in words[1:] or "all" in words[1:]):
            return [text_packet(PACKET_XML, self._parameters_xml())], None
        if words[0] == "streamframes":
            if words[1:] == ["stop"]:
                return [packet(PACKET_NO_MORE_DATA, b"")], False
            if len(words) >= 3 and words[-1] == "force" and (
                    words[1] == "allframes" or words[1].startswith(("frequency:", "frequencydivisor:"))):
                return [], True
            return [text_packet(PACKET_ERROR, f"Parse error in {text!r}")], None
        return [text_packet(PACKET_ERROR, f"Parse error: unknown command {text!r}")], None

    def _parameters_xml(self) -> str:
        plates = "".join(
            f"<Plate><Plate_ID>{pid}</Plate_ID><Analog_Device_ID>1</Analog_Device_ID>"
            f"<Frequency>{self.force_rate_hz:g}</Frequency><Type>Bertec</Type>"
            f"<Name>Force-plate {pid}</Name><Length>1800</Length><Width>250</Width></Plate>"
            for pid in self.plate_ids)
        return (f"<QTM_Parameters_Ver_1.22><Force><Unit_Length>m</Unit_Length><Unit_Force>N</Unit_Force>"
                f"{plates}</Force></QTM_Parameters_Ver_1.22>")

    def _data_packet(self, frame_number: int, force_number: int, t0: float, fault: str | None) -> bytes:
        plates = b""
        with self._lock:
            chans = {pid: self.channels[pid].copy() for pid in self.plate_ids}
            scene, geometry = self._scene, dict(self._geometry)
        n = self.per_frame
        t = t0 + (force_number + np.arange(n)) / self.force_rate_hz
        for pid in self.plate_ids:
            if scene is not None and pid in geometry:
                belt, corners, origin = geometry[pid]
                rows = plate_channels(*scene.plate(belt, t), corners, origin)
            else:
                rows = np.tile(chans[pid], (n, 1))
            rows = rows + self.rng.normal(0, 0.5, (n, 6))
            if fault == "nan":
                rows[n // 2] = np.nan
            forces = b"".join(struct.pack("<9f", *row, 0.0, 0.0, 0.0) for row in rows)
            plate_id = 99 if fault == "unknown_plate" else pid
            count = n + 5 if fault == "truncated" else n
            plates += struct.pack("<iii", plate_id, count, force_number) + forces
        component = struct.pack("<i", len(self.plate_ids)) + plates
        comp = struct.pack("<II", 8 + len(component), COMPONENT_FORCE) + component
        timestamp_us = int((time.monotonic() - t0) * 1e6)
        return packet(PACKET_DATA, struct.pack("<qII", timestamp_us, frame_number, 1) + comp)
