"""The participant on an emulated treadmill: what every device emulator measures, on one time line.

A :class:`GaitScene` plans foot contacts with the simulator's planner (``drivers/sim/gait.py``) at
the belt speed the treadmill emulator reports, and hands each emulator lab-frame plate loads or
tibial IMU signals at its own sample times (``time.monotonic()`` seconds, the clock the emulators
run on). Like a person, the participant steps onto the belt when the session starts (its first
marker) and follows the session's metronome; before that the plates are empty (so the drivers tare).
Physics of the plates' own frames is computed here independently of labsuite (:func:`plate_channels`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from labsuite.drivers.sim import gait

G = 9.80665


def plate_axes(corners_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows = the plate's x, y, z axes in lab coordinates (C3D: x = c0 - c1, z down); and its centre."""
    corners = np.asarray(corners_m, float)
    ex = corners[0] - corners[1]
    ex = ex / np.linalg.norm(ex)
    ey = corners[0] - corners[3]
    ey = ey - ex * (ey @ ex)
    ey = ey / np.linalg.norm(ey)
    return np.vstack([ex, ey, np.cross(ex, ey)]), corners.mean(axis=0)


def plate_channels(grf_lab: np.ndarray, cop_lab: np.ndarray, tz_nm: np.ndarray, corners_m: np.ndarray,
                   origin_m: np.ndarray) -> np.ndarray:
    """Fx..Mz (n, 6) a plate measures: force on the plate in its frame, moments about its sensor origin.

    ``grf_lab`` (n, 3) N is the reaction on the body (the plate feels minus it), applied at the lab
    point ``cop_lab`` (n, 2) m on the plate surface, with the free moment ``tz_nm`` (n,) about the
    vertical. ``origin_m`` is C3D ORIGIN: the surface centre in sensor coordinates.
    """
    to_plate, centre = plate_axes(corners_m)
    grf = np.atleast_2d(np.asarray(grf_lab, float))
    n = len(grf)
    point = np.column_stack([np.asarray(cop_lab, float).reshape(n, 2), np.full(n, centre[2])])
    r = np.asarray(origin_m, float) + (point - centre) @ to_plate.T
    f = -grf @ to_plate.T
    free = -np.asarray(tz_nm, float).reshape(n, 1) * to_plate[:, 2]  # -tz about lab z, plate axes
    return np.column_stack([f, np.cross(r, f) + free])


class GaitScene:
    """A virtual participant shared by the emulators of one lab (thread-safe).

    ``belt_speed_m_s()`` reads the treadmill emulator; ``markers_source_id`` is the session's marker
    stream (the participant steps on at its first marker and follows ``metronome`` markers). Without
    it, call :meth:`step_on` yourself.
    """

    def __init__(self, participant: gait.ParticipantSettings, belt_speed_m_s: Callable[[], float], *,
                 markers_source_id: str | None = None) -> None:
        self.participant = participant
        self._belt_speed = belt_speed_m_s
        self._lock = threading.Lock()
        self._planner: gait.GaitPlanner | None = None
        self._rows = np.empty((0, len(gait.PLANNED_STEP_FIELDS)))
        self._last_speed = 0.0
        self.step_on_s: float | None = None
        self.steps_planned = 0
        self.planned: list[gait.PlannedStep] = []  # every record planned: the ground truth
        self.metronome_spm: list[tuple[float, float | None]] = []
        self._reader = None
        if markers_source_id is not None:
            from labsuite.streams.acquisition import StreamQuery, StreamReader

            self._reader = StreamReader(StreamQuery(source_id=markers_source_id),
                                        on_chunk=self._on_markers, buffer_s=5.0)

    def start(self) -> GaitScene:
        """Start listening to the session's markers (if any)."""
        if self._reader is not None:
            self._reader.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._reader is not None:
            self._reader.stop()

    def step_on(self, at_s: float | None = None) -> None:
        """The participant steps onto the belt at ``at_s`` (monotonic s; now by default)."""
        with self._lock:
            if self._planner is not None:
                return
            t = time.monotonic() if at_s is None else at_s
            self._planner = gait.GaitPlanner(self.participant, t)
            self._last_speed = 0.0  # the next _records() adopts the belt's speed
            self._planner.set_belt_speed(0.0, t)
            self.step_on_s = t

    def set_target_cadence(self, spm: float | None, at_s: float) -> None:
        """A metronome at ``spm`` (None: off) from ``at_s`` (monotonic s) on."""
        with self._lock:
            self.metronome_spm.append((at_s, spm))
            if self._planner is not None:
                self._planner.set_target_cadence(spm, max(at_s, self._planner.start_time_s))

    def _on_markers(self, reader, ts: np.ndarray, data: np.ndarray) -> None:
        import pylsl

        from labsuite.errors import LabsuiteError
        from labsuite.markers import Metronome, decode

        # marker times are on this machine's LSL clock; the scene runs on time.monotonic()
        to_mono = time.monotonic() - pylsl.local_clock()
        self.step_on()
        for t, row in zip(ts, data, strict=True):
            try:
                marker = decode(str(row[0]))
            except LabsuiteError:
                continue  # a junk marker is not a cue
            if isinstance(marker, Metronome) and not marker.problems:
                # the reader hands over times on this machine's clock already
                self.set_target_cadence(marker.spm, float(t + to_mono))

    def _records(self, t_end_s: float) -> np.ndarray | None:
        """Plan up to ``t_end_s`` at the belt's current speed; the records rendering still needs."""
        with self._lock:
            planner = self._planner
            if planner is None:
                return None
            # the planner's own bounds: 8 m/s running, 2.5 m/s walking
            speed = min(max(self._belt_speed(), 0.0), 2.5 if self.participant.mode == "walk" else 8.0)
            if abs(speed - self._last_speed) > 0.02 or (speed == 0.0) != (self._last_speed == 0.0):
                planner.set_belt_speed(speed, max(time.monotonic(), planner.start_time_s))
                self._last_speed = speed
            new = planner.plan_until(t_end_s)
            if new:
                self.planned.extend(new)
                self.steps_planned += sum(1 for s in new if s.kind == "step")
                self._rows = np.vstack([gait.prune_records(self._rows, t_end_s - 10.0),
                                        gait.steps_to_array(new)])
            return self._rows

    def plate(self, belt: str, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lab-frame GRF on the body (n, 3) N, COP (n, 2) m, free moment (n,) N·m on ``belt``'s plate."""
        t = np.asarray(t_s, float)
        rows = self._records(float(t[-1])) if len(t) else None
        if rows is None:
            return np.zeros((len(t), 3)), np.zeros((len(t), 2)), np.zeros(len(t))
        grf, cop, tz = gait.render_plate(rows, t, belt, self.participant)
        before = t < self.step_on_s
        grf[before], cop[before], tz[before] = 0.0, 0.0, 0.0  # nobody on the belt yet
        return grf, cop, tz

    def imu(self, side: str, t_s: np.ndarray) -> np.ndarray:
        """Tibia-frame ax ay az (m/s²), gx gy gz (rad/s) (n, 6) of the ``side`` shank's IMU."""
        t = np.asarray(t_s, float)
        rows = self._records(float(t[-1])) if len(t) else None
        if rows is None:
            out = np.zeros((len(t), 6))
            out[:, 0] = G  # standing beside the treadmill: x up the tibia
            return out
        return gait.render_imu(rows, t, side, self.participant)
