"""Force plates through Qualisys Track Manager's real-time (RT) server, via the official ``qtm-rt``.

QTM reads the plates' amplifiers and streams force frames (force N, moment N·m about the plate
origin, plate frame); this driver subscribes to the force component, checks every frame, applies
the lab's calibration matrix (usually the identity: QTM has calibrated already; a signed
permutation re-maps QTM's plate axes), tares, and publishes Fx..Mz with the calibration id.
qtm-rt is asyncio-based: its event loop runs on a private thread and hands frames to ``read``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import struct
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labsuite import checks as check
from labsuite.calibration import PlateCalibration, PlateCalibrator, TareSettings
from labsuite.drivers.base import Chunk, Driver
from labsuite.drivers.serial_plate import DeviceClock
from labsuite.errors import ConfigError, DeviceError
from labsuite.streams.contracts import BELTS, StreamSpec

log = logging.getLogger(__name__)

_PLATE_HEADER = struct.Struct("<iii")
_FORCE_SIZE = 36  # 9 float32: force xyz, moment xyz, application point xyz


@dataclass(frozen=True)
class QTMPlateSettings:
    """Where QTM runs, which of its plates to read, and the calibration/tare to apply."""

    host: str
    source_id: str
    belt: str
    calibration: PlateCalibration
    plate_id: int = 1
    port: int = 22223
    rate_hz: float = 1000.0
    tare: TareSettings = field(default_factory=TareSettings)
    protocol_version: str = "1.22"
    connect_timeout_s: float = 5.0
    name: str | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("QTM host: expected the name or address of the QTM computer")
        check.one_of("QTM plate ", "belt", self.belt, BELTS)
        if self.plate_id < 1:
            raise ConfigError(f"QTM plate_id: expected QTM's plate number (1, 2, ...), got {self.plate_id}")
        if self.calibration.n_inputs != 6:
            raise ConfigError(f"QTM plate calibration {self.calibration.calibration_id!r}: QTM sends 6 "
                              f"channels; expected a 6x6 matrix, got 6x{self.calibration.n_inputs}")
        if not self.rate_hz > 0:
            raise ConfigError(f"QTM plate rate_hz: expected > 0, got {self.rate_hz!r}")


def parse_force_frame(data: bytes, component_pos: int, plate_id: int) -> tuple[int, np.ndarray] | None:
    """Read one plate's samples from a force component; None when the frame lacks the plate.

    ``component_pos`` is the position of the component body (after its 8-byte header) in
    ``data``. Returns (force_number of the first sample, (n, 6) force and moment). Raises
    DeviceError naming the byte offset when the component is inconsistent.
    """
    size, _kind = struct.unpack_from("<II", data, component_pos - 8)
    end = component_pos - 8 + size
    if end > len(data):
        raise DeviceError(f"QTM force component at byte {component_pos - 8}: size {size} runs past "
                          f"the packet end ({len(data)} bytes)")
    (plate_count,) = struct.unpack_from("<i", data, component_pos)
    pos = component_pos + 4
    found = None
    for _ in range(plate_count):
        if pos + _PLATE_HEADER.size > end:
            raise DeviceError(f"QTM force component: plate header at byte {pos} past the component end")
        pid, count, number = _PLATE_HEADER.unpack_from(data, pos)
        pos += _PLATE_HEADER.size
        if count < 0 or pos + count * _FORCE_SIZE > end:
            raise DeviceError(f"QTM force component: plate {pid} claims {count} samples at byte {pos}, "
                              f"but only {(end - pos) // _FORCE_SIZE} fit")
        if pid == plate_id:
            values = np.frombuffer(data, dtype="<f4", count=count * 9, offset=pos).reshape(count, 9)
            found = (number, values[:, :6].astype(np.float64))
        pos += count * _FORCE_SIZE
    if pos != end:
        raise DeviceError(f"QTM force component: {end - pos} unexplained bytes at byte {pos}")
    return found


class QTMPlateDriver(Driver):
    """One QTM force plate (``plate_id``) published as a labsuite force-plate stream."""

    def __init__(self, settings: QTMPlateSettings) -> None:
        super().__init__()
        self.settings = settings
        self.calibrator = PlateCalibrator(settings.calibration, settings.rate_hz, settings.tare)
        self.clock = DeviceClock()
        self.parameters_xml = ""
        self._frames: queue.Queue[tuple[float, int, np.ndarray]] = queue.Queue(maxsize=10_000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._connection: Any = None
        self._transport: Any = None
        self._lost: str | None = None
        self._next_number: int | None = None
        self._sample_index = 0
        for key in ("frames_missing", "frames_without_plate", "queue_overflows"):
            self.health.extra[key] = 0.0
        self.health.extra["tare_ok"] = 0.0

    def stream_specs(self) -> list[StreamSpec]:
        """The plate stream, with the calibration's geometry, id and plate serial."""
        s = self.settings
        return [s.calibration.stream_spec(s.source_id, belt=s.belt, rate_hz=s.rate_hz, name=s.name,
                                          model=f"QTM force plate {s.plate_id}")]

    # ---- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        """Connect to QTM, check the plate exists at the expected rate, start streaming."""
        self._lost = None
        self._next_number = None
        self.clock.reset()
        while not self._frames.empty():
            self._frames.get_nowait()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="qtm-rt", daemon=True)
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), loop)
        try:
            fut.result(timeout=self.settings.connect_timeout_s * 3)
        except (DeviceError, TimeoutError) as exc:
            fut.cancel()
            self.close()
            if isinstance(exc, DeviceError):
                raise
            raise DeviceError(f"QTM at {self.settings.host}:{self.settings.port}: no answer within "
                              f"{self.settings.connect_timeout_s * 3:.0f} s") from None
        if self.calibrator.offsets is None and not self.calibrator.taring:
            self.calibrator.start_tare()

    async def _start(self) -> None:
        import qtm_rt

        s = self.settings
        conn = await self._connect_qtm()
        self._connection = conn
        try:
            xml = await conn.get_parameters(parameters=["force"])
        except (TimeoutError, qtm_rt.QRTCommandException) as exc:
            raise DeviceError(f"QTM at {s.host}:{s.port}: GetParameters Force failed ({exc})") from None
        self.parameters_xml = xml.decode(errors="replace") if isinstance(xml, bytes) else str(xml)
        self._check_parameters(self.parameters_xml)
        try:
            await conn.stream_frames(frames="allframes", components=["force"], on_packet=self._on_packet)
        except (TimeoutError, qtm_rt.QRTCommandException) as exc:
            raise DeviceError(f"QTM at {s.host}:{s.port}: StreamFrames failed ({exc})") from None

    async def _connect_qtm(self) -> Any:
        """``qtm_rt.connect`` with every wait bounded and the socket closed on any failure.

        qtm_rt's own connect waits for the Version answer without a limit and, when it fails,
        leaves its connection open: a QTM that accepted but did not answer kept one socket per
        attempt, and a server that serves one client at a time never saw the next attempt.
        """
        import qtm_rt
        from qtm_rt.protocol import QTMProtocol
        from qtm_rt.qrt import QRTConnection

        s = self.settings
        loop = asyncio.get_running_loop()
        where = f"QTM at {s.host}:{s.port}"
        try:
            transport, protocol = await asyncio.wait_for(loop.create_connection(
                lambda: QTMProtocol(loop=loop, on_disconnect=self._on_disconnect), s.host, s.port),
                s.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            raise DeviceError(f"{where}: cannot connect ({exc or 'no answer'}; is QTM running with "
                              "the real-time server enabled, and is this its little-endian port?)"
                              ) from None
        self._transport = transport
        try:
            await asyncio.wait_for(protocol.set_version(s.protocol_version), s.connect_timeout_s)
        except (TimeoutError, qtm_rt.QRTCommandException) as exc:
            raise DeviceError(f"{where}: connected, but no answer to 'Version "
                              f"{s.protocol_version}' within {s.connect_timeout_s:g} s ({exc or 'timeout'})"
                              ) from None
        return QRTConnection(protocol, timeout=s.connect_timeout_s)

    def _check_parameters(self, xml: str) -> None:
        s = self.settings
        try:
            root = ET.fromstring(xml)
        except ET.ParseError as exc:
            raise DeviceError(f"QTM force parameters are not valid XML ({exc})") from None
        plates = {p.findtext("Plate_ID", ""): p for p in root.iter("Plate")}
        plate = plates.get(str(s.plate_id))
        if plate is None:
            raise DeviceError(f"QTM has no force plate {s.plate_id}; its plates are {sorted(plates)} "
                              "(check plate_id in the lab file)")
        freq_text = plate.findtext("Frequency", "")
        try:
            freq = float(freq_text)
        except ValueError:
            raise DeviceError(f"QTM plate {s.plate_id}: Frequency {freq_text!r} is not a number") from None
        if not math.isclose(freq, s.rate_hz, rel_tol=1e-6):
            raise DeviceError(f"QTM plate {s.plate_id} streams at {freq:g} Hz but the lab file says "
                              f"rate_hz {s.rate_hz:g}; make them agree")

    def close(self) -> None:
        """Stop streaming, disconnect, stop the event loop thread (safe to call twice)."""
        loop, self._loop = self._loop, None
        conn, self._connection = self._connection, None
        transport, self._transport = self._transport, None
        if loop is not None:
            if transport is not None:
                import qtm_rt

                try:
                    asyncio.run_coroutine_threadsafe(_stop_and_disconnect(conn, transport),
                                                     loop).result(timeout=3.0)
                except (TimeoutError, OSError, RuntimeError, qtm_rt.QRTCommandException) as exc:
                    log.info("QTM: closing after a lost connection (%s)", exc)
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5.0)
            loop.close()
        self._thread = None

    # ---- data ----------------------------------------------------------------------------------
    def _on_disconnect(self, exc: Exception | None) -> None:
        self._lost = f"QTM at {self.settings.host}:{self.settings.port}: connection lost ({exc or 'closed'})"

    def _on_packet(self, packet: Any) -> None:
        """qtm-rt callback (event-loop thread): check the frame, queue this plate's samples."""
        import pylsl
        from qtm_rt.packet import QRTComponentType

        arrival = pylsl.local_clock()
        pos = packet.components.get(QRTComponentType.ComponentForce)
        if pos is None:
            self.health.frames_bad += 1
            self.health.last_error = "QTM data frame without a force component"
            return
        try:
            found = parse_force_frame(packet.data, pos, self.settings.plate_id)
        except (DeviceError, struct.error, ValueError) as exc:
            self.health.frames_bad += 1
            self.health.last_error = str(exc)
            return
        if found is None:
            self.health.extra["frames_without_plate"] += 1
            self.health.frames_bad += 1
            self.health.last_error = f"QTM frame {packet.framenumber} has no plate {self.settings.plate_id}"
            return
        number, values = found
        if not np.isfinite(values).all():
            self.health.frames_bad += 1
            self.health.last_error = (f"QTM frame {packet.framenumber}: NaN or inf in plate "
                                      f"{self.settings.plate_id}")
            return
        try:
            self._frames.put_nowait((arrival, number, values))
        except queue.Full:
            self.health.extra["queue_overflows"] += 1

    def read(self, timeout_s: float) -> list[Chunk]:
        """Samples of the frames received within ``timeout_s``; DeviceError once QTM is gone."""
        if self._lost is not None:
            raise DeviceError(self._lost)
        try:
            items = [self._frames.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._frames.get_nowait())
            except queue.Empty:
                break
        chunks = []
        for arrival, number, values in items:
            n = len(values)
            if n == 0:
                continue
            if self._next_number is not None:
                gap = number - self._next_number
                if gap < 0:
                    self.health.frames_bad += 1
                    self.health.last_error = (f"QTM force number went back from {self._next_number} "
                                              f"to {number}")
                    continue
                self.health.extra["frames_missing"] += gap
                self._sample_index += gap
            self._next_number = number + n
            index = self._sample_index + np.arange(n)
            self._sample_index += n
            ts = self.clock.map(index / self.settings.rate_hz, arrival)
            was_taring = self.calibrator.taring
            data = self.calibrator.process(values)
            if was_taring and not self.calibrator.taring:
                ok = not self.calibrator.tare_error
                self.health.extra["tare_ok"] = 1.0 if ok else 0.0
                if not ok:
                    self.health.last_error = self.calibrator.tare_error
                    log.warning("%s", self.calibrator.tare_error)
            self.health.frames_ok += 1
            chunks.append(Chunk(0, ts, data.astype(np.float32)))
        return chunks


async def _stop_and_disconnect(conn: Any, transport: Any) -> None:
    """Stop streaming (if connected), close the socket, and let the loop finish closing it."""
    try:
        if conn is not None and conn.has_transport():
            await conn.stream_frames_stop()
    finally:
        transport.close()
        for _ in range(3):  # the socket itself is closed in a callback of a later loop turn
            await asyncio.sleep(0)
