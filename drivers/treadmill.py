"""Treadmill drivers: the session command vocabulary, safety limits and the heartbeat watchdog.

Sits between the session's command stream (``labsuite.streams.messages``) and a belt controller
(Bertec over TCP, the simulator): subclasses only talk to their hardware, this base publishes the
belt state (``treadmill_spec``), clamps and ramps speed commands and stops the belt by itself when
the session's heartbeat goes missing.
"""

from __future__ import annotations

import abc
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from labsuite.drivers.base import Chunk, Driver
from labsuite.errors import ConfigError, DeviceError
from labsuite.streams.contracts import StreamSpec, treadmill_spec
from labsuite.streams.messages import (
    CMD_EMERGENCY_STOP,
    CMD_HEARTBEAT,
    CMD_INCLINE,
    CMD_SPEED,
    CMD_STOP,
    HEARTBEAT_TIMEOUT_S,
)

log = logging.getLogger(__name__)

# The state stream never emits more than this many ticks per read, so a long stall (a debugger, a
# swapped-out process) shows up as a gap in the stream rather than a burst of stale copies.
_MAX_CATCH_UP_TICKS = 50


@dataclass(frozen=True)
class TreadmillSettings:
    """Limits and timing of one treadmill; every speed and acceleration sent is clamped to these.

    ``max_reverse_m_s`` is the largest backwards belt speed allowed (0: never run backwards).
    ``stop_decel_m_s2`` is used for ``stop`` and for the watchdog's stop; ``emergency_decel_m_s2``
    is the treadmill's maximum safe deceleration, used for ``emergency_stop``. A controller that
    sends no state for ``state_timeout_s`` is treated as lost (the runner reconnects).
    """

    source_id: str
    name: str = "labsuite-treadmill"
    manufacturer: str = "labsuite"
    model: str = "treadmill"
    state_rate_hz: float = 50.0
    max_speed_m_s: float = 5.0
    max_reverse_m_s: float = 0.0
    default_accel_m_s2: float = 0.5
    min_accel_m_s2: float = 0.05
    max_accel_m_s2: float = 2.0
    stop_decel_m_s2: float = 1.0
    emergency_decel_m_s2: float = 3.0
    min_incline_deg: float = 0.0
    max_incline_deg: float = 15.0
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S
    first_state_timeout_s: float = 2.0
    state_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.source_id:
            raise ConfigError("treadmill source_id: expected a stable non-empty id")
        positive = ("state_rate_hz", "max_speed_m_s", "default_accel_m_s2", "min_accel_m_s2",
                    "max_accel_m_s2", "stop_decel_m_s2", "emergency_decel_m_s2",
                    "heartbeat_timeout_s", "first_state_timeout_s", "state_timeout_s")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"treadmill settings {name}: expected a finite number > 0, "
                                  f"got {value!r}")
        if not (math.isfinite(self.max_reverse_m_s) and self.max_reverse_m_s >= 0):
            raise ConfigError(f"treadmill settings max_reverse_m_s: expected >= 0 m/s, "
                              f"got {self.max_reverse_m_s!r}")
        if self.min_accel_m_s2 > self.max_accel_m_s2:
            raise ConfigError(f"treadmill settings min_accel_m_s2: expected <= max_accel_m_s2 "
                              f"({self.max_accel_m_s2}), got {self.min_accel_m_s2}")
        for name in ("default_accel_m_s2", "stop_decel_m_s2"):
            value = getattr(self, name)
            if not self.min_accel_m_s2 <= value <= self.max_accel_m_s2:
                raise ConfigError(f"treadmill settings {name}: expected within [min_accel_m_s2, "
                                  f"max_accel_m_s2] = [{self.min_accel_m_s2}, {self.max_accel_m_s2}], "
                                  f"got {value}")
        if self.emergency_decel_m_s2 < self.stop_decel_m_s2:
            raise ConfigError(f"treadmill settings emergency_decel_m_s2: expected >= stop_decel_m_s2 "
                              f"({self.stop_decel_m_s2}), got {self.emergency_decel_m_s2}")
        if not (math.isfinite(self.min_incline_deg) and math.isfinite(self.max_incline_deg)
                and self.min_incline_deg <= self.max_incline_deg):
            raise ConfigError(f"treadmill settings min_incline_deg/max_incline_deg: expected finite "
                              f"min <= max, got {self.min_incline_deg}, {self.max_incline_deg}")

    def clamp_speed(self, speed_m_s: float) -> float:
        """Clamp a belt speed (m/s) to [-max_reverse_m_s, max_speed_m_s]."""
        return min(max(speed_m_s, -self.max_reverse_m_s), self.max_speed_m_s)

    def clamp_accel(self, accel_m_s2: float) -> float:
        """Clamp an acceleration (m/s²) to [min_accel_m_s2, max_accel_m_s2]; never 0."""
        return min(max(abs(accel_m_s2), self.min_accel_m_s2), self.max_accel_m_s2)

    def clamp_incline(self, incline_deg: float) -> float:
        """Clamp an incline (deg) to [min_incline_deg, max_incline_deg]."""
        return min(max(incline_deg, self.min_incline_deg), self.max_incline_deg)


@dataclass(frozen=True)
class BeltState:
    """What the treadmill reports: belt speeds (m/s) and incline (deg)."""

    right_m_s: float
    left_m_s: float
    incline_deg: float


@dataclass(frozen=True)
class BeltCommand:
    """One command as sent to the hardware (after clamping): speeds m/s, acceleration m/s², deg."""

    right_m_s: float
    left_m_s: float
    accel_m_s2: float
    incline_deg: float
    reason: str


class TreadmillDriver(Driver):
    """Base of every treadmill driver: commands in, belt state out, watchdog on the heartbeat.

    Subclasses implement the hardware: ``_connect``, ``_disconnect``, ``_send_belt_command`` and
    ``_read_state`` (and count their packets in ``health.frames_ok``/``frames_bad``). The base class
    guarantees that

    * nothing is sent before a state (and so the current incline) has been read from the device;
    * every command carries the incline last read, unless an ``incline`` command asks otherwise;
    * speeds, accelerations and inclines are clamped to :class:`TreadmillSettings`;
    * once a heartbeat has been seen, a silence of ``heartbeat_timeout_s`` stops the belt (ramped,
      logged, counted in ``health.extra['watchdog_stops']``); speed commands are refused until
      heartbeats resume.
    """

    def __init__(self, settings: TreadmillSettings) -> None:
        super().__init__()
        self.settings = settings
        self.state: BeltState | None = None
        self.target: tuple[float, float] = (0.0, 0.0)
        self.last_command: BeltCommand | None = None
        self.events: deque[tuple[float, str, str]] = deque(maxlen=1000)
        self._last_heartbeat_s: float | None = None
        self._watchdog_tripped = False
        self._stop_pending = False
        self._lost: str | None = None
        self._next_tick_s: float | None = None
        self._last_state_s = 0.0
        for key in ("commands", "commands_rejected", "watchdog_stops", "emergency_stops"):
            self.health.extra[key] = 0.0

    # ---- hardware: implemented by subclasses ---------------------------------------------
    @abc.abstractmethod
    def _connect(self) -> None:
        """Open the connection to the belt controller; DeviceError saying how to fix it."""

    @abc.abstractmethod
    def _disconnect(self) -> None:
        """Close the connection; safe to call twice and after a failed connect."""

    @abc.abstractmethod
    def _send_belt_command(self, right_m_s: float, left_m_s: float, accel_m_s2: float,
                           incline_deg: float) -> None:
        """Send one (already clamped) command; DeviceError when the connection is lost."""

    @abc.abstractmethod
    def _read_state(self, timeout_s: float) -> BeltState | None:
        """Return the latest belt state received within ``timeout_s`` (None if nothing new).

        Raises DeviceError when the connection is lost.
        """

    # ---- Driver ------------------------------------------------------------------------------
    def stream_specs(self) -> list[StreamSpec]:
        """Describe the belt state stream: speed_right, speed_left (m/s), incline (deg)."""
        s = self.settings
        return [treadmill_spec(s.source_id, rate_hz=s.state_rate_hz, name=s.name,
                               manufacturer=s.manufacturer, model=s.model)]

    def open(self) -> None:
        """Connect and wait for a first state, so the incline is known before anything is sent."""
        self._lost = None
        self._connect()
        deadline = time.monotonic() + self.settings.first_state_timeout_s
        state = None
        while state is None and time.monotonic() < deadline:
            state = self._read_state(0.05)
        if state is None:
            self._disconnect()
            raise DeviceError(f"treadmill {self.settings.name!r}: no state received within "
                              f"{self.settings.first_state_timeout_s} s of connecting; check that "
                              "the treadmill controller is on and in remote-control mode")
        self.state = state
        self._last_state_s = time.monotonic()
        if self.last_command is None:
            # First connection: adopt what the belt is doing, so an incline command keeps the speed.
            self.target = (state.right_m_s, state.left_m_s)
        self._next_tick_s = None
        if self._stop_pending or self._watchdog_tripped:
            # A stop that could not be delivered before the connection dropped is delivered now.
            self._event("stop_resent", "connection restored with a stop pending; stopping the belt")
            self._command(0.0, 0.0, self.settings.stop_decel_m_s2, None, "stop (resent)")

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        self._disconnect()

    def read(self, timeout_s: float) -> list[Chunk]:
        """Publish the belt state at ``state_rate_hz`` on a regular LSL-clock grid."""
        import pylsl

        if self._lost is not None:
            reason, self._lost = self._lost, None
            raise DeviceError(reason)
        period = 1.0 / self.settings.state_rate_hz
        now = pylsl.local_clock()
        if self._next_tick_s is None:
            self._next_tick_s = now
        wait_s = min(timeout_s, max(0.0, self._next_tick_s - now))
        state = self._read_state(wait_s)
        if state is not None:
            self.state = state
            self._last_state_s = time.monotonic()
        elif time.monotonic() - self._last_state_s > self.settings.state_timeout_s:
            # A controller that stopped talking is lost, not still: never publish a stale belt.
            raise DeviceError(f"treadmill {self.settings.name!r}: no state for "
                              f"{self.settings.state_timeout_s} s")
        now = pylsl.local_clock()
        if now < self._next_tick_s:
            time.sleep(max(0.0, min(self._next_tick_s - now, timeout_s)))
            now = pylsl.local_clock()
        n = int((now - self._next_tick_s) // period) + 1 if now >= self._next_tick_s else 0
        if n <= 0 or self.state is None:
            return []
        if n > _MAX_CATCH_UP_TICKS:
            skipped = n - 1
            self._next_tick_s += skipped * period
            self.health.extra["ticks_skipped"] = self.health.extra.get("ticks_skipped", 0.0) + skipped
            n = 1
        stamps = self._next_tick_s + period * np.arange(n)
        self._next_tick_s += n * period
        row = [self.state.right_m_s, self.state.left_m_s, self.state.incline_deg]
        return [Chunk(0, stamps, np.tile(np.asarray(row, dtype=np.float32), (n, 1)))]

    def handle_command(self, command: dict[str, Any]) -> None:
        """Apply a session command: speed, stop, emergency_stop, incline, heartbeat.

        Bad commands are logged and counted, never raised: a typo in a session must not kill the
        driver that keeps the belt safe.
        """
        import pylsl

        name = command.get("cmd")
        try:
            if name == CMD_HEARTBEAT:
                self._last_heartbeat_s = pylsl.local_clock()
                if self._watchdog_tripped:
                    self._watchdog_tripped = False
                    self._event("heartbeat_resumed", "session heartbeat is back")
                return
            self.health.extra["commands"] += 1
            if name == CMD_SPEED:
                self._on_speed(command)
            elif name == CMD_STOP:
                decel = _number(command, "decel_m_s2", self.settings.stop_decel_m_s2)
                self._command(0.0, 0.0, decel, None, "stop")
            elif name == CMD_EMERGENCY_STOP:
                self.health.extra["emergency_stops"] += 1
                self._command(0.0, 0.0, self.settings.emergency_decel_m_s2, None, "emergency_stop",
                              clamp_accel=False)
            elif name == CMD_INCLINE:
                incline = _number(command, "incline_deg", None)
                right, left = self.target
                self._command(right, left, self.settings.default_accel_m_s2, incline, "incline")
            else:
                raise ConfigError(f"unknown treadmill command {name!r}")
        except ConfigError as exc:
            self.health.extra["commands_rejected"] += 1
            self._event("command_rejected", f"{exc} (command {command!r})")

    def on_idle(self, now_s: float) -> None:
        """Heartbeat watchdog: once heartbeats were seen, silence for the timeout stops the belt."""
        last = self._last_heartbeat_s
        if last is None or self._watchdog_tripped:
            return
        if now_s - last > self.settings.heartbeat_timeout_s:
            self._watchdog_tripped = True
            self.health.extra["watchdog_stops"] += 1
            self._event("watchdog_stop", f"no session heartbeat for {now_s - last:.2f} s "
                        f"(limit {self.settings.heartbeat_timeout_s} s); ramped stop")
            self._command(0.0, 0.0, self.settings.stop_decel_m_s2, None, "watchdog stop")

    def poll_state(self, timeout_s: float) -> BeltState | None:
        """Read the device for up to ``timeout_s`` and return the latest state (for one-shot tools)."""
        state = self._read_state(timeout_s)
        if state is not None:
            self.state = state
        return self.state

    # ---- helpers -----------------------------------------------------------------------------
    def _on_speed(self, command: dict[str, Any]) -> None:
        right = _number(command, "right_m_s", None)
        left = _number(command, "left_m_s", right)
        accel = _number(command, "accel_m_s2", self.settings.default_accel_m_s2)
        if self._watchdog_tripped and (right != 0.0 or left != 0.0):
            raise ConfigError("speed command refused: the belt was stopped because the session "
                              "heartbeat went missing; it runs again once heartbeats resume")
        self._command(right, left, accel, None, "speed")

    def _command(self, right_m_s: float, left_m_s: float, accel_m_s2: float,
                 incline_deg: float | None, reason: str, *, clamp_accel: bool = True) -> None:
        s = self.settings
        if self.state is None:
            raise ConfigError("treadmill not connected yet (no state read, incline unknown); "
                              "command not sent")
        right = s.clamp_speed(right_m_s)
        left = s.clamp_speed(left_m_s)
        if clamp_accel:
            accel = s.clamp_accel(accel_m_s2)
        else:
            accel = abs(accel_m_s2) if accel_m_s2 else s.emergency_decel_m_s2
        incline = self.state.incline_deg if incline_deg is None else s.clamp_incline(incline_deg)
        if (right, left) != (right_m_s, left_m_s):
            self._event("clamped", f"{reason}: speeds ({right_m_s}, {left_m_s}) m/s clamped to "
                        f"({right}, {left})")
        cmd = BeltCommand(right, left, accel, incline, reason)
        stopping = right == 0.0 and left == 0.0
        try:
            self._send_belt_command(right, left, accel, incline)
        except DeviceError as exc:
            # The runner only learns of a lost device from read(); remember it and re-deliver a
            # stop once the connection is back.
            self._stop_pending = self._stop_pending or stopping
            self._lost = f"treadmill command {reason!r} not delivered: {exc}"
            self._event("send_failed", self._lost)
            return
        self._stop_pending = False
        self.target = (right, left)
        self.last_command = cmd
        log.info("treadmill %s: right %.3f m/s, left %.3f m/s, accel %.2f m/s^2, incline %.2f deg",
                 reason, right, left, accel, incline)

    def _event(self, kind: str, text: str) -> None:
        log.warning("treadmill %s: %s", kind, text)
        self.events.append((time.monotonic(), kind, text))


def _number(command: dict[str, Any], key: str, default: float | None) -> float:
    """Read a finite number field from a command; ConfigError naming the field otherwise."""
    value = command.get(key)
    if value is None:
        if default is None:
            raise ConfigError(f"command field {key!r}: expected a number, field is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"command field {key!r}: expected a finite number, got {value!r}")
    return float(value)


class BeltRamp:
    """Belt speeds ramping towards their targets at a set acceleration (for simulated belts).

    ``advance(dt_s)`` moves each belt towards its target by at most ``accel * dt``; the incline is
    set at once. Used by simulated treadmills and emulators, where no hardware does the ramping.
    """

    def __init__(self, right_m_s: float = 0.0, left_m_s: float = 0.0, incline_deg: float = 0.0) -> None:
        self.right_m_s = right_m_s
        self.left_m_s = left_m_s
        self.incline_deg = incline_deg
        self.target_right_m_s = right_m_s
        self.target_left_m_s = left_m_s
        self.accel_m_s2 = 1.0

    def set_target(self, right_m_s: float, left_m_s: float, accel_m_s2: float, incline_deg: float) -> None:
        """Set new targets (m/s), the acceleration to reach them (m/s², > 0) and the incline (deg)."""
        if not accel_m_s2 > 0:
            raise ConfigError(f"accel_m_s2: expected > 0 m/s^2, got {accel_m_s2!r}")
        self.target_right_m_s = right_m_s
        self.target_left_m_s = left_m_s
        self.accel_m_s2 = accel_m_s2
        self.incline_deg = incline_deg

    def advance(self, dt_s: float) -> BeltState:
        """Advance by ``dt_s`` seconds and return the new state."""
        step = self.accel_m_s2 * max(dt_s, 0.0)
        self.right_m_s = _towards(self.right_m_s, self.target_right_m_s, step)
        self.left_m_s = _towards(self.left_m_s, self.target_left_m_s, step)
        return BeltState(self.right_m_s, self.left_m_s, self.incline_deg)


def _towards(value: float, target: float, step: float) -> float:
    if abs(target - value) <= step:
        return target
    return value + math.copysign(step, target - value)
