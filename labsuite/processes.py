"""Start, watch and stop the processes of a session (drivers, processor, recorder, session).

LSL is the bus between roles, so each role runs in its own process (DESIGN.md: a crash or stall in
one never stops another). :class:`Supervisor` starts them with the ``spawn`` method, restarts a
role that dies when it is marked restartable (the gap stays visible in acquisition), and stops
them all cleanly: a stop request first (the role closes its device or file), then terminate, then
kill, so Ctrl-C never leaves a device process or a belt command behind.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from labsuite.errors import ConfigError

log = logging.getLogger(__name__)

_CTX = mp.get_context("spawn")


class StopFlag:
    """A cross-process stop request with the ``threading.Event`` methods roles use.

    A ``multiprocessing.Event`` is a condition variable: a child SIGKILLed inside ``wait()`` can
    leave its lock held, and the next ``set()`` then blocks forever (measured: ``Supervisor.stop``
    hung after a force-plate driver was killed). This flag is one lock-free shared byte that
    children poll, so setting it can never block.
    """

    _POLL_S = 0.02

    def __init__(self) -> None:
        self._flag = _CTX.RawValue("b", 0)

    def set(self) -> None:
        """Request the stop."""
        self._flag.value = 1

    def is_set(self) -> bool:
        """True once a stop was requested."""
        return bool(self._flag.value)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the stop is requested or ``timeout`` seconds pass; return ``is_set()``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._flag.value:
            if deadline is None:
                time.sleep(self._POLL_S)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(self._POLL_S, left))
        return bool(self._flag.value)


# A role whose supervisor died (kill -9 of ``labsuite run``) goes on this long, then stops as if
# asked: long enough for the treadmill's own heartbeat watchdog to stop the belt (0.5 s and the
# ramp) while the recorder still records it, short enough that no orphan runs on for good.
ORPHAN_GRACE_S = 8.0


def _watch_parent(parent_pid: int, stop: Any) -> None:
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("the supervisor (pid %d) is gone; stopping in %.0f s", parent_pid, ORPHAN_GRACE_S)
            stop.wait(ORPHAN_GRACE_S)
            stop.set()
            return
        time.sleep(0.2)


def _entry(target: Callable[..., Any], kwargs: dict[str, Any], stop: Any, log_level: int,
           parent_pid: int) -> None:
    """Child-process entry: ignore SIGINT (the parent decides when we stop), run the role.

    The role is stopped, after :data:`ORPHAN_GRACE_S`, when its supervisor dies.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(asctime)s %(processName)s %(name)s: %(message)s")
    threading.Thread(target=_watch_parent, args=(parent_pid, stop), name="parent-watch",
                     daemon=True).start()
    target(stop=stop, **kwargs)


@dataclass(frozen=True)
class RoleSpec:
    """What to run as one process: ``target(stop=..., **kwargs)``, a module-level function.

    ``restart``: start it again when it dies (a driver, the recorder), or not (the GUI, whose
    closing is the operator's decision). ``restart_delay_s``: how soon (None: the supervisor's
    delay, doubled for each recent death). ``signals_ready``: the target is also handed
    ``start`` (1 for its first start, 2 for the first restart ...) and ``ready``, a flag it sets
    once it does its job (:meth:`Supervisor.ready`); the recorder uses both to continue the session
    in a new part file and to say when it records again.
    """

    name: str
    target: Callable[..., Any]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    restart: bool = True
    restart_delay_s: float | None = None
    signals_ready: bool = False


@dataclass
class Role:
    """One supervised process: ``target(stop=Event, **kwargs)`` must return when ``stop`` is set."""

    name: str
    target: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    restart: bool = True
    max_restarts_per_min: int = 5
    restart_delay_s: float | None = None
    signals_ready: bool = False
    process: Any = None
    ready_flag: Any = None
    stop_event: Any = None
    starts: int = 0
    exits: list[int | None] = field(default_factory=list)
    exit_times: list[float] = field(default_factory=list)
    gave_up: bool = False
    restart_at: float | None = None


class Supervisor:
    """Run roles as child processes; restart the restartable ones; stop them all cleanly."""

    def __init__(self, *, restart_delay_s: float = 0.5,
                 on_event: Callable[[str, str], None] | None = None,
                 on_state: Callable[[str, str, int], None] | None = None,
                 log_level: int = logging.WARNING) -> None:
        """Watch roles; ``on_event(role, text)`` gets a line for the operator.

        ``on_state(role, state, start)`` gets the same as data: ``"started"``, ``"exited"`` or
        ``"gave_up"`` and the start's number. Both are called on the watcher thread (keep them short).
        """
        self.roles: dict[str, Role] = {}
        self.log_level = log_level
        self.restart_delay_s = restart_delay_s
        self._on_event = on_event or (lambda role, text: log.info("%s: %s", role, text))
        self._on_state = on_state or (lambda role, state, start: None)
        self._watch: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def add(self, name: str, target: Callable[..., Any], kwargs: dict[str, Any] | None = None,
            *, restart: bool = True, max_restarts_per_min: int = 5,
            restart_delay_s: float | None = None, signals_ready: bool = False) -> None:
        """Register a role; ``target`` must be importable (a module-level function).

        A restartable role that dies more than ``max_restarts_per_min`` times within a minute is
        given up on (a crash loop helps nobody); the event says so.
        """
        if name in self.roles:
            raise ConfigError(f"role {name!r} is already registered")
        if restart_delay_s is not None and not (math.isfinite(restart_delay_s) and restart_delay_s >= 0):
            raise ConfigError(f"role {name!r}: restart_delay_s: expected >= 0 s, got {restart_delay_s!r}")
        self.roles[name] = Role(name, target, dict(kwargs or {}), restart, max_restarts_per_min,
                                restart_delay_s, signals_ready)

    def add_role(self, role: RoleSpec) -> None:
        """Register a role described by a :class:`RoleSpec`."""
        self.add(role.name, role.target, dict(role.kwargs), restart=role.restart,
                 restart_delay_s=role.restart_delay_s, signals_ready=role.signals_ready)

    def start(self) -> Supervisor:
        """Start every role and the watcher thread that restarts dead ones."""
        for role in self.roles.values():
            self._spawn(role)
        self._watch = threading.Thread(target=self._watch_loop, name="supervisor", daemon=True)
        self._watch.start()
        return self

    def _spawn(self, role: Role) -> None:
        role.stop_event = StopFlag()
        kwargs = dict(role.kwargs)
        if role.signals_ready:
            role.ready_flag = StopFlag()
            kwargs.update(start=role.starts + 1, ready=role.ready_flag)
        role.process = _CTX.Process(target=_entry,
                                    args=(role.target, kwargs, role.stop_event, self.log_level, os.getpid()),
                                    name=role.name, daemon=False)
        role.process.start()
        role.starts += 1
        self._on_event(role.name, f"started (pid {role.process.pid})")
        self._on_state(role.name, "started", role.starts)

    def ready(self, name: str) -> bool:
        """True once the current start of a ``signals_ready`` role said it does its job."""
        role = self.roles[name]
        return bool(role.ready_flag is not None and role.ready_flag.is_set()
                    and role.process is not None and role.process.is_alive())

    def _watch_loop(self) -> None:
        while not self._stopping.wait(0.1):
            with self._lock:
                now = time.monotonic()
                for role in self.roles.values():
                    if self._stopping.is_set():
                        break
                    if role.restart_at is not None and now >= role.restart_at:
                        role.restart_at = None
                        self._spawn(role)
                        continue
                    proc = role.process
                    if proc is None or proc.is_alive():
                        continue
                    role.exits.append(proc.exitcode)
                    role.exit_times.append(now)
                    role.process = None
                    self._on_event(role.name, f"exited with code {proc.exitcode}")
                    self._on_state(role.name, "exited", role.starts)
                    if not role.restart:
                        continue
                    recent = [t for t in role.exit_times if now - t < 60.0]
                    if len(recent) > role.max_restarts_per_min:
                        role.gave_up = True
                        self._on_event(role.name, f"died {len(recent)} times within a minute; "
                                       "not restarting it again")
                        self._on_state(role.name, "gave_up", role.starts)
                        continue
                    delay = self.restart_delay_s if role.restart_delay_s is None else role.restart_delay_s
                    role.restart_at = now + delay * 2 ** (len(recent) - 1)
                    if role.restart_at <= now:
                        role.restart_at = None
                        self._spawn(role)

    def pid(self, name: str) -> int | None:
        """Return the pid of a running role (None when not running)."""
        proc = self.roles[name].process
        return proc.pid if proc is not None and proc.is_alive() else None

    def kill(self, name: str) -> None:
        """Kill a role's process hard (SIGKILL), as a crash would; it restarts if restartable."""
        pid = self.pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    def alive(self) -> dict[str, bool]:
        """Return which roles are running."""
        return {n: r.process is not None and r.process.is_alive() for n, r in self.roles.items()}

    def stop(self, timeout_s: float = 10.0) -> dict[str, int | None]:
        """Stop every role: ask, then terminate, then kill. Returns each role's exit code."""
        self._stopping.set()
        if self._watch is not None:
            self._watch.join(timeout=5.0)
        with self._lock:
            for role in self.roles.values():
                if role.stop_event is not None:
                    role.stop_event.set()
            deadline = time.monotonic() + timeout_s
            codes: dict[str, int | None] = {}
            for role in self.roles.values():
                role.restart_at = None
                proc = role.process
                if proc is None:
                    codes[role.name] = role.exits[-1] if role.exits else None
                    continue
                proc.join(max(0.0, deadline - time.monotonic()))
                if proc.is_alive():
                    self._on_event(role.name, "did not stop in time; terminating")
                    proc.terminate()
                    proc.join(3.0)
                if proc.is_alive():
                    proc.kill()
                    proc.join(3.0)
                codes[role.name] = proc.exitcode
        return codes

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
