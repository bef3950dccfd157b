"""Treadmill drivers: the session command vocabulary, safety limits, feedback checks and the watchdog.

Sits between the session's command stream (``labsuite.streams.messages``) and a belt controller
(Bertec over TCP, the simulator): subclasses only talk to their hardware, this base publishes the
belt state (``treadmill_spec``) and the driver's own safety events (``events_source_id``), holds
every command inside the lab's limits and the model's hard ceiling (:class:`TreadmillModel`),
checks every feedback frame against the model, and stops the belt by itself when the session's
heartbeat goes missing or the feedback turns to junk.
"""

from __future__ import annotations

import abc
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from labsuite import checks as check
from labsuite import ids
from labsuite.drivers.base import Chunk, Driver
from labsuite.errors import ConfigError, DeviceError
from labsuite.streams.contracts import StreamSpec, markers_spec, treadmill_spec
from labsuite.streams.messages import (
    CMD_EMERGENCY_STOP,
    CMD_HEARTBEAT,
    CMD_INCLINE,
    CMD_SPEED,
    CMD_STOP,
    HEARTBEAT_TIMEOUT_S,
    marker,
)

log = logging.getLogger(__name__)

# The state stream never emits more than this many ticks per read, so a long stall (a debugger, a
# swapped-out process) shows up as a gap in the stream rather than a burst of stale copies.
_MAX_CATCH_UP_TICKS = 50

# Feedback checks (docs/devices.md, "Treadmill feedback"). This many invalid frames in a row are a
# device fault: the belt is stopped (ramped), the fault is published and the driver reconnects.
BAD_FRAMES_FOR_FAULT = 5
# After a fault, speed commands are refused until the feedback has been valid this long.
FAULT_CLEAR_S = 1.0
# Belt speed may differ from the previous valid frame by max_accel * dt plus this much: the belt
# dips under each foot strike, and frames that queued up arrive together (dt ~ 0).
FEEDBACK_SPEED_JITTER_M_S = 0.3
# The incline may differ from the previous valid frame by max_incline_rate * dt plus this much.
FEEDBACK_INCLINE_JITTER_DEG = 0.5
# Bad frames are logged at most once per this many seconds (with a count of the others).
_BAD_FRAME_LOG_PERIOD_S = 1.0

# Events the driver publishes on its events stream, as markers {"event": "treadmill_<kind>", ...}.
# Those with "safety_stop": true are belt stops the driver made by itself (the session did not).
EVENT_PREFIX = "treadmill_"
EVENT_CONNECTED = "connected"
EVENT_WATCHDOG_STOP = "watchdog_stop"
EVENT_HEARTBEAT_RESUMED = "heartbeat_resumed"
EVENT_SESSION_ENDED = "session_ended"
EVENT_FEEDBACK_FAULT = "feedback_fault"
EVENT_FEEDBACK_RESTORED = "feedback_restored"
EVENT_STOP_RESENT = "stop_resent"
EVENT_SEND_FAILED = "send_failed"
EVENT_CLAMPED = "clamped"
EVENT_COMMAND_REJECTED = "command_rejected"


# The source_id of a treadmill driver's events stream (markers), from its state stream's id.
events_source_id = ids.treadmill_events_source_id


@dataclass(frozen=True)
class TreadmillModel:
    """The hard limits of one treadmill model: no setting, command-line option or lab file exceeds them.

    They belong to the driver class (``TreadmillDriver.MODEL``), not to any settings object, so
    nothing a user types can raise them. ``max_accel_m_s2`` bounds every commanded acceleration
    and deceleration (the emergency stop's too) and the belt-speed change between two feedback
    frames, ``max_incline_rate_deg_s`` the incline change between them; speeds and the incline
    of every feedback frame must lie in the ranges.
    """

    manufacturer: str
    model: str
    max_speed_m_s: float
    max_reverse_m_s: float
    max_accel_m_s2: float
    min_incline_deg: float
    max_incline_deg: float
    max_incline_rate_deg_s: float

    @property
    def label(self) -> str:
        """``manufacturer model``, for messages."""
        return f"{self.manufacturer} {self.model}"

    def check(self, settings: TreadmillSettings) -> None:
        """ConfigError naming the field when ``settings`` go beyond this model's hard limits."""
        above = (("max_speed_m_s", settings.max_speed_m_s, self.max_speed_m_s, "m/s"),
                 ("max_reverse_m_s", settings.max_reverse_m_s, self.max_reverse_m_s, "m/s"),
                 ("max_accel_m_s2", settings.max_accel_m_s2, self.max_accel_m_s2, "m/s^2"),
                 ("emergency_decel_m_s2", settings.emergency_decel_m_s2, self.max_accel_m_s2, "m/s^2"),
                 ("max_incline_deg", settings.max_incline_deg, self.max_incline_deg, "deg"))
        for name, value, limit, unit in above:
            if value > limit:
                raise ConfigError(f"treadmill settings {name} = {value:g} {unit}: above the hard limit "
                                  f"of the {self.label} ({limit:g} {unit}), which no option or lab "
                                  "file can raise")
        if settings.min_incline_deg < self.min_incline_deg:
            raise ConfigError(f"treadmill settings min_incline_deg = {settings.min_incline_deg:g} deg: "
                              f"below the hard limit of the {self.label} ({self.min_incline_deg:g} deg)")

    def frame_problem(self, state: BeltState) -> tuple[str, str] | None:
        """The first field of a feedback frame outside this model's ranges, as (field, problem)."""
        for name, value in state.speeds():
            if not math.isfinite(value):
                return name, f"{value} is not a number"
            if not -self.max_reverse_m_s <= value <= self.max_speed_m_s:
                return name, (f"{value:.3f} m/s is outside the {self.label}'s range "
                              f"{-self.max_reverse_m_s:g}..{self.max_speed_m_s:g} m/s")
        value = state.incline_deg
        if not math.isfinite(value):
            return "incline_deg", f"{value} is not a number"
        if not self.min_incline_deg <= value <= self.max_incline_deg:
            return "incline_deg", (f"{value:.2f} deg is outside the {self.label}'s range "
                                   f"{self.min_incline_deg:g}..{self.max_incline_deg:g} deg")
        return None

    def change_problem(self, state: BeltState, previous: BeltState, dt_s: float
                       ) -> tuple[str, str] | None:
        """A speed or incline that changed faster than this model can since the ``previous`` frame."""
        dt = max(dt_s, 0.0)
        allowed = FEEDBACK_SPEED_JITTER_M_S + self.max_accel_m_s2 * dt
        before = dict(previous.speeds())
        for name, value in state.speeds():
            old = before.get(name)
            if old is not None and abs(value - old) > allowed:
                return name, (f"{old:.3f} -> {value:.3f} m/s in {dt:.3f} s is faster than the "
                              f"{self.label} can change speed ({self.max_accel_m_s2:g} m/s^2, "
                              f"+{FEEDBACK_SPEED_JITTER_M_S:g} m/s jitter)")
        allowed = FEEDBACK_INCLINE_JITTER_DEG + (self.max_incline_rate_deg_s * dt if dt > 0 else 0.0)
        if abs(state.incline_deg - previous.incline_deg) > allowed:
            return "incline_deg", (f"{previous.incline_deg:.2f} -> {state.incline_deg:.2f} deg in "
                                   f"{dt:.3f} s is faster than the {self.label} can tilt "
                                   f"({self.max_incline_rate_deg_s:g} deg/s, "
                                   f"+{FEEDBACK_INCLINE_JITTER_DEG:g} deg jitter)")
        return None


# Bertec instrumented treadmills on the legacy remote-control protocol: rated top speed 6.5 m/s
# (what the controller accepts), belts run both ways, incline up to 15 deg either way on models
# that have one, tilting at a few deg/s (5 deg/s bounds it). Acceleration: 10 m/s^2 covers every
# ramp, stop and emergency stop labsuite sends.
BERTEC_TREADMILL = TreadmillModel("Bertec", "instrumented treadmill", max_speed_m_s=6.5,
                                  max_reverse_m_s=2.0, max_accel_m_s2=10.0,
                                  min_incline_deg=-15.0, max_incline_deg=15.0,
                                  max_incline_rate_deg_s=5.0)
# The simulated treadmill has the limits of the real one, so a protocol that runs in simulation
# runs on the Bertec. Its incline is set at once (BeltRamp), so it may tilt at any rate.
SIMULATED_TREADMILL = TreadmillModel("labsuite", "simulated instrumented treadmill",
                                     max_speed_m_s=6.5, max_reverse_m_s=2.0, max_accel_m_s2=10.0,
                                     min_incline_deg=-15.0, max_incline_deg=15.0,
                                     max_incline_rate_deg_s=math.inf)
TREADMILL_MODELS = {(m.manufacturer, m.model): m for m in (BERTEC_TREADMILL, SIMULATED_TREADMILL)}


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
        where = "treadmill settings "
        check.text("treadmill ", "source_id", self.source_id, "a stable non-empty id")
        check.positive(where, self, "state_rate_hz", "max_speed_m_s", "default_accel_m_s2",
                       "min_accel_m_s2", "max_accel_m_s2", "stop_decel_m_s2", "emergency_decel_m_s2",
                       "heartbeat_timeout_s", "first_state_timeout_s", "state_timeout_s")
        check.number(where, "max_reverse_m_s", self.max_reverse_m_s, low=0.0, unit="m/s")
        if self.min_accel_m_s2 > self.max_accel_m_s2:
            raise ConfigError(f"treadmill settings min_accel_m_s2: expected <= max_accel_m_s2 "
                              f"({self.max_accel_m_s2}), got {self.min_accel_m_s2}")
        for name in ("default_accel_m_s2", "stop_decel_m_s2"):  # within [min_accel, max_accel]
            check.number(where, name, getattr(self, name), low=self.min_accel_m_s2,
                         high=self.max_accel_m_s2, unit="m/s²")
        if self.emergency_decel_m_s2 < self.stop_decel_m_s2:
            raise ConfigError(f"treadmill settings emergency_decel_m_s2: expected >= stop_decel_m_s2 "
                              f"({self.stop_decel_m_s2}), got {self.emergency_decel_m_s2}")
        check.number(where, "max_incline_deg", self.max_incline_deg, unit="deg")
        check.number(where, "min_incline_deg", self.min_incline_deg, high=self.max_incline_deg,
                     unit="deg")  # at most max_incline_deg
        # Settings that name a known model are held to its ceiling at once (a lab file fails when
        # it is loaded); every driver also checks them against its own model (TreadmillDriver).
        known = TREADMILL_MODELS.get((self.manufacturer, self.model))
        if known is not None:
            known.check(self)

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
    """What the treadmill reports: belt speeds (m/s) and incline (deg); rear belts when it has them."""

    right_m_s: float
    left_m_s: float
    incline_deg: float
    right_rear_m_s: float | None = None
    left_rear_m_s: float | None = None

    def speeds(self) -> list[tuple[str, float]]:
        """Every belt speed reported, as (field name, m/s)."""
        out = [("right_m_s", self.right_m_s), ("left_m_s", self.left_m_s)]
        if self.right_rear_m_s is not None:
            out.append(("right_rear_m_s", self.right_rear_m_s))
        if self.left_rear_m_s is not None:
            out.append(("left_rear_m_s", self.left_rear_m_s))
        return out


@dataclass(frozen=True)
class BeltCommand:
    """One command as sent to the hardware (after clamping): speeds m/s, acceleration m/s², deg."""

    right_m_s: float
    left_m_s: float
    accel_m_s2: float
    incline_deg: float
    reason: str


class TreadmillDriver(Driver):
    """Base of every treadmill driver: commands in, belt state and safety events out, watchdogs.

    Subclasses set ``MODEL`` (the hard limits of the treadmill they drive) and implement the
    hardware: ``_connect``, ``_disconnect``, ``_send_belt_command`` and either ``_read_state``
    (one state per call) or ``_read_frames`` (every frame that arrived, decoding errors included).
    The base class guarantees that

    * the settings lie within ``MODEL`` (ConfigError at construction otherwise), and every speed,
      acceleration and incline sent lies within both;
    * every feedback frame is checked against ``MODEL`` (speeds, incline, speed change since the
      last valid frame); an invalid frame is counted (``health.frames_bad``), logged and never
      used, so a command never carries an incline that was not validly read;
    * :data:`BAD_FRAMES_FOR_FAULT` invalid frames in a row are a device fault: a ramped stop is
      sent, a ``treadmill_feedback_fault`` event is published, the connection is renewed and
      speed commands are refused until the feedback has been valid for :data:`FAULT_CLEAR_S`;
    * nothing is sent before a valid state (and so the current incline) has been read;
    * once a heartbeat has been seen, none sent for ``heartbeat_timeout_s`` (judged on send times,
      see :meth:`on_idle`) stops the belt (ramped, published, counted in
      ``health.extra['watchdog_stops']``); speed commands are refused until heartbeats resume.
    """

    MODEL: ClassVar[TreadmillModel]

    def __init__(self, settings: TreadmillSettings) -> None:
        super().__init__()
        model = getattr(type(self), "MODEL", None)
        if not isinstance(model, TreadmillModel):
            raise ConfigError(f"{type(self).__name__}: a treadmill driver must declare MODEL, the hard "
                              "limits of the treadmill it drives")
        model.check(settings)
        self.model = model
        self.settings = settings
        self.state: BeltState | None = None
        self.target: tuple[float, float] = (0.0, 0.0)
        self.last_command: BeltCommand | None = None
        self.events: deque[tuple[float, str, str]] = deque(maxlen=1000)
        self._outbox: deque[tuple[float, str]] = deque(maxlen=1000)
        self._last_event_lsl = -math.inf
        self._last_heartbeat_s: float | None = None  # send time of the newest heartbeat
        self._heartbeat_seq: int | None = None
        self._watchdog_tripped = False
        self._stop_pending = False
        self._lost: str | None = None
        self._next_tick_s: float | None = None
        self._last_state_s = 0.0
        # feedback checks
        self._valid_at_s: float | None = None  # monotonic arrival of the last valid frame
        self._bad_in_row = 0
        self._fault: str | None = None
        self._good_since_s: float | None = None
        self._bad_logged_s = -math.inf
        self._bad_unlogged = 0
        for key in ("commands", "commands_rejected", "watchdog_stops", "emergency_stops",
                    "feedback_faults", "feedback_fault_active", "heartbeats", "heartbeats_missed"):
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

    def _read_state(self, timeout_s: float) -> BeltState | None:
        """Return the latest belt state received within ``timeout_s`` (None if nothing new).

        For devices without a frame stream; raises DeviceError when the connection is lost.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither _read_state nor _read_frames")

    def _read_frames(self, timeout_s: float) -> list[BeltState | str]:
        """Every frame that arrived within ``timeout_s``, in order: a state, or why it is malformed.

        Raises DeviceError when the connection is lost. The default wraps ``_read_state``.
        """
        state = self._read_state(timeout_s)
        return [] if state is None else [state]

    # ---- Driver ------------------------------------------------------------------------------
    def stream_specs(self) -> list[StreamSpec]:
        """The belt state (speed_right, speed_left m/s, incline deg) and the driver's events (markers)."""
        s = self.settings
        return [treadmill_spec(s.source_id, rate_hz=s.state_rate_hz, name=s.name,
                               manufacturer=s.manufacturer, model=s.model),
                markers_spec(events_source_id(s.source_id), name=f"{s.name}-events")]

    def open(self) -> None:
        """Connect and wait for a first valid state, so the incline is known before anything is sent."""
        self._lost = None
        self._valid_at_s = None
        self._bad_in_row = 0
        self._good_since_s = None
        self._connect()
        deadline = time.monotonic() + self.settings.first_state_timeout_s
        bad_before = self.health.frames_bad
        state = None
        while state is None and time.monotonic() < deadline:
            state = self._next_state(0.05)
        if state is None:
            self._disconnect()
            bad = self.health.frames_bad - bad_before
            why = f" ({bad} invalid frames, the last: {self.health.last_error})" if bad else ""
            raise DeviceError(f"treadmill {self.settings.name!r}: no valid state received within "
                              f"{self.settings.first_state_timeout_s} s of connecting{why}; check that "
                              "the treadmill controller is on and in remote-control mode")
        self._last_state_s = time.monotonic()
        if self.last_command is None:
            # First connection: adopt what the belt is doing, so an incline command keeps the speed.
            self.target = (state.right_m_s, state.left_m_s)
        self._next_tick_s = None
        s = self.settings
        self._event(EVENT_CONNECTED, f"{self.model.label}: speed {-s.max_reverse_m_s:g}.."
                    f"{s.max_speed_m_s:g} m/s (hard limit {self.model.max_speed_m_s:g}), incline "
                    f"{s.min_incline_deg:g}..{s.max_incline_deg:g} deg", level=logging.INFO,
                    max_speed_m_s=s.max_speed_m_s, hard_max_speed_m_s=self.model.max_speed_m_s,
                    incline_deg=state.incline_deg)
        if self._stop_pending or self._watchdog_tripped or self._fault is not None:
            # A stop that could not be delivered before the connection dropped is delivered now.
            self._event(EVENT_STOP_RESENT, "connection restored with a stop pending; stopping the belt")
            self._command(0.0, 0.0, self.settings.stop_decel_m_s2, None, "stop (resent)")

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        self._disconnect()

    def read(self, timeout_s: float) -> list[Chunk]:
        """Publish the belt state at ``state_rate_hz`` on a regular LSL-clock grid, and new events."""
        import pylsl

        if self._lost is not None:
            reason, self._lost = self._lost, None
            raise DeviceError(reason)
        period = 1.0 / self.settings.state_rate_hz
        now = pylsl.local_clock()
        if self._next_tick_s is None:
            self._next_tick_s = now
        wait_s = min(timeout_s, max(0.0, self._next_tick_s - now))
        if self._next_state(wait_s) is not None:
            self._last_state_s = time.monotonic()
        elif time.monotonic() - self._last_state_s > self.settings.state_timeout_s:
            # A controller that stopped talking is lost, not still: never publish a stale belt.
            raise DeviceError(f"treadmill {self.settings.name!r}: no valid state for "
                              f"{self.settings.state_timeout_s} s")
        now = pylsl.local_clock()
        if now < self._next_tick_s:
            time.sleep(max(0.0, min(self._next_tick_s - now, timeout_s)))
            now = pylsl.local_clock()
        chunks = []
        n = int((now - self._next_tick_s) // period) + 1 if now >= self._next_tick_s else 0
        if n > 0 and self.state is not None:
            if n > _MAX_CATCH_UP_TICKS:
                skipped = n - 1
                self._next_tick_s += skipped * period
                self.health.extra["ticks_skipped"] = (self.health.extra.get("ticks_skipped", 0.0)
                                                      + skipped)
                n = 1
            stamps = self._next_tick_s + period * np.arange(n)
            self._next_tick_s += n * period
            row = [self.state.right_m_s, self.state.left_m_s, self.state.incline_deg]
            chunks.append(Chunk(0, stamps, np.tile(np.asarray(row, dtype=np.float32), (n, 1))))
        events = self.take_events()
        if events:
            chunks.append(Chunk(1, np.array([t for t, _ in events]),
                                np.array([[text] for _, text in events], dtype=object)))
        return chunks

    def take_events(self) -> list[tuple[float, str]]:
        """The events not yet published: (LSL time, JSON marker text), oldest first."""
        out = list(self._outbox)
        self._outbox.clear()
        return out

    def handle_command(self, command: dict[str, Any], stamp_s: float | None = None) -> None:
        """Apply a session command: speed, stop, emergency_stop, incline, heartbeat.

        ``stamp_s`` is the command's send time on this machine's LSL clock (the sample's corrected
        time stamp); a heartbeat without one counts as sent now. Bad commands are logged and
        counted, never raised: a typo in a session must not kill the driver that keeps the belt safe.
        """
        name = command.get("cmd")
        try:
            if name == CMD_HEARTBEAT:
                self._on_heartbeat(command, stamp_s)
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
            self._event(EVENT_COMMAND_REJECTED, f"{exc} (command {command!r})")

    def on_idle(self, now_s: float) -> None:
        """Heartbeat watchdog: once heartbeats were seen, none *sent* for the timeout stops the belt.

        Judged on the newest heartbeat's send time, after the runner drained what has arrived: a
        driver held up by a loaded machine finds the heartbeats sent meanwhile and does not stop
        the belt; a session that stopped sending (killed, frozen) is caught within the timeout of
        its last heartbeat plus one loop turn.
        """
        last = self._last_heartbeat_s
        if last is None or self._watchdog_tripped:
            return
        if now_s - last > self.settings.heartbeat_timeout_s:
            self._watchdog_tripped = True
            self.health.extra["watchdog_stops"] += 1
            self._event(EVENT_WATCHDOG_STOP, f"no session heartbeat sent for {now_s - last:.2f} s "
                        f"(limit {self.settings.heartbeat_timeout_s} s; last seq "
                        f"{self._heartbeat_seq}); ramped stop",
                        safety_stop=True, silence_s=round(now_s - last, 3), seq=self._heartbeat_seq)
            self._command(0.0, 0.0, self.settings.stop_decel_m_s2, None, "watchdog stop")

    def _on_heartbeat(self, command: dict[str, Any], stamp_s: float | None) -> None:
        import pylsl

        now = pylsl.local_clock()
        sent = now if stamp_s is None or not math.isfinite(stamp_s) else min(stamp_s, now)
        seq = command.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            last_seq = self._heartbeat_seq
            if last_seq is not None and seq > last_seq + 1:
                self.health.extra["heartbeats_missed"] += seq - last_seq - 1
            self._heartbeat_seq = seq  # a restarted session starts again from 1
        if self._last_heartbeat_s is None or sent > self._last_heartbeat_s:
            self._last_heartbeat_s = sent
        self.health.extra["heartbeats"] += 1
        if command.get("end") is True:
            self._on_session_end()
            return
        if self._watchdog_tripped and now - sent <= self.settings.heartbeat_timeout_s:
            self._watchdog_tripped = False
            self._event(EVENT_HEARTBEAT_RESUMED, "session heartbeat is back")

    def _on_session_end(self) -> None:
        """The session's last heartbeat (``end: true``): it is closing and stops sending.

        The watchdog stands down, so a session that finished is not taken for one that died; a
        belt still moving is stopped now (ramped), as no session is left to watch it.
        """
        self._last_heartbeat_s = None
        self._heartbeat_seq = None
        moving = self.state is not None and any(abs(v) > 0.0 for _, v in self.state.speeds())
        if moving or self.target != (0.0, 0.0):
            self._event(EVENT_SESSION_ENDED, "the session ended with the belt moving; ramped stop",
                        safety_stop=True)
            self._command(0.0, 0.0, self.settings.stop_decel_m_s2, None, "session ended")
        else:
            self._event(EVENT_SESSION_ENDED, "the session ended; heartbeat watchdog stands down",
                        level=logging.INFO, safety_stop=False)

    def poll_state(self, timeout_s: float) -> BeltState | None:
        """Read the device for up to ``timeout_s`` and return the latest valid state (one-shot tools)."""
        self._next_state(timeout_s)
        return self.state

    @property
    def fault(self) -> str | None:
        """Why the feedback is in fault (speed commands refused), or None."""
        return self._fault

    # ---- feedback checks -------------------------------------------------------------------
    def _next_state(self, timeout_s: float) -> BeltState | None:
        """Read frames, check each one, keep the last valid one in ``state`` and return it (or None)."""
        frames = self._read_frames(timeout_s)
        if not frames:
            return None
        arrival = time.monotonic()
        latest = None
        for frame in frames:
            problem = frame if isinstance(frame, str) else self._frame_problem(frame, arrival)
            if problem is None:
                assert isinstance(frame, BeltState)
                latest = self.state = frame
                self._valid_at_s = arrival
                self._on_valid_frame(arrival)
            else:
                self._on_bad_frame(problem, arrival)
        return latest

    def _frame_problem(self, state: BeltState, arrival_s: float) -> str | None:
        found = self.model.frame_problem(state)
        if found is None and self.state is not None and self._valid_at_s is not None:
            found = self.model.change_problem(state, self.state, arrival_s - self._valid_at_s)
        return None if found is None else f"treadmill feedback {found[0]}: {found[1]}"

    def _on_valid_frame(self, arrival_s: float) -> None:
        self.health.frames_ok += 1
        self._bad_in_row = 0
        if self._good_since_s is None:
            self._good_since_s = arrival_s
        if self._fault is not None and arrival_s - self._good_since_s >= FAULT_CLEAR_S:
            self._event(EVENT_FEEDBACK_RESTORED, f"feedback valid for {FAULT_CLEAR_S:g} s after the "
                        f"fault ({self._fault}); speed commands accepted again")
            self._fault = None
            self.health.extra["feedback_fault_active"] = 0.0

    def _on_bad_frame(self, problem: str, arrival_s: float) -> None:
        self.health.frames_bad += 1
        self.health.last_error = problem
        self._bad_in_row += 1
        self._good_since_s = None
        if arrival_s - self._bad_logged_s >= _BAD_FRAME_LOG_PERIOD_S:
            more = f" ({self._bad_unlogged} more since the last report)" if self._bad_unlogged else ""
            log.warning("treadmill %r: bad frame ignored: %s%s", self.settings.name, problem, more)
            self._bad_logged_s = arrival_s
            self._bad_unlogged = 0
        else:
            self._bad_unlogged += 1
        if self._bad_in_row == BAD_FRAMES_FOR_FAULT:
            self._on_fault(problem)

    def _on_fault(self, problem: str) -> None:
        self._fault = problem
        self.health.extra["feedback_faults"] += 1
        self.health.extra["feedback_fault_active"] = 1.0
        self._event(EVENT_FEEDBACK_FAULT, f"{BAD_FRAMES_FOR_FAULT} invalid feedback frames in a row "
                    f"(last: {problem}); ramped stop, reconnecting", safety_stop=True,
                    bad_frames=BAD_FRAMES_FOR_FAULT, frames_bad_total=self.health.frames_bad)
        if self.state is not None:
            self._command(0.0, 0.0, self.settings.stop_decel_m_s2, None, "feedback fault stop")
        else:
            self._stop_pending = True  # nothing valid read yet: the stop goes out once one is
        if self._lost is None:
            self._lost = f"treadmill {self.settings.name!r}: feedback fault ({problem})"

    # ---- helpers -----------------------------------------------------------------------------
    def _on_speed(self, command: dict[str, Any]) -> None:
        right = _number(command, "right_m_s", None)
        left = _number(command, "left_m_s", right)
        accel = _number(command, "accel_m_s2", self.settings.default_accel_m_s2)
        if right != 0.0 or left != 0.0:
            if self._watchdog_tripped:
                raise ConfigError("speed command refused: the belt was stopped because the session "
                                  "heartbeat went missing; it runs again once heartbeats resume")
            if self._fault is not None:
                raise ConfigError(f"speed command refused: treadmill feedback fault ({self._fault}); "
                                  f"it runs again after {FAULT_CLEAR_S:g} s of valid feedback")
        self._command(right, left, accel, None, "speed")

    def _command(self, right_m_s: float, left_m_s: float, accel_m_s2: float,
                 incline_deg: float | None, reason: str, *, clamp_accel: bool = True) -> None:
        s, m = self.settings, self.model
        if self.state is None:
            raise ConfigError("treadmill not connected yet (no valid state read, incline unknown); "
                              "command not sent")
        # The settings lie within the model (checked at construction); the model's ceiling is
        # applied again here so nothing can ever send more.
        right = min(max(s.clamp_speed(right_m_s), -m.max_reverse_m_s), m.max_speed_m_s)
        left = min(max(s.clamp_speed(left_m_s), -m.max_reverse_m_s), m.max_speed_m_s)
        if clamp_accel:
            accel = s.clamp_accel(accel_m_s2)
        else:
            accel = abs(accel_m_s2) if accel_m_s2 else s.emergency_decel_m_s2
        accel = min(accel, m.max_accel_m_s2)
        incline = self.state.incline_deg if incline_deg is None else s.clamp_incline(incline_deg)
        if (right, left) != (right_m_s, left_m_s):
            self._event(EVENT_CLAMPED, f"{reason}: speeds ({right_m_s}, {left_m_s}) m/s clamped to "
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
            self._event(EVENT_SEND_FAILED, self._lost)
            return
        self._stop_pending = False
        self.target = (right, left)
        self.last_command = cmd
        log.info("treadmill %s: right %.3f m/s, left %.3f m/s, accel %.2f m/s^2, incline %.2f deg",
                 reason, right, left, accel, incline)

    def _event(self, kind: str, text: str, *, level: int = logging.WARNING, **fields: Any) -> None:
        """Log, keep (``events``) and queue for the events stream one thing the driver did or saw."""
        import pylsl

        log.log(level, "treadmill %s: %s", kind, text)
        self.events.append((time.monotonic(), kind, text))
        # strictly increasing stamps, even for two events within the clock's resolution
        t = max(pylsl.local_clock(), self._last_event_lsl + 1e-6)
        self._last_event_lsl = t
        self._outbox.append((t, marker(EVENT_PREFIX + kind, detail=text, **fields)))


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
