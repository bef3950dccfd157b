"""An x-IMU3 on a pty: inertial messages (ASCII or binary, byte-stuffed) at a set rate, ping replies.

Written from the x-IMU3 communication protocol: ASCII ``I,<us>,gx,gy,gz,ax,ay,az`` lines (deg/s, g,
four decimals) or binary 0xC9 + uint64 + 6 float32 little-endian with 0x0A/0xDB stuffing, each
message ended by 0x0A. The sensor clock counts microseconds from power-on; a replug restarts it.
The sensor holds still (``set_motion``) or rides on the tibia of a GaitScene's participant
(``play``; sensor axes = tibia axes).
"""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import numpy as np

from emulators.gait_scene import G, GaitScene
from emulators.pty_device import PtyDevice


def stuff(raw: bytes) -> bytes:
    out = bytearray()
    for b in raw:
        if b == 0x0A:
            out += b"\xdb\xdc"
        elif b == 0xDB:
            out += b"\xdb\xdd"
        else:
            out.append(b)
    return bytes(out) + b"\n"


def binary_inertial(ts_us: int, gyro_dps, acc_g) -> bytes:
    return stuff(bytes([0xC9]) + struct.pack("<Q6f", ts_us, *gyro_dps, *acc_g))


def ascii_inertial(ts_us: int, gyro_dps, acc_g) -> bytes:
    values = ",".join(f"{v:.4f}" for v in (*gyro_dps, *acc_g))
    return f"I,{ts_us},{values}\r\n".encode()


class XIMU3Emulator:
    """Stream inertial messages on a pty behind ``link``."""

    def __init__(self, link: Path, *, rate_hz: float = 400.0, binary: bool = True) -> None:
        self.rate_hz = rate_hz
        self.binary = binary
        self.device = PtyDevice(link)
        self.gyro_dps = (0.0, 0.0, 0.0)
        self.acc_g = (1.0, 0.0, 0.0)  # standing still, x up the tibia
        self.pings = 0
        self.sent = 0
        self._scene: GaitScene | None = None
        self._side = ""
        self._faults: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ximu3-emulator", daemon=True)

    @property
    def port(self) -> str:
        return str(self.device.link)

    def __enter__(self) -> XIMU3Emulator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.device.close()

    def set_motion(self, gyro_dps, acc_g) -> None:
        with self._lock:
            self.gyro_dps, self.acc_g = tuple(gyro_dps), tuple(acc_g)

    def play(self, scene: GaitScene, side: str) -> None:
        """Ride on the ``side`` tibia of ``scene``'s participant from now on."""
        with self._lock:
            self._scene, self._side = scene, side

    def inject(self, fault: str) -> None:
        """'bad_ascii', 'bad_escape', 'short_binary', 'other', 'skip4' or 'unplug'."""
        assert fault in ("bad_ascii", "bad_escape", "short_binary", "other", "skip4", "unplug")
        with self._lock:
            self._faults.append(fault)

    def _message(self, ts_us: int, motion: tuple | None = None) -> bytes:
        if motion is None:
            with self._lock:
                motion = (self.gyro_dps, self.acc_g)
        g, a = motion
        return binary_inertial(ts_us, g, a) if self.binary else ascii_inertial(ts_us, g, a)

    def _motions(self, t_s: np.ndarray) -> list[tuple] | None:
        """(gyro deg/s, acc g) of messages taken at monotonic times ``t_s``; None while still."""
        with self._lock:
            scene, side = self._scene, self._side
        if scene is None or not len(t_s):
            return None
        imu = scene.imu(side, t_s)
        acc_g = imu[:, :3] / G
        gyro_dps = np.degrees(imu[:, 3:])
        return [(tuple(gv), tuple(av)) for gv, av in zip(gyro_dps, acc_g, strict=True)]

    def _run(self) -> None:
        t0 = time.monotonic()
        k = 0
        period_us = round(1e6 / self.rate_hz)
        skip = 0
        cmd = b""
        while not self._stop.wait(0.004):
            cmd += self.device.read()
            while b"\n" in cmd:
                line, cmd = cmd.split(b"\n", 1)
                if line.strip() == b'{"ping":null}':
                    self.pings += 1
                    self.device.write(b'{"ping":{"interface":"USB","deviceName":"x-IMU3",'
                                      b'"serialNumber":"EMU-0001"}}\n')
            due = int((time.monotonic() - t0) * self.rate_hz)
            out = bytearray()
            first = k
            motions = self._motions(t0 + np.arange(k, max(k, due)) / self.rate_hz)
            while k < due:
                with self._lock:
                    fault = self._faults.pop(0) if self._faults else None
                ts_us = k * period_us
                msg = self._message(ts_us, None if motions is None else motions[k - first])
                if fault == "unplug":
                    self.device.unplug()
                    time.sleep(0.3)
                    self.device.replug()
                    t0, k, out = time.monotonic(), 0, bytearray()  # power-on again: clock restarts
                    due = 0
                    continue
                if fault == "bad_ascii":
                    msg = b"I,123,1.0,2.0\r\n"
                elif fault == "bad_escape":
                    msg = b"\xc9\xdb\x01" + msg[3:]
                elif fault == "short_binary":
                    msg = msg[:10] + b"\n"
                elif fault == "other":
                    out += b"M,%d,0.1,0.2,0.3\r\n" % ts_us
                elif fault == "skip4":
                    skip = 4
                if skip and fault != "skip4":
                    skip -= 1
                    msg = b""
                out += msg
                k += 1
                self.sent += 1
            if out:
                self.device.write(bytes(out))
