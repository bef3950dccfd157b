"""The session role over LSL: feeds the stage machine and publishes its markers and treadmill commands.

Reads ``labsuite-steps`` (step records), the force-plate streams (for the force watchdog and the
weigh-in), the treadmill's state and events streams (the belt as it runs, against what was
commanded) and the operator stream through StreamReaders it pulls from its own loop; publishes
markers on ``labsuite-session-<lab>-markers`` and commands plus a 0.1 s heartbeat on
``labsuite-session-<lab>-commands``. The rules live in
:class:`~labsuite.protocol.machine.SessionMachine`; this file only moves data.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from labsuite import checks as check
from labsuite import ids
from labsuite.errors import ConfigError, DeviceError
from labsuite.markers import Marker, Paused, SessionEnd
from labsuite.protocol import operator as op
from labsuite.protocol.machine import BEATS_AUDIO, BEATS_TIMER, Action, SessionMachine
from labsuite.protocol.progression import ProgrammeContext
from labsuite.protocol.schema import Protocol
from labsuite.steps import STEP_FIELD_NAMES, rows_to_steps
from labsuite.streams import messages as msg
from labsuite.streams.acquisition import (
    EVENT_CALLBACK_ERROR,
    EVENT_CONNECTED,
    EVENT_LOST,
    EVENT_RECONNECTED,
    Acquisition,
    StreamQuery,
    StreamReader,
)
from labsuite.streams.contracts import FZ, SPEED_LEFT, SPEED_RIGHT, commands_spec, markers_spec

log = logging.getLogger(__name__)

# The session's own start (not an operator command: op.OP_START is the operator's belt Start).
_BEGIN = "_begin"


@dataclass(frozen=True)
class SessionSettings:
    """Where the session's streams are and how often it ticks.

    ``steps_source_id`` is the processor's step stream; ``force_source_ids`` the force-plate
    streams the force watchdog watches (every one must keep arriving while the belt moves);
    ``treadmill_source_id`` the treadmill's state stream, whose measured speeds are held against
    the commanded ones (and its driver's events stream, beside it). ``auto_start`` names who lets
    the belt start without the operator's Start (``--auto-start``; None: the operator starts it);
    ``mass_kg`` is the mass the weigh-in is checked against;
    ``beats_source_id`` the audio metronome's beat stream: with it the clicks are the beats (the
    session says only the tempo, and waits for that stream before it starts); without it the
    session's own timer makes silent beats (``--no-sound``).
    """

    lab_id: str
    participant_id: str
    steps_source_id: str
    force_source_ids: tuple[str, ...] = ()
    treadmill_source_id: str | None = None
    auto_start: str | None = None
    mass_kg: float | None = None
    beats_source_id: str | None = None
    programme_session: int | None = None
    tick_s: float = 0.02
    heartbeat_period_s: float = msg.HEARTBEAT_PERIOD_S
    connect_timeout_s: float = 30.0
    settle_s: float = 1.0
    auto_resume: bool = False

    def __post_init__(self) -> None:
        ids.check_lab_id(self.lab_id)
        ids.check_participant_id(self.participant_id)
        if not self.steps_source_id:
            raise ConfigError("steps_source_id: expected the processor's step stream source_id")
        check.positive("session setting ", self, "tick_s", "heartbeat_period_s", "connect_timeout_s")
        if self.heartbeat_period_s >= msg.HEARTBEAT_TIMEOUT_S:
            raise ConfigError(f"heartbeat_period_s: expected < {msg.HEARTBEAT_TIMEOUT_S} s "
                              "(the treadmill stops the belt when the heartbeat is missing that long)")
        check.positive("session setting ", self, "settle_s", zero_ok=True)

    @property
    def markers_source_id(self) -> str:
        """Where markers go."""
        return ids.markers_source_id(self.lab_id)

    @property
    def commands_source_id(self) -> str:
        """Where treadmill commands and the heartbeat go."""
        return ids.commands_source_id(self.lab_id)

    @property
    def operator_source_id(self) -> str:
        """Where operator commands come from."""
        return ids.operator_source_id(self.lab_id)


class Session:
    """Run one protocol session over LSL.

    ``open()`` creates the outlets and starts the readers; ``wait_ready()`` waits for the treadmill,
    the force plates and the processor; ``start()`` starts the stage machine on its own thread.
    ``on_action(action)`` is called (on that thread) for every marker and command published, for
    progress displays and prompts. Operator methods may be called from any thread.
    """

    def __init__(self, protocol: Protocol, settings: SessionSettings, *,
                 on_action: Callable[[Action], None] | None = None,
                 context: ProgrammeContext | None = None) -> None:
        self.protocol = protocol
        self.settings = settings
        self.machine = SessionMachine(protocol, programme_session=settings.programme_session,
                                      participant=settings.participant_id,
                                      auto_start=settings.auto_start, expected_mass_kg=settings.mass_kg,
                                      belt_feedback=settings.treadmill_source_id is not None,
                                      beats=BEATS_AUDIO if settings.beats_source_id else BEATS_TIMER,
                                      auto_resume=settings.auto_resume, context=context)
        self.on_action = on_action
        self.published: list[Action] = []
        self.log: list[tuple[float, str]] = []
        self._ops: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._steps: queue.Queue[np.ndarray] = queue.Queue()
        self._machine_lock = threading.Lock()
        self._push_lock = threading.Lock()
        self._markers: Any = None
        self._commands: Any = None
        # one reader per input stream; the session loop pulls them (caller_pulls) right before
        # its watchdogs look, so a process stalled by load never mistakes data it has not pulled
        # yet for data that stopped
        self._readers: dict[str, StreamReader] = {}
        self._force_last: dict[str, float] = {}
        self._force_fz: dict[str, float] = {}
        self._belt: list[tuple[np.ndarray, np.ndarray]] = []  # treadmill chunks not yet judged
        self._belt_events: list[tuple[float, str, str]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._estop_sent_at = math.nan
        self._hb_seq = 0
        self.heartbeats = 0

    # ---- lifecycle ---------------------------------------------------------------------------
    def open(self) -> Session:
        """Create the marker and command outlets; start the input thread and the heartbeat."""
        import pylsl

        s = self.settings
        self._markers = pylsl.StreamOutlet(
            markers_spec(s.markers_source_id, name=f"labsuite-markers-{s.lab_id}").to_info())
        self._commands = pylsl.StreamOutlet(
            commands_spec(s.commands_source_id, name=f"labsuite-commands-{s.lab_id}").to_info())
        now = pylsl.local_clock()
        for sid in s.force_source_ids:
            self._force_last[sid] = now
        inputs = [s.steps_source_id, *s.force_source_ids, s.operator_source_id]
        if s.treadmill_source_id is not None:
            inputs += [s.treadmill_source_id, ids.treadmill_events_source_id(s.treadmill_source_id)]
        if s.beats_source_id:
            inputs.append(s.beats_source_id)
        for sid in dict.fromkeys(inputs):
            self._readers[sid] = StreamReader(
                StreamQuery(source_id=sid), on_chunk=self._on_chunk, on_event=self._on_reader_event,
                caller_pulls=True, buffer_s=30.0).start()
        # the heartbeat runs from now on, so a treadmill that connects sees a live session
        self._thread = threading.Thread(target=self._loop, name="session", daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout_s: float | None = None) -> list[str]:
        """Wait for the treadmill, force plates and processor; return what is still missing."""
        if not self._readers or self._commands is None:
            raise ConfigError("Session.wait_ready(): call open() first")
        deadline = time.monotonic() + (self.settings.connect_timeout_s if timeout_s is None else timeout_s)
        missing: list[str] = []
        while time.monotonic() < deadline:
            missing = []
            if not self._commands.have_consumers():
                missing.append(f"treadmill (nobody reads {self.settings.commands_source_id})")
            if not self._readers[self.settings.steps_source_id].connected:
                missing.append(f"processor (stream {self.settings.steps_source_id})")
            for sid in self.settings.force_source_ids:
                if not self._readers[sid].stats().samples:
                    missing.append(f"force plate (stream {sid})")
            tm = self.settings.treadmill_source_id
            if tm is not None and not self._readers[tm].stats().samples:
                missing.append(f"treadmill speed (stream {tm})")
            beats = self.settings.beats_source_id
            if beats and not self._readers[beats].connected:
                missing.append(f"metronome (stream {beats}: the sound output opened by the "
                               "metronome role)")
            if not missing:
                break
            time.sleep(0.1)
        if not missing and self.settings.settle_s > 0:
            # consumers that resolve on a timer (the recorder, a GUI) get time to connect
            time.sleep(self.settings.settle_s)
        return missing

    def start(self) -> None:
        """Start the protocol: the first markers and belt commands go out now."""
        import pylsl

        if self._thread is None:
            raise ConfigError("Session.start(): call open() first")
        self._ops.put((_BEGIN, {"t": pylsl.local_clock()}))

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the session has finished (True) or the timeout passed (False)."""
        return self._done.wait(timeout_s)

    @property
    def finished(self) -> bool:
        """True once the stage machine has ended the session."""
        return self._done.is_set()

    def close(self, timeout_s: float = 5.0, *, linger_s: float = 1.0) -> None:
        """Stop the loop and the inputs; an unfinished session is aborted first (ramped stop).

        The heartbeat goes on while the belt ramps down (at most 30 s), and the outlets stay
        ``linger_s`` longer so recorders receive the last markers.
        """
        import pylsl

        if self._thread is not None and self._thread.is_alive():
            if not self.machine.finished and self.machine.state != "idle":
                self.abort(source="shutdown")
                self._done.wait(2.0)
                deadline = time.monotonic() + 30.0
                while (self.machine.belt_speed_m_s(pylsl.local_clock()) > 0
                       and time.monotonic() < deadline):
                    time.sleep(0.05)
                time.sleep(linger_s)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._last_heartbeat()
        Acquisition(self._readers.values()).stop(timeout_s)
        self._markers = None
        self._commands = None

    def __enter__(self) -> Session:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- operator API (any thread) ---------------------------------------------------------------
    def start_belt(self, source: str = "api") -> None:
        """The operator's Start: the belt waiting for it may move."""
        self._ops.put((op.OP_START, {"source": source}))

    def pause(self, source: str = "api") -> None:
        """Pause the session."""
        self._ops.put((op.OP_PAUSE, {"source": source}))

    def resume(self, source: str = "api") -> None:
        """Resume a paused session."""
        self._ops.put((op.OP_RESUME, {"source": source}))

    def skip(self, source: str = "api") -> None:
        """Skip to the next stage."""
        self._ops.put((op.OP_SKIP, {"source": source}))

    def abort(self, source: str = "api") -> None:
        """End the session with a ramped stop."""
        self._ops.put((op.OP_ABORT, {"source": source}))

    def request_checkin(self, source: str = "api") -> None:
        """Ask for a pain rating now."""
        self._ops.put((op.OP_CHECKIN, {"source": source}))

    def answer_pain(self, pain: int, checkin_id: int | None = None, source: str = "api") -> None:
        """Answer a check-in (pain 0-10); ConfigError at once for a bad rating."""
        if isinstance(pain, bool) or not isinstance(pain, int) or not 0 <= pain <= 10:
            raise ConfigError(f"pain rating: expected an integer 0-10, got {pain!r}")
        self._ops.put((op.OP_PAIN, {"pain": pain, "id": checkin_id, "source": source}))

    def device_lost(self, device: str, detail: str) -> None:
        """A role (driver, processor, recorder) stopped: the session pauses and stops the belt."""
        self._ops.put(("device_lost", {"device": device, "detail": detail}))

    def device_back(self, device: str) -> None:
        """A lost role is back: the session resumes on confirmation (or by itself, auto_resume)."""
        self._ops.put(("device_back", {"device": device}))

    def note_marker(self, marker: Marker) -> None:
        """Publish a marker the composition root knows of (a recording gap) with the others."""
        self._ops.put(("marker", {"marker": marker}))

    def emergency_stop(self, source: str = "api") -> float:
        """Send emergency_stop to the treadmill from this thread, now; returns its LSL time."""
        import pylsl

        t = pylsl.local_clock()
        with self._push_lock:
            if self._commands is not None:
                self._commands.push_sample([msg.command(msg.CMD_EMERGENCY_STOP, source=source)], t)
            self._estop_sent_at = t
        self._note(t, f"EMERGENCY STOP from {source}")
        self._ops.put((op.OP_EMERGENCY_STOP, {"source": source}))
        return t

    # ---- input callbacks (the session loop's thread, from StreamReader.pull) ----------------------
    def _on_reader_event(self, reader: StreamReader, kind: str, detail: str) -> None:
        # gaps are the recorder's to keep; the session notes what changes whether it can run
        if kind in (EVENT_CONNECTED, EVENT_LOST, EVENT_RECONNECTED, EVENT_CALLBACK_ERROR):
            import pylsl

            self._note(pylsl.local_clock(), f"{reader.query.source_id}: {kind}: {detail}")

    def _on_chunk(self, reader: StreamReader, ts: np.ndarray, data: np.ndarray) -> None:
        s = self.settings
        sid, spec = str(reader.query.source_id), reader.spec
        assert spec is not None  # a reader hands over chunks only once it has the description
        if sid == s.steps_source_id:
            if spec.labels != STEP_FIELD_NAMES:
                self._note(ts[-1], f"ignored steps from {sid}: channels {list(spec.labels[:3])}... "
                           "are not the step record")
                return
            self._steps.put(rows_to_steps(np.asarray(data, dtype=np.float64)))
        elif sid == s.operator_source_id:
            self._on_operator(ts, data)
        elif sid == s.treadmill_source_id:
            try:
                right, left = spec.channel_index(SPEED_RIGHT), spec.channel_index(SPEED_LEFT)
            except DeviceError as exc:
                self._note(ts[-1], f"ignored treadmill stream {sid}: {exc}")
                return
            self._belt.append((np.array(ts, dtype=np.float64),
                               np.asarray(data, dtype=np.float64)[:, [right, left]]))
        elif s.treadmill_source_id is not None and sid == ids.treadmill_events_source_id(
                s.treadmill_source_id):
            self._on_treadmill_events(ts, data)
        elif sid == s.beats_source_id:
            pass  # read only to know the metronome is up; the recorder keeps the beats
        else:
            # sample time on this machine's clock: pulled right before the watchdog looks
            self._force_last[sid] = max(self._force_last.get(sid, -math.inf), float(ts[-1]))
            try:
                self._force_fz[sid] = float(np.mean(np.asarray(data, dtype=float)[:, spec.channel_index(FZ)]))
            except DeviceError:
                self._force_fz[sid] = math.nan

    def _on_treadmill_events(self, ts: np.ndarray, data: Any) -> None:
        for t, row in zip(ts, data, strict=True):
            try:
                event = msg.decode(str(row[0]))
            except DeviceError as exc:
                self._note(float(t), f"ignored treadmill event: {exc}")
                continue
            kind = str(event.get("event", ""))
            self._note(float(t), f"treadmill: {kind}: {event.get('detail', '')}")
            if event.get("safety_stop") is True:  # the driver stopped the belt by itself
                self._belt_events.append((float(t), kind, str(event.get("detail", ""))))

    def _on_operator(self, ts: np.ndarray, data: Any) -> None:
        for row in data:
            try:
                cmd = op.parse_operator_command(str(row[0]))
            except ConfigError as exc:
                self._note(float(ts[-1]), f"ignored operator command: {exc}")
                continue
            name = cmd.pop("op")
            cmd.setdefault("source", "operator")
            if name == op.OP_EMERGENCY_STOP:
                self.emergency_stop(source=str(cmd["source"]))  # at once, not at the next tick
            else:
                self._ops.put((name, cmd))

    # ---- the loop --------------------------------------------------------------------------------
    def _loop(self) -> None:
        import pylsl

        s = self.settings
        next_hb = 0.0
        while not self._stop.is_set():
            now = pylsl.local_clock()
            if now >= next_hb:
                self._heartbeat(now)
                next_hb = now + s.heartbeat_period_s
            for reader in self._readers.values():
                reader.pull()
            now = pylsl.local_clock()
            with self._machine_lock:
                actions = self._drain_ops(now)
                steps = self._drain_steps()
                if self._force_last:
                    fz = [abs(v) for v in self._force_fz.values() if math.isfinite(v)]
                    actions += self.machine.note_force(min(self._force_last.values()),
                                                       float(sum(fz)) if fz else math.nan)
                for t, kind, detail in self._belt_events:
                    actions += self.machine.note_treadmill_event(t, kind, detail)
                for t_belt, speeds in self._belt:
                    actions += self.machine.note_belt(t_belt, speeds)
                self._belt_events.clear()
                self._belt.clear()
                actions += self.machine.feed(now, steps)
            self._publish(actions)
            if self.machine.finished and not self._done.is_set():
                self._done.set()
            # the heartbeat goes on after the end until close(): the treadmill's own watchdog
            # is for a session that died, not one that finished
            self._stop.wait(s.tick_s)

    def _heartbeat(self, now: float) -> None:
        self._hb_seq += 1
        with self._push_lock:
            if self._commands is not None:
                self._commands.push_sample([msg.command(msg.CMD_HEARTBEAT, seq=self._hb_seq)], now)
                self.heartbeats += 1

    def _last_heartbeat(self, wait_s: float = 0.3) -> None:
        """Tell the treadmill the session is closing (a heartbeat with ``end: true``).

        Its silence from now on is not a dead session: the driver's watchdog stands down.
        """
        import pylsl

        with self._push_lock:
            if self._commands is None:
                return
            self._hb_seq += 1
            self._commands.push_sample([msg.command(msg.CMD_HEARTBEAT, seq=self._hb_seq, end=True)],
                                       pylsl.local_clock())
        time.sleep(wait_s)  # delivered before the outlet goes

    def _drain_ops(self, now: float) -> list[Action]:
        out: list[Action] = []
        m = self.machine
        while True:
            try:
                name, f = self._ops.get_nowait()
            except queue.Empty:
                return out
            source = str(f.get("source", "api"))
            if name == _BEGIN:
                out += m.start(f["t"])
            elif name == op.OP_START:
                out += m.start_belt(now, source=source)
            elif name == "device_lost":
                out += m.device_lost(now, str(f["device"]), str(f["detail"]))
            elif name == "device_back":
                out += m.device_back(now, str(f["device"]))
            elif name == "marker":
                out.append(m.marker(now, f["marker"]))
            elif name == op.OP_PAUSE:
                out += m.pause(now, source=source)
            elif name == op.OP_RESUME:
                out += m.resume(now, source=source)
            elif name == op.OP_SKIP:
                out += m.skip(now, source=source)
            elif name == op.OP_ABORT:
                out += m.abort(now, source=source)
            elif name == op.OP_CHECKIN:
                out += m.request_checkin(now, source=source)
            elif name == op.OP_PAIN:
                out += m.answer_pain(now, int(f["pain"]), checkin_id=f.get("id"), source=source)
            elif name == op.OP_EMERGENCY_STOP:
                # the command itself already went out from the caller's thread
                out += [a for a in m.emergency_stop(self._estop_sent_at, source=source)
                        if not (a.channel == "command" and a.name == msg.CMD_EMERGENCY_STOP)]

    def _drain_steps(self) -> np.ndarray | None:
        chunks = []
        while True:
            try:
                chunks.append(self._steps.get_nowait())
            except queue.Empty:
                break
        return np.concatenate(chunks) if chunks else None

    def _publish(self, actions: list[Action]) -> None:
        if not actions:
            return
        with self._push_lock:
            for a in actions:
                outlet = self._markers if a.channel == "marker" else self._commands
                if outlet is not None:
                    outlet.push_sample([a.text], a.t_s)
        for a in actions:
            self.published.append(a)
            if a.marker is not None and (a.marker.safety or isinstance(a.marker, (SessionEnd, Paused))):
                self._note(a.t_s, a.text)
            if self.on_action is not None:
                self.on_action(a)

    def _note(self, t: float, text: str) -> None:
        self.log.append((float(t), text))
        log.warning("session: %s", text) if "STOP" in text.upper() else log.info("session: %s", text)

    def live(self) -> dict[str, Any]:
        """Return the machine's progress snapshot (thread-safe)."""
        with self._machine_lock:
            return self.machine.live()
