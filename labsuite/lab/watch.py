"""Every role's failure rule: what the session does when a supervised process dies or comes back.

Sits between the supervisors (labsuite.processes) and the session role (labsuite.protocol.session)
in ``labsuite run``: a driver or the processor that exits pauses the session and stops the belt
(the supervisor restarts it; the session resumes on the operator's word, or ends after the
protocol's ``device_resume_timeout_s``). The recorder is restarted at once and continues the
session in its next part file; the gap is a ``recording_gap`` marker, and if it does not record
again within :data:`RECORDER_RESUME_S` the belt is stopped as for a lost device.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labsuite import markers as mk
from labsuite.archive import naming

log = logging.getLogger(__name__)

RECORDER = "recorder"
RECORDER_RESUME_S = 2.0
# roles whose end is no device loss: the GUI closes when the operator closes it; the metronome is
# restarted by its supervisor and picks the beat up from the session's repeated tempo (the belt is
# safe without a click; the gap shows in the beat stream and the role events)
NOT_DEVICES = ("gui", "metronome")


@dataclass
class _Down:
    since_s: float  # LSL time the exit was seen
    start: int  # the start that exited
    paused: bool = False


class RoleWatch:
    """Turn the supervisors' role states into the session's device events (thread-safe).

    Give :meth:`on_state` to both supervisors; call :meth:`tick` from the run loop about every
    0.1 s (it applies the recorder's 2 s rule); :meth:`stopping` before the roles are stopped.
    """

    def __init__(self, session: Any, *, session_file: Path | None,
                 recorder_resume_s: float = RECORDER_RESUME_S) -> None:
        self.session = session
        self.session_file = session_file
        self.recorder_resume_s = recorder_resume_s
        self.supervisors: list[Any] = []
        self._down: dict[str, _Down] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self.recorder_gave_up = False
        self.gaps: list[tuple[int, float]] = []  # (part, seconds without a recorder)

    def stopping(self) -> None:
        """The run is ending: exits from now on are the shutdown, not faults."""
        with self._lock:
            self._stopping = True

    def on_state(self, role: str, state: str, start: int) -> None:
        """Supervisor callback (its watcher thread)."""
        import pylsl

        if role in NOT_DEVICES:
            return
        now = pylsl.local_clock()
        with self._lock:
            if self._stopping:
                return
            if state == "exited" and role not in self._down:
                self._down[role] = _Down(now, start)
                if role != RECORDER:
                    self.session.device_lost(role, f"the {role} process exited ({self._code(role)}); "
                                             "the supervisor restarts it")
            elif state == "gave_up":
                if role == RECORDER:
                    self.recorder_gave_up = True
                self.session.device_lost(role, f"the {role} process keeps dying; it is not restarted "
                                         "again: end the session")
            elif state == "started" and role in self._down and role != RECORDER:
                self._down.pop(role)
                self.session.device_back(role)

    def _code(self, role: str) -> str:
        for sup in self.supervisors:
            r = sup.roles.get(role)
            if r is not None and r.exits:
                code = r.exits[-1]
                return f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return "exit code unknown"

    def tick(self, recorder_supervisor: Any) -> None:
        """Apply the recorder's rule: back and ready -> recording_gap marker; 2 s late -> belt stop."""
        import pylsl

        with self._lock:
            down = self._down.get(RECORDER)
            if down is None or self._stopping:
                return
            now = pylsl.local_clock()
            if recorder_supervisor.ready(RECORDER):
                part = recorder_supervisor.roles[RECORDER].starts
                name = naming.part_path(self.session_file, part).name if self.session_file else ""
                gap = now - down.since_s
                self._down.pop(RECORDER)
                self.gaps.append((part, gap))
                # the session's markers of the gap were heard by no recorder: the gap marker
                # carries them (safety stops included), so the file still says what happened
                missed = tuple(json.dumps({**json.loads(a.text), "t_s": a.t_s}, separators=(",", ":"))
                               for a in list(self.session.published)
                               if a.channel == "marker" and a.t_s >= down.since_s - 0.5
                               and a.marker is not None and not a.marker.FREQUENT)
                self.session.note_marker(mk.RecordingGap(part=part, file=name, lost_at_s=down.since_s,
                                                         gap_s=round(gap, 3), missed=missed))
                if down.paused:
                    self.session.device_back(RECORDER)
            elif not down.paused and now - down.since_s > self.recorder_resume_s:
                down.paused = True
                self.session.device_lost(RECORDER, f"the recorder exited and does not record again "
                                         f"within {self.recorder_resume_s:g} s: nothing is recorded")

    @property
    def recorder_down(self) -> bool:
        """True while the recorder is dead or not recording yet after a restart."""
        with self._lock:
            return RECORDER in self._down

    def down_for_s(self, role: str) -> float:
        """Seconds a role has been down (NaN when it is not)."""
        import pylsl

        with self._lock:
            d = self._down.get(role)
        return math.nan if d is None else pylsl.local_clock() - d.since_s
