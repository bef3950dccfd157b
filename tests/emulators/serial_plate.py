"""A serial force-plate amplifier speaking LSFP (drivers/serial_plate.py docstring) on a pty.

The plate's physics is computed here on its own terms (``emulators.gait_scene.plate_channels``): a
static mass at a lab point, or the participant of a :class:`~emulators.gait_scene.GaitScene`
running on the belt, pushes on the plate, the moments about the sensor origin are r × F (plus the
free moment), and the amplifier outputs the ADC counts that the plate's *true* matrix maps to
those channels, plus a zero offset and noise. The CRC is a bitwise implementation of
CRC-16/CCITT-FALSE, independent of the driver's.
"""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import numpy as np

from emulators.gait_scene import GaitScene, plate_channels
from emulators.pty_device import PtyDevice

G = 9.80665


def crc16_ccitt_false(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def point_load_channels(mass_kg: float, point_m: tuple[float, float], corners_m: np.ndarray,
                        origin_m: np.ndarray) -> np.ndarray:
    """Fx..Mz (plate frame, about the sensor origin) of a mass resting at a lab point on the plate."""
    return plate_channels(np.array([[0.0, 0.0, mass_kg * G]]), np.array([point_m]), np.zeros(1),
                          corners_m, origin_m)[0]


class SerialPlateEmulator:
    """Stream LSFP frames at ``rate_hz`` on a pty behind ``link``; faults on demand."""

    def __init__(self, link: Path, true_matrix: np.ndarray, corners_m: np.ndarray, origin_m: np.ndarray,
                 *, rate_hz: float = 1000.0, zero_counts: np.ndarray | None = None,
                 noise_counts: float = 20.0, seed: int = 1) -> None:
        self.matrix = np.asarray(true_matrix, float)
        self.n = self.matrix.shape[1]
        self.corners_m = np.asarray(corners_m, float)
        self.origin_m = np.asarray(origin_m, float)
        self.rate_hz = rate_hz
        self.zero = (np.zeros(self.n) if zero_counts is None else np.asarray(zero_counts, float))
        self.noise = noise_counts
        self.rng = np.random.default_rng(seed)
        self.device = PtyDevice(link)
        self.counter = 0
        self.frames_sent = 0
        self.max_lag_s = 0.0
        self._channels = np.zeros(6)
        self._scene: GaitScene | None = None
        self._belt = ""
        self._pinv = np.linalg.pinv(self.matrix)
        self._faults: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lsfp-emulator", daemon=True)

    @property
    def port(self) -> str:
        return str(self.device.link)

    def __enter__(self) -> SerialPlateEmulator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.device.close()

    def load(self, mass_kg: float, point_m: tuple[float, float]) -> None:
        """Put a static mass at a lab point (x, y in m)."""
        ch = point_load_channels(mass_kg, point_m, self.corners_m, self.origin_m)
        with self._lock:
            self._channels = ch

    def unload(self) -> None:
        with self._lock:
            self._channels = np.zeros(6)

    def play(self, scene: GaitScene, belt: str) -> None:
        """Measure ``scene``'s participant on ``belt`` (left, right, single) from now on."""
        with self._lock:
            self._scene, self._belt = scene, belt

    def inject(self, fault: str) -> None:
        """'bad_crc', 'bad_count', 'truncated', 'garbage', 'skip5' or 'unplug'."""
        assert fault in ("bad_crc", "bad_count", "truncated", "garbage", "skip5", "unplug")
        with self._lock:
            self._faults.append(fault)

    def frame(self, counter: int, counts: np.ndarray, *, status: int = 0, n: int | None = None) -> bytes:
        body = struct.pack(f"<BBH{self.n}i", self.n if n is None else n, status, counter & 0xFFFF,
                           *[int(v) for v in counts])
        return b"\xa5\x5a" + body + struct.pack("<H", crc16_ccitt_false(body))

    def _counts(self, t_s: np.ndarray) -> np.ndarray:
        """Raw counts (n, channels) of frames taken at monotonic times ``t_s``."""
        with self._lock:
            ch, scene, belt = self._channels, self._scene, self._belt
        if scene is not None:
            grf, cop, tz = scene.plate(belt, t_s)
            chans = plate_channels(grf, cop, tz, self.corners_m, self.origin_m)
        else:
            chans = np.tile(ch, (len(t_s), 1))
        # A 6x8 matrix has many raw solutions; the least-squares one is a valid plate state.
        raw = chans @ self._pinv.T
        return np.round(raw + self.zero + self.rng.normal(0, self.noise, (len(t_s), self.n)))

    def _run(self) -> None:
        t0 = time.monotonic()
        k = 0
        drop = 0
        while not self._stop.wait(0.004):
            now = time.monotonic()
            due = int((now - t0) * self.rate_hz)
            if due > k:  # how late the oldest frame of this batch goes out (the machine's load)
                self.max_lag_s = max(self.max_lag_s, now - (t0 + k / self.rate_hz))
            if due - k > 5 * self.rate_hz:  # fell far behind (suspended): skip, as a device would
                k = due - 1
            out = bytearray()
            batch = self._counts(t0 + np.arange(k, due) / self.rate_hz) if due > k else None
            first = k
            while k < due:
                with self._lock:
                    fault = self._faults.pop(0) if self._faults else None
                assert batch is not None
                counts = batch[k - first]
                frame = self.frame(self.counter, counts)
                if fault == "unplug":
                    self.device.unplug()
                    time.sleep(0.3)
                    self.device.replug()
                    out.clear()
                elif fault == "bad_crc":
                    frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
                elif fault == "bad_count":
                    frame = self.frame(self.counter, counts, n=self.n + 1)
                elif fault == "truncated":
                    frame = frame[:len(frame) // 2]
                elif fault == "garbage":
                    out.extend(b"\x00\x13\x37\xa5\xff")
                elif fault == "skip5":
                    drop = 5  # the next five frames are lost on the wire: counter and time move on
                if drop > 0 and fault != "skip5":
                    drop -= 1
                    frame = b""
                out.extend(frame)
                self.counter = (self.counter + 1) & 0xFFFF
                self.frames_sent += 1
                k += 1
            if out:
                self.device.write(bytes(out))
