"""A Bertec treadmill controller on 127.0.0.1: the legacy remote-control protocol over real TCP.

Independent of the driver's encoder: every byte of every command is checked here from the layout in
issue 7 (format byte, big-endian int16 speeds/accelerations/incline, complement bytes, zero tail,
accelerations never 0) and any violation is recorded in ``violations``. Belts ramp towards the
commanded speeds at the commanded acceleration, the incline tilts at ``incline_rate_deg_s``;
32-byte feedback packets go out at ``feedback_rate_hz``. Faults on demand: a malformed feedback
packet, a partial packet, a dropped connection, junk (random packets with a valid format byte,
as from a controller whose memory is corrupt), or a whole server that speaks only junk.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

FAULTS = ("bad_format", "bad_speed", "partial_then_drop", "drop", "silence", "junk", "speed_jump",
          "incline_jump")


@dataclass(frozen=True)
class ReceivedCommand:
    """One valid command as the emulator understood it (mm/s, mm/s², 0.01 deg)."""

    speeds_mm_s: tuple[int, int, int, int]
    accels_mm_s2: tuple[int, int, int, int]
    incline_cdeg: int
    raw: bytes
    at_s: float = 0.0  # time.monotonic() when it arrived (the LSL clock on Linux)


class BertecEmulator:
    """Run a fake Bertec controller in a thread; use as a context manager."""

    def __init__(self, *, incline_deg: float = 0.0, feedback_rate_hz: float = 100.0,
                 max_speed_mm_s: int = 6500, incline_rate_deg_s: float = 2.0, junk_only: bool = False,
                 seed: int = 11) -> None:
        self.feedback_rate_hz = feedback_rate_hz
        self.max_speed_mm_s = max_speed_mm_s
        self.incline_rate_cdeg_s = incline_rate_deg_s * 100
        self.junk_only = junk_only
        self.speeds_mm_s = [0.0, 0.0, 0.0, 0.0]
        self.targets_mm_s = [0.0, 0.0, 0.0, 0.0]
        self.accels_mm_s2 = [1000.0] * 4
        self.incline = float(round(incline_deg * 100))  # 0.01 deg, ramping towards the target
        self.target_incline_cdeg = round(incline_deg * 100)
        self.junk_sent: list[bytes] = []
        self._rng = random.Random(seed)
        self.commands: list[ReceivedCommand] = []
        self.violations: list[str] = []
        self.connections = 0
        self.feedback_sent = 0
        self._faults: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(1)
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="bertec-emulator", daemon=True)

    @property
    def address(self) -> str:
        """``HOST:PORT`` for the driver and the CLI."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> BertecEmulator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving and close every socket."""
        self._stop.set()
        self._thread.join(timeout=10.0)
        self._server.close()

    def inject(self, fault: str, count: int = 1) -> None:
        """Queue ``count`` faults, one per feedback period: any of :data:`FAULTS`.

        'silence' keeps the connection open but sends no feedback for 2 s (a hung controller).
        'junk' sends a random 32-byte packet (format byte 0) instead of the feedback.
        'speed_jump' and 'incline_jump' send a well-formed packet whose right belt is 2 m/s faster,
        or whose incline is 6 deg steeper, than the belt (a change no treadmill makes in 10 ms).
        """
        assert fault in FAULTS, fault
        with self._lock:
            self._faults.extend([fault] * count)

    @property
    def incline_cdeg(self) -> int:
        """The incline now, in 0.01 deg."""
        return round(self.incline)

    def state(self) -> tuple[float, float, float]:
        """Current right, left belt speed (m/s) and incline (deg)."""
        with self._lock:
            return self.speeds_mm_s[0] / 1000, self.speeds_mm_s[1] / 1000, round(self.incline) / 100

    # ---- server ------------------------------------------------------------------------------
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
            finally:
                client.close()

    def _session(self, client: socket.socket) -> None:
        period = 1.0 / self.feedback_rate_hz
        pending = bytearray()
        next_send = time.monotonic()
        last = time.monotonic()
        silent_until = 0.0
        while not self._stop.is_set():
            wait = max(0.0, next_send - time.monotonic())
            ready, _, _ = select.select([client], [], [], wait)
            if ready:
                try:
                    data = client.recv(4096)
                except OSError:
                    return
                if not data:
                    if pending:
                        self.violations.append(f"connection closed with {len(pending)} bytes of an "
                                               "incomplete 64-byte command")
                    return
                pending.extend(data)
                while len(pending) >= 64:
                    self._on_command(bytes(pending[:64]))
                    del pending[:64]
            now = time.monotonic()
            if now < next_send:
                continue
            self._advance(now - last)
            last = now
            next_send += period
            if now - next_send > 1.0:  # fell far behind (loaded machine): resynchronise
                next_send = now + period
            with self._lock:
                fault = self._faults.pop(0) if self._faults else None
            if fault == "silence":
                silent_until = now + 2.0
            if now < silent_until:
                continue
            if self.junk_only:
                fault = "junk"
            try:
                if fault == "drop":
                    return
                if fault == "partial_then_drop":
                    client.sendall(self._feedback()[:13])
                    return
                if fault == "bad_format":
                    client.sendall(b"\x07" + self._feedback()[1:])
                elif fault == "bad_speed":
                    client.sendall(b"\x00" + struct.pack(">h", 30000) + self._feedback()[3:])
                if fault == "junk":
                    junk = b"\x00" + bytes(self._rng.randrange(256) for _ in range(31))
                    self.junk_sent.append(junk)
                    client.sendall(junk)
                elif fault == "speed_jump":
                    client.sendall(self._feedback(right_extra_mm_s=2000))
                elif fault == "incline_jump":
                    client.sendall(self._feedback(incline_extra_cdeg=600))
                else:
                    client.sendall(self._feedback())
                self.feedback_sent += 1
            except OSError:
                return

    def _feedback(self, *, right_extra_mm_s: int = 0, incline_extra_cdeg: int = 0) -> bytes:
        with self._lock:
            values = [round(v) for v in self.speeds_mm_s] + [round(self.incline)]
        values[0] += right_extra_mm_s
        values[4] += incline_extra_cdeg
        packet = b"\x00" + struct.pack(">5h", *values)
        return packet + bytes(32 - len(packet))

    def _advance(self, dt_s: float) -> None:
        with self._lock:
            for i in range(4):
                self.speeds_mm_s[i] = _towards(self.speeds_mm_s[i], self.targets_mm_s[i],
                                               self.accels_mm_s2[i] * dt_s)
            self.incline = _towards(self.incline, self.target_incline_cdeg,
                                    self.incline_rate_cdeg_s * dt_s)

    def _on_command(self, packet: bytes) -> None:
        """Check every byte of one command against the documented layout; apply it if valid."""
        problems = []
        if packet[0] != 0:
            problems.append(f"byte 0 (format): expected 0, got {packet[0]}")
        for i in range(1, 19):
            if packet[18 + i] != 255 - packet[i]:
                problems.append(f"byte {18 + i}: expected complement 255-{packet[i]}="
                                f"{255 - packet[i]}, got {packet[18 + i]}")
        for i in range(37, 64):
            if packet[i] != 0:
                problems.append(f"byte {i}: expected 0 (unused), got {packet[i]}")
        values = struct.unpack(">9h", packet[1:19])
        speeds, accels, incline = values[0:4], values[4:8], values[8]
        for k, a in enumerate(accels):
            if a <= 0:
                problems.append(f"bytes {9 + 2 * k}..{10 + 2 * k} (acceleration {k}): expected > 0 "
                                f"mm/s^2, got {a}")
        for k, v in enumerate(speeds):
            if abs(v) > self.max_speed_mm_s:
                problems.append(f"bytes {1 + 2 * k}..{2 + 2 * k} (speed {k}): {v} mm/s beyond the "
                                f"treadmill's {self.max_speed_mm_s} mm/s")
        if problems:
            self.violations.extend(problems)
            return
        with self._lock:
            self.commands.append(ReceivedCommand(tuple(speeds), tuple(accels), incline, packet,
                                                 time.monotonic()))
            self.targets_mm_s = [float(v) for v in speeds]
            self.accels_mm_s2 = [float(a) for a in accels]
            self.target_incline_cdeg = incline


def _towards(value: float, target: float, step: float) -> float:
    if abs(target - value) <= step:
        return float(target)
    return value + (step if target > value else -step)
