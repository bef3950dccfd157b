"""The simulated gait lab: a virtual participant on an instrumented treadmill, one process per device.

A *participant* process plans the steps (``drivers.sim.gait.GaitPlanner``), following the belt
speed from the treadmill stream and the metronome from the session's markers, and publishes each
planned step ahead of time on a ``SimulatedGait`` stream (the ground truth, too). Each device
process (left/right or single belt force plate, left/right tibial IMU, camera, treadmill) is a
:class:`~labsuite.drivers.base.Driver` that renders its samples from those planned steps on its
own clock grid, so killing one device leaves the others running, as in a real lab.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from labsuite import checks as check
from labsuite.drivers.base import Chunk, Driver, DriverRunner
from labsuite.drivers.sim import gait
from labsuite.drivers.sim.learning import save_memory
from labsuite.drivers.treadmill import (
    SIMULATED_TREADMILL,
    BeltRamp,
    BeltState,
    TreadmillDriver,
    TreadmillSettings,
)
from labsuite.errors import ConfigError, LabsuiteError
from labsuite.ids import check_lab_id, commands_source_id, markers_source_id, sim_source_id
from labsuite.markers import Metronome, decode
from labsuite.plates import lab_to_plate
from labsuite.processes import RoleSpec
from labsuite.streams import contracts as c
from labsuite.streams.acquisition import StreamQuery, StreamReader

log = logging.getLogger(__name__)

BELT_LENGTH_M = 1.8
BELT_WIDTH_M = 0.25  # each belt of a split-belt treadmill; a single belt is twice as wide
PLATE_ORIGIN_M = np.array([0.0, 0.0, -0.04])  # surface centre 40 mm above the sensor origin (z down)

DEVICES_SPLIT = ("fp-left", "fp-right", "imu-left", "imu-right", "camera", "treadmill")
DEVICES_SINGLE = ("fp-single", "imu-left", "imu-right", "camera", "treadmill")


def belt_corners(belt: str) -> np.ndarray:
    """Return C3D CORNERS (4, 3) in m for a simulated belt plate (plate z points down).

    Lab frame: x forward, y left, z up. The left belt spans y in [0, 0.25] m, the right belt
    [-0.25, 0] m, a single belt [-0.25, 0.25] m; all span x in [-0.9, 0.9] m.
    """
    y0, width = {c.BELT_LEFT: (0.0, BELT_WIDTH_M), c.BELT_RIGHT: (-BELT_WIDTH_M, BELT_WIDTH_M),
                 c.BELT_SINGLE: (-BELT_WIDTH_M, 2 * BELT_WIDTH_M)}[belt]
    x = BELT_LENGTH_M / 2
    return np.array([[x, y0, 0.0], [-x, y0, 0.0], [-x, y0 + width, 0.0], [x, y0 + width, 0.0]])


@dataclass(frozen=True)
class SimLabSettings:
    """What the simulated lab looks like. ``lab_id`` makes every source_id unique.

    ``initial_speed_m_s`` is the belt speed at start (None: the participant's speed, so
    ``labsuite simulate`` shows gait at once; a session passes 0 and commands the belt itself).
    """

    lab_id: str = "default"
    participant: gait.ParticipantSettings = field(default_factory=gait.ParticipantSettings)
    plate_rate_hz: float = 1000.0
    imu_rate_hz: float = 1000.0
    camera_rate_hz: float = 100.0
    camera_drop_fraction: float = 0.002
    treadmill_rate_hz: float = 50.0
    initial_speed_m_s: float | None = None
    chunk_s: float = 0.01
    memory_file: str | None = None  # where the participant saves its learned habit at the end

    def __post_init__(self) -> None:
        check_lab_id(self.lab_id)
        where = "simulated lab "
        check.positive(where, self, "plate_rate_hz", "imu_rate_hz", "camera_rate_hz",
                       "treadmill_rate_hz", "chunk_s")
        check.one_of(where, "plate_rate_hz", self.plate_rate_hz, (500.0, 1000.0, 2000.0))
        check.number(where, "camera_drop_fraction", self.camera_drop_fraction, low=0.0, high=0.5,
                     high_open=True)
        check.number(where, "initial_speed_m_s", self.initial_speed_m_s, low=0.0, high=8.0,
                     unit="m/s", optional=True)

    @property
    def single_belt(self) -> bool:
        """True when both feet land on one plate."""
        return self.participant.single_belt

    @property
    def devices(self) -> tuple[str, ...]:
        """The device names of this lab, one process each."""
        return DEVICES_SINGLE if self.single_belt else DEVICES_SPLIT

    def source_id(self, device: str) -> str:
        """The stable source_id of a simulated device (or 'gait' for the participant's plan)."""
        return sim_source_id(self.lab_id, device)

    @property
    def session_markers_source_id(self) -> str:
        """Where the session publishes its markers (the participant listens for the metronome)."""
        return markers_source_id(self.lab_id)

    @property
    def session_commands_source_id(self) -> str:
        """Where the session publishes treadmill commands and its heartbeat."""
        return commands_source_id(self.lab_id)

    def stream_specs(self) -> dict[str, list[c.StreamSpec]]:
        """The streams each device publishes, by device name."""
        return {d: make_driver(self, d).stream_specs() for d in self.devices}


def gait_plan_spec(settings: SimLabSettings) -> c.StreamSpec:
    """The participant's planned steps: one float sample per step (the simulator's ground truth)."""
    chans = tuple(c.Channel(name, "", "PlannedStep") for name in gait.PLANNED_STEP_FIELDS)
    return c.StreamSpec(name=f"labsuite-sim-gait-{settings.lab_id}", kind=c.KIND_SIM_GAIT,
                        channels=chans, rate_hz=c.IRREGULAR_RATE, dtype="float64",
                        source_id=settings.source_id("gait"), model="labsuite virtual participant")


# ---- the participant process ---------------------------------------------------------------

def run_participant(stop: Any, settings: SimLabSettings) -> None:
    """Participant role: plan steps from belt speed and metronome, publish them ahead of time."""
    import pylsl

    spec = gait_plan_spec(settings)
    outlet = pylsl.StreamOutlet(spec.to_info())
    start = pylsl.local_clock()
    planner = gait.GaitPlanner(settings.participant, start)
    initial = settings.participant.initial_speed_m_s if settings.initial_speed_m_s is None \
        else settings.initial_speed_m_s
    planner.set_belt_speed(initial, start)
    inbox: list[tuple[str, float, Any]] = []
    lock = threading.Lock()

    def on_belt(reader: StreamReader, ts: np.ndarray, data: np.ndarray) -> None:
        idx_r = reader.spec.channel_index(c.SPEED_RIGHT) if reader.spec else 0
        idx_l = reader.spec.channel_index(c.SPEED_LEFT) if reader.spec else 1
        speed = float(0.5 * (data[-1, idx_r] + data[-1, idx_l]))
        with lock:
            inbox.append(("speed", float(ts[-1]), speed))

    def on_marker(reader: StreamReader, ts: np.ndarray, data: np.ndarray) -> None:
        for t, row in zip(ts, data, strict=True):
            try:
                marker = decode(str(row[0]))
            except LabsuiteError as exc:  # another program's junk must not deafen the participant
                log.warning("participant: ignored a marker: %s", exc)
                continue
            if isinstance(marker, Metronome):
                if marker.problems:
                    log.warning("participant: ignored a metronome marker: %s", marker.problems[0])
                    continue
                with lock:
                    inbox.append(("metronome", float(t), marker.spm))

    readers = [
        StreamReader(StreamQuery(source_id=settings.source_id("treadmill")), on_chunk=on_belt,
                     buffer_s=5.0).start(),
        StreamReader(StreamQuery(source_id=settings.session_markers_source_id), on_chunk=on_marker,
                     buffer_s=5.0).start(),
    ]
    last_speed = initial
    try:
        while not stop.is_set():
            with lock:
                todo, inbox[:] = list(inbox), []
            for what, t, value in todo:
                if what == "speed":
                    # The belt stream runs at 50 Hz; only changes matter to the participant.
                    if abs(value - last_speed) > 0.02 or (value == 0.0) != (last_speed == 0.0):
                        planner.set_belt_speed(value, t)
                        last_speed = value
                else:
                    planner.set_target_cadence(value, t)
            now = pylsl.local_clock()
            for step in planner.plan_until(now):
                outlet.push_sample(step.to_vector(), now)
            stop.wait(0.02)
    finally:
        for r in readers:
            r.stop()
        del outlet
        if settings.memory_file is not None:
            # what the runner learned in this session, for the next one (drivers/sim/learning.py)
            save_memory(settings.memory_file, planner.habit_spm)


# ---- device drivers --------------------------------------------------------------------------

class _PlanFollower:
    """Collects the participant's planned steps (from its LSL stream) for a device to render."""

    def __init__(self, settings: SimLabSettings) -> None:
        self._rows = np.empty((0, len(gait.PLANNED_STEP_FIELDS)))
        self._lock = threading.Lock()
        self._strike = gait.PLANNED_STEP_FIELDS.index("strike_s")
        self._reader = StreamReader(StreamQuery(source_id=settings.source_id("gait")),
                                    on_chunk=self._on_chunk, buffer_s=10.0)

    def start(self) -> None:
        self._reader.start()

    def stop(self) -> None:
        self._reader.stop()

    def _on_chunk(self, reader: StreamReader, ts: np.ndarray, data: np.ndarray) -> None:
        rows = np.array(data, dtype=np.float64).reshape(len(ts), -1)
        if rows.shape[1] != self._rows.shape[1]:
            log.warning("gait plan with %d fields ignored (expected %d)", rows.shape[1],
                        self._rows.shape[1])
            return
        with self._lock:
            self._rows = np.vstack([self._rows, rows])

    def rows_for(self, t0: float, t1: float) -> np.ndarray:
        """Planned records that may shape samples in [t0, t1]; long-finished ones are forgotten."""
        with self._lock:
            self._rows = gait.prune_records(self._rows, t0)
            return self._rows[self._rows[:, self._strike] <= t1]


class _GridDevice(Driver):
    """A simulated device sampling on an exact grid t0 + k / rate of the LSL clock."""

    rate_hz: float

    def __init__(self, settings: SimLabSettings) -> None:
        super().__init__()
        self.settings = settings
        self._follower: _PlanFollower | None = None
        self._t0 = 0.0
        self._k = 0

    def open(self) -> None:
        import pylsl

        self._follower = _PlanFollower(self.settings)
        self._follower.start()
        self._t0 = pylsl.local_clock()
        self._k = 0

    def close(self) -> None:
        if self._follower is not None:
            self._follower.stop()
            self._follower = None

    def _due(self, timeout_s: float) -> np.ndarray:
        """Wait for at least one chunk's worth of samples (or the timeout); return their indices."""
        import pylsl

        chunk = max(1, round(self.settings.chunk_s * self.rate_hz))
        ready_at = self._t0 + (self._k + chunk) / self.rate_hz
        wait = ready_at - pylsl.local_clock()
        if wait > 0:
            time.sleep(min(wait, timeout_s))
        due = int((pylsl.local_clock() - self._t0) * self.rate_hz)
        if due <= self._k:
            return np.empty(0, dtype=np.int64)
        k = np.arange(self._k, due, dtype=np.int64)
        self._k = due
        return k

    def _times(self, k: np.ndarray) -> np.ndarray:
        return self._t0 + k / self.rate_hz

    def _steps(self, t: np.ndarray) -> np.ndarray:
        assert self._follower is not None
        return self._follower.rows_for(float(t[0]), float(t[-1]))


class SimForcePlate(_GridDevice):
    """One belt's force plate: renders lab-frame GRF/COP, publishes C3D-style plate output."""

    def __init__(self, settings: SimLabSettings, belt: str) -> None:
        super().__init__(settings)
        self.belt = belt
        self.rate_hz = settings.plate_rate_hz
        self.corners = belt_corners(belt)

    def stream_specs(self) -> list[c.StreamSpec]:
        """One force-plate stream with the belt's C3D geometry."""
        return [c.force_plate_spec(self.settings.source_id(f"fp-{self.belt}"), belt=self.belt,
                                   corners_m=self.corners, origin_m=tuple(PLATE_ORIGIN_M),
                                   calibration_id=f"sim-{self.belt}", rate_hz=self.rate_hz,
                                   serial_number=f"SIM-FP-{self.belt.upper()}")]

    def read(self, timeout_s: float) -> list[Chunk]:
        """Render the samples that fell due since the last call."""
        k = self._due(timeout_s)
        if len(k) == 0:
            return []
        t = self._times(k)
        grf, cop, tz = gait.render_plate(self._steps(t), t, self.belt, self.settings.participant)
        self.health.frames_ok += len(k)
        return [Chunk(0, t, lab_to_plate(grf, cop, tz, self.corners, PLATE_ORIGIN_M))]


class SimIMU(_GridDevice):
    """A tibial IMU on one leg."""

    def __init__(self, settings: SimLabSettings, side: str) -> None:
        super().__init__(settings)
        self.side = side
        self.rate_hz = settings.imu_rate_hz

    def stream_specs(self) -> list[c.StreamSpec]:
        """One IMU stream, located on the distal tibia of its side."""
        return [c.imu_spec(self.settings.source_id(f"imu-{self.side}"),
                           location=f"{self.side} distal tibia, anteromedial", side=self.side,
                           rate_hz=self.rate_hz, serial_number=f"SIM-IMU-{self.side.upper()}")]

    def read(self, timeout_s: float) -> list[Chunk]:
        """Render the samples that fell due since the last call."""
        k = self._due(timeout_s)
        if len(k) == 0:
            return []
        t = self._times(k)
        data = gait.render_imu(self._steps(t), t, self.side, self.settings.participant)
        self.health.frames_ok += len(k)
        return [Chunk(0, t, data)]


class SimCamera(_GridDevice):
    """A camera's frame counter; a small, deterministic fraction of frames is dropped."""

    def __init__(self, settings: SimLabSettings) -> None:
        super().__init__(settings)
        self.rate_hz = settings.camera_rate_hz

    def open(self) -> None:
        """A camera needs no gait plan: just start the frame clock."""
        import pylsl

        self._t0 = pylsl.local_clock()
        self._k = 0

    def stream_specs(self) -> list[c.StreamSpec]:
        """The frame-counter stream (frames may drop)."""
        return [c.camera_spec(self.settings.source_id("camera"), rate_hz=self.rate_hz)]

    def read(self, timeout_s: float) -> list[Chunk]:
        """Publish the frames that fell due, minus the dropped ones."""
        k = self._due(timeout_s)
        if len(k) == 0:
            return []
        # A hash of the frame index decides drops, so the pattern is reproducible.
        keep = ((k * 2654435761) % 1_000_003) / 1_000_003 >= self.settings.camera_drop_fraction
        self.health.frames_ok += int(keep.sum())
        self.health.extra["frames_dropped"] = self.health.extra.get("frames_dropped", 0.0) + float(
            (~keep).sum())
        if not keep.any():
            return []
        kept = k[keep].astype(np.float64)
        # frame_index, segment 0 and position -1: a frame counter that writes no video
        rows = np.column_stack([kept, np.zeros_like(kept), -np.ones_like(kept)])
        return [Chunk(0, self._times(k[keep]), rows)]


class SimTreadmill(TreadmillDriver):
    """A treadmill whose belts ramp in software; obeys the session's commands and heartbeat.

    :meth:`press_estop` is the red button on the treadmill itself (SIGUSR1 to the driver's
    process, see :func:`run_device`): the controller brakes at ``ESTOP_DECEL_M_S2`` and ignores
    remote commands for ``ESTOP_HOLD_S``; the driver and the session are not told, as on a real
    treadmill: only the measured speed shows it.
    """

    MODEL = SIMULATED_TREADMILL
    ESTOP_DECEL_M_S2 = 3.0
    ESTOP_HOLD_S = 3.0

    def __init__(self, settings: SimLabSettings) -> None:
        super().__init__(TreadmillSettings(source_id=settings.source_id("treadmill"),
                                           model="simulated instrumented treadmill",
                                           state_rate_hz=settings.treadmill_rate_hz))
        speed = settings.participant.initial_speed_m_s if settings.initial_speed_m_s is None \
            else settings.initial_speed_m_s
        self._ramp = BeltRamp(speed, speed, 0.0)
        self._last_advance: float | None = None
        self._estop_until = -float("inf")  # monotonic time the hardware e-stop lets go

    def _connect(self) -> None:
        self._last_advance = time.monotonic()

    def _disconnect(self) -> None:
        self._last_advance = None

    def _send_belt_command(self, right_m_s: float, left_m_s: float, accel_m_s2: float,
                           incline_deg: float) -> None:
        if time.monotonic() < self._estop_until:
            log.warning("simulated treadmill: command ignored, the hardware e-stop is pressed")
            return
        self._ramp.set_target(right_m_s, left_m_s, accel_m_s2, incline_deg)

    def press_estop(self) -> None:
        """The treadmill's own e-stop button: brake to a stop, ignore commands for a while."""
        log.warning("simulated treadmill: hardware e-stop pressed")
        self._estop_until = time.monotonic() + self.ESTOP_HOLD_S
        self._ramp.set_target(0.0, 0.0, self.ESTOP_DECEL_M_S2, self._ramp.incline_deg)

    def _read_state(self, timeout_s: float) -> BeltState | None:
        now = time.monotonic()
        dt = 0.0 if self._last_advance is None else now - self._last_advance
        self._last_advance = now
        return self._ramp.advance(dt)


def make_driver(settings: SimLabSettings, device: str) -> Driver:
    """Build the driver of one simulated device by name (see ``SimLabSettings.devices``)."""
    if device.startswith("fp-"):
        return SimForcePlate(settings, device[3:])
    if device.startswith("imu-"):
        return SimIMU(settings, device[4:])
    if device == "camera":
        return SimCamera(settings)
    if device == "treadmill":
        return SimTreadmill(settings)
    raise ConfigError(f"unknown simulated device {device!r}; "
                      f"expected one of {(*DEVICES_SPLIT, 'fp-single')}")


def run_device(stop: Any, settings: SimLabSettings, device: str) -> None:
    """Device role: run one simulated device under the DriverRunner until ``stop`` is set."""
    driver = make_driver(settings, device)
    command_source = settings.session_commands_source_id if device == "treadmill" else None
    if isinstance(driver, SimTreadmill):
        # a fault to inject from outside (tests, scripts/fault_matrix.py): the hardware e-stop
        signal.signal(signal.SIGUSR1, lambda *_: driver.press_estop())
    runner = DriverRunner(driver, command_source_id=command_source)
    watcher = threading.Thread(target=lambda: (stop.wait(), runner.stop()), daemon=True)
    watcher.start()
    runner.run()


def sim_lab_roles(settings: SimLabSettings) -> list[RoleSpec]:
    """The processes of the simulated lab (the participant, one per device), all restartable."""
    return [RoleSpec("sim-participant", run_participant, {"settings": settings}),
            *(RoleSpec(f"sim-{d}", run_device, {"settings": settings, "device": d})
              for d in settings.devices)]


def with_overrides(settings: SimLabSettings, **participant: Any) -> SimLabSettings:
    """Return settings with some participant fields replaced (validated again)."""
    return replace(settings, participant=replace(settings.participant, **participant))
