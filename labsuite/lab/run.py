"""``labsuite run`` without the terminal: plan the session's processes, start them, run the protocol.

Drivers (the simulated lab or a lab file's devices), the live processor and the recorder run as
supervised processes (:mod:`labsuite.processes`); the session role runs in this process so the
operator's keys reach it at once. :func:`run_protocol` returns the stage records and file path.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from labsuite import ids
from labsuite.archive.naming import session_file_name
from labsuite.archive.recorder import RecorderSettings, run_recorder
from labsuite.audio.metronome import DeviceInfo, OutputSettings
from labsuite.audio.role import MetronomeRoleSettings, probe_output_to, run_metronome
from labsuite.errors import ConfigError, DeviceError
from labsuite.lab import programme
from labsuite.lab.live import run_processor
from labsuite.lab.outcome import COULD_NOT_START, Outcome, Recording, classify, read_recording, write_outcome
from labsuite.lab.programme import ProgrammeSetup
from labsuite.lab.watch import RECORDER, RoleWatch
from labsuite.processes import RoleSpec, Supervisor
from labsuite.programme_state import ProgrammeState
from labsuite.protocol.machine import Action
from labsuite.protocol.schema import Protocol, load_protocol
from labsuite.protocol.session import Session, SessionSettings
from labsuite.stages import StageRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """Everything ``labsuite run`` needs; validated on construction, messages name the option."""

    protocol_path: Path
    participant_id: str
    simulate: bool = False
    out_dir: Path = Path("sessions")
    programme_session: int | None = None
    lab_file: Path | None = None
    lab_id: str | None = None
    mass_kg: float | None = None
    speed_m_s: float | None = None
    record: bool = True
    auto_start: bool = False  # --auto-start: the belt starts without the operator's Start
    sound: bool = True  # False: --no-sound (the session's timer beats, flagged; no click)
    audio_device: str | int | None = None  # None: the system default output
    connect_timeout_s: float = 60.0
    settle_s: float = 2.0
    auto_resume: bool = False
    sim_overrides: dict[str, Any] = field(default_factory=dict)
    recheck: bool = False
    sim_days_later: float | None = None

    def __post_init__(self) -> None:
        ids.check_participant_id(self.participant_id, "--participant")
        if self.simulate == (self.lab_file is not None):
            raise ConfigError("give exactly one of --simulate (the built-in simulated lab) or "
                              "--lab LAB.yaml (the lab's real devices)")
        if self.lab_id is not None:
            ids.check_lab_id(self.lab_id, "--lab-id")
        if self.mass_kg is not None and not (math.isfinite(self.mass_kg) and 20 <= self.mass_kg <= 250):
            raise ConfigError(f"--mass-kg: expected 20-250 kg, got {self.mass_kg!r}")
        if self.speed_m_s is not None and not (math.isfinite(self.speed_m_s) and 0 < self.speed_m_s <= 8):
            raise ConfigError(f"--speed: expected 0-8 m/s, got {self.speed_m_s!r}")
        if not (math.isfinite(self.connect_timeout_s) and self.connect_timeout_s > 0):
            raise ConfigError(f"connect timeout: expected > 0 s, got {self.connect_timeout_s!r}")
        if not self.sound and self.audio_device is not None:
            raise ConfigError("--audio-device names an output but --no-sound plays none; give one of them")
        if self.recheck and self.programme_session is not None:
            raise ConfigError("give --session N (a training session) or --recheck, not both")
        if self.sim_days_later is not None:
            if not self.simulate:
                raise ConfigError("--sim-days-later is for the simulated participant: use it with "
                                  "--simulate")
            if not (math.isfinite(self.sim_days_later) and 0 <= self.sim_days_later <= 3650):
                raise ConfigError(f"--sim-days-later: expected 0-3650 days, got {self.sim_days_later!r}")


@dataclass
class RunResult:
    """What a run produced."""

    protocol: Protocol
    records: list[StageRecord]
    end_reason: str
    session_file: Path | None
    lab_id: str
    log: list[tuple[float, str]]
    published: list[Action]
    baseline: dict[str, float]
    role_events: list[str]
    outcome: Outcome | None = None
    recording: Recording | None = None
    programme: ProgrammeSetup | None = None
    programme_state: ProgrammeState | None = None


def prepare(options: RunOptions) -> Protocol:
    """Load and validate the protocol for this run (nothing is started); ConfigError if invalid."""
    return prepare_session(options)[0]


def prepare_session(options: RunOptions) -> tuple[Protocol, ProgrammeSetup | None]:
    """The protocol as this run runs it and its place in the programme (read from the state file).

    Nothing is started or written; ConfigError for an invalid protocol or programme state.
    """
    file_protocol = load_protocol(options.protocol_path)
    setup = programme.setup(file_protocol, participant_id=options.participant_id,
                            folder=Path(options.out_dir), session=options.programme_session,
                            recheck=options.recheck)
    protocol = setup.protocol if setup is not None else file_protocol.for_session(
        options.programme_session)
    return _with_speed(protocol, options), setup


def _with_speed(protocol: Protocol, options: RunOptions) -> Protocol:
    if options.speed_m_s is not None:
        if options.speed_m_s > protocol.safety.max_speed_m_s:
            raise ConfigError(f"--speed {options.speed_m_s:g} m/s exceeds the protocol's "
                              f"safety.max_speed_m_s {protocol.safety.max_speed_m_s:g}")
        stages = [s.model_copy(update={"speed_m_s": None}) if getattr(s, "speed_m_s", None) else s
                  for s in protocol.stages]
        protocol = protocol.model_copy(update={"speed_m_s": options.speed_m_s, "stages": stages})
    return protocol


def body_mass_kg(protocol: Protocol, options: RunOptions) -> float:
    """Body mass for load normalisation: --mass-kg, the protocol, or the simulated participant's."""
    if options.mass_kg is not None:
        return float(options.mass_kg)
    if protocol.participant.body_mass_kg is not None:
        return float(protocol.participant.body_mass_kg)
    if options.simulate:
        return float(protocol.simulation.body_mass_kg)
    raise ConfigError("body mass unknown: give --mass-kg or participant.body_mass_kg in the "
                      "protocol (the processor normalises forces by body weight from the start)")


def given_mass_kg(protocol: Protocol, options: RunOptions) -> float | None:
    """The mass the weigh-in is checked against: --mass-kg or the protocol's (None: neither)."""
    if options.mass_kg is not None:
        return float(options.mass_kg)
    mass = protocol.participant.body_mass_kg
    return None if mass is None else float(mass)


@dataclass(frozen=True)
class LabStreams:
    """The source_ids of a run's streams: plates by belt, IMUs by side, treadmill, others, steps."""

    plates: dict[str, str]
    imus: dict[str, str]
    treadmill: str | None
    extra: tuple[str, ...]  # shown and recorded, not processed (camera, the simulator's plan)
    steps: str
    beats: str | None = None  # the audio metronome's clicks (None: no metronome role)


@dataclass(frozen=True)
class Plan:
    """The processes and stream ids of one run (nothing started)."""

    lab_id: str
    roles: tuple[RoleSpec, ...]
    streams: LabStreams
    session: SessionSettings
    session_file: Path | None


# A GUI for the run: given the protocol and the plan, the role that shows it (the CLI hands in
# labsuite.feedback's; the composition root never imports Qt code itself).
GuiRole = Callable[[Protocol, Plan], RoleSpec]


def plan(protocol: Protocol, options: RunOptions, *, gui: GuiRole | None = None) -> Plan:
    """Decide the roles (drivers, processor, recorder, the optional GUI) and the stream ids."""
    mass = body_mass_kg(protocol, options)
    if options.simulate:
        lab_id, device_roles, streams, layout, mode = _simulated_lab(protocol, options, mass)
    else:
        lab_id, device_roles, streams, layout, mode = _lab_file(protocol, options)
    roles = [*device_roles, RoleSpec("processor", run_processor, {
        "plates": streams.plates, "imus": streams.imus, "treadmill": streams.treadmill,
        "steps_source_id": streams.steps, "layout": layout, "mode": mode, "mass_kg": mass})]
    metronome = metronome_role(protocol, options, lab_id)
    if metronome is not None:
        roles.append(metronome)
        streams = replace(streams, beats=metronome.kwargs["settings"].beats_source_id)
    session_file = None
    if options.record:
        session_file = _session_file(options)
        treadmill_events = ids.treadmill_events_source_id(streams.treadmill) if streams.treadmill else None
        sources = (*streams.plates.values(), *streams.imus.values(), streams.treadmill, treadmill_events,
                   *streams.extra, streams.steps, ids.markers_source_id(lab_id),
                   ids.commands_source_id(lab_id), streams.beats)
        rec = RecorderSettings(
            participant_id=options.participant_id, path=session_file,
            source_ids=tuple(s for s in sources if s), wait_s=2.0, mass_kg=mass,
            protocol_path=Path(options.protocol_path), protocol_text=Path(options.protocol_path).read_text(),
            session_number=options.programme_session,
            expected_duration_s=max(60.0, sum(s.duration_s for s in protocol.stages) * 1.5))
        # restarted at once: a new start continues the session in its next part file
        roles.append(RoleSpec(RECORDER, run_recorder, {"settings": rec}, restart=True,
                              restart_delay_s=0.0, signals_ready=True))
    session = SessionSettings(lab_id=lab_id, participant_id=options.participant_id,
                              steps_source_id=streams.steps,
                              force_source_ids=tuple(streams.plates.values()),
                              treadmill_source_id=streams.treadmill,
                              auto_start="--auto-start" if options.auto_start else None,
                              mass_kg=given_mass_kg(protocol, options),
                              beats_source_id=streams.beats,
                              programme_session=options.programme_session,
                              connect_timeout_s=options.connect_timeout_s, settle_s=options.settle_s,
                              auto_resume=options.auto_resume)
    the_plan = Plan(lab_id, tuple(roles), streams, session, session_file)
    if gui is not None:
        the_plan = replace(the_plan, roles=(*the_plan.roles, gui(protocol, the_plan)))
    return the_plan


def metronome_role(protocol: Protocol, options: RunOptions, lab_id: str) -> RoleSpec | None:
    """The audio metronome role when the protocol has a metronome cue and the sound is on.

    It follows the session's metronome markers (tempo and click) and publishes one beat marker
    per click at its DAC time; restarted like a driver (the session says the tempo again every
    second, so a new process picks the beat up).
    """
    cues = protocol.metronome_cues
    if not cues or not options.sound:
        return None
    settings = MetronomeRoleSettings(
        session_markers_source_id=ids.markers_source_id(lab_id),
        beats_source_id=ids.beats_source_id(lab_id), name=f"labsuite-metronome-{lab_id}",
        output=OutputSettings(device=options.audio_device), click=cues[0].click())
    return RoleSpec("metronome", run_metronome, {"settings": settings})


def check_sound(output: OutputSettings, timeout_s: float = 30.0) -> DeviceInfo:
    """Open ``output`` once in a child process and close it: the device that will play, or DeviceError.

    In a child (spawned, as the roles are) so this process never loads PortAudio, whose threads
    a session process has no use for; the DeviceError names the device tried. A child that hangs
    in the sound stack is killed after ``timeout_s``.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=probe_output_to, args=(send, output), name="sound-check", daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(timeout_s):
            raise DeviceError(f"audio output: {output.device_label} did not open within {timeout_s:g} s")
        try:
            kind, value = receive.recv()
        except EOFError:
            child.join(5.0)
            raise DeviceError(f"audio output: the check of {output.device_label} crashed "
                              f"(exit code {child.exitcode})") from None
        if kind != "ok":
            raise DeviceError(value)
        return value
    finally:
        receive.close()
        child.join(5.0)
        if child.is_alive():
            child.kill()
            child.join(5.0)


def _simulated_lab(protocol: Protocol, options: RunOptions, mass: float
                   ) -> tuple[str, list[RoleSpec], LabStreams, str, str]:
    from labsuite.drivers.sim import gait
    from labsuite.drivers.sim.lab import SimLabSettings, gait_plan_spec, sim_lab_roles

    lab_id = options.lab_id or f"run-{uuid.uuid4().hex[:8]}"
    sim = protocol.simulation
    memory_file, habit = _sim_memory(protocol, options)
    learn: dict[str, Any] = {"habit_spm": habit, "learning_per_step": sim.learning.per_step,
                             "fatigue_cadence_spm_per_min": sim.fatigue.cadence_spm_per_min,
                             "fatigue_impact_pct_per_min": sim.fatigue.impact_percent_per_min}
    participant = gait.ParticipantSettings(
        mass_kg=mass, mode=sim.mode, strike=sim.strike, single_belt=sim.single_belt,
        preferred_cadence_spm=sim.preferred_cadence_spm,
        speed_m_s=protocol.speed_m_s or protocol.stage_speed_m_s(_first_moving(protocol)),
        **{**learn, **options.sim_overrides})
    lab = SimLabSettings(lab_id=lab_id, participant=participant, initial_speed_m_s=0.0,
                         memory_file=memory_file)
    belts = ("single",) if sim.single_belt else ("left", "right")
    streams = LabStreams(plates={b: lab.source_id(f"fp-{b}") for b in belts},
                         imus={s: lab.source_id(f"imu-{s}") for s in ("left", "right")},
                         treadmill=lab.source_id("treadmill"),
                         extra=(gait_plan_spec(lab).source_id, lab.source_id("camera")),
                         steps=ids.steps_source_id(lab_id))
    return lab_id, sim_lab_roles(lab), streams, ("single" if sim.single_belt else "split"), sim.mode


def _sim_memory(protocol: Protocol, options: RunOptions) -> tuple[str | None, float]:
    """The simulated participant's memory file (when recording) and the habit it starts with.

    The habit saved at the end of the last simulated session, faded by the protocol's
    ``simulation.learning`` over ``--sim-days-later`` days (default: the real time since).
    """
    import time as _time

    from labsuite.drivers.sim import learning

    if not options.record:
        return None, 0.0
    path = learning.memory_path(options.out_dir, options.participant_id)
    memory = learning.load_memory(path)
    if memory is None:
        return str(path), 0.0
    days = options.sim_days_later if options.sim_days_later is not None else max(
        0.0, (_time.time() - memory.saved_epoch_s) / 86400.0)
    rules = protocol.simulation.learning
    return str(path), learning.carried_habit(memory.habit_spm, days,
                                             kept_between_sessions=rules.kept_between_sessions,
                                             half_life_days=rules.half_life_days)


def _lab_file(protocol: Protocol, options: RunOptions) -> tuple[str, list[RoleSpec], LabStreams, str, str]:
    from labsuite.labconfig import load_lab_config

    assert options.lab_file is not None
    cfg = load_lab_config(options.lab_file)
    lab_id = options.lab_id or cfg.lab_id
    if lab_id != cfg.lab_id:
        raise ConfigError(f"--lab-id {lab_id!r} differs from the lab file's lab_id {cfg.lab_id!r}")
    plates: dict[str, str] = {}
    imus: dict[str, str] = {}
    treadmill, extra = None, []
    for name in cfg.device_names:
        dev = cfg.device(name)
        if hasattr(dev, "belt"):
            plates[dev.belt] = cfg.source_id(name)
        elif getattr(dev, "kind", "") == "ximu3":
            imus[dev.side] = cfg.source_id(name)
        elif getattr(dev, "kind", "") == "bertec_treadmill":
            treadmill = cfg.source_id(name)
        else:
            extra.append(cfg.source_id(name))
    if not plates:
        raise ConfigError(f"{options.lab_file}: the lab has no force plate; the session needs one "
                          "(force watchdog, steps)")
    if treadmill is None:
        raise ConfigError(f"{options.lab_file}: the lab has no treadmill device to command")
    streams = LabStreams(plates, imus, treadmill, tuple(extra), ids.steps_source_id(lab_id))
    layout = "single" if "single" in plates else "split"
    return lab_id, cfg.roles(session_dir=options.out_dir), streams, layout, protocol.simulation.mode


def _session_file(options: RunOptions) -> Path:
    return Path(options.out_dir) / session_file_name(options.participant_id, options.programme_session)


def _first_moving(protocol: Protocol) -> int:
    for i in range(len(protocol.stages)):
        if protocol.stage_speed_m_s(i) > 0:
            return i
    return 0


def run_protocol(options: RunOptions, *, gui: GuiRole | None = None,
                 on_action: Callable[[Action], None] | None = None,
                 on_status: Callable[[str], None] | None = None,
                 on_session: Callable[[Session], None] | None = None,
                 supervisor_hook: Callable[[Any], None] | None = None,
                 recorder_hook: Callable[[Any], None] | None = None) -> RunResult:
    """Validate, start every role, run the protocol to its end, stop everything; return the result.

    ``gui`` adds the role that shows the run (``labsuite run --gui`` hands in the feedback
    windows'); ``on_session(session)`` is called once the session is open (for keys and pain
    answers); ``supervisor_hook(supervisor)`` once the roles run (tests use it to kill a driver),
    ``recorder_hook(supervisor)`` once the recorder's supervisor runs. ``CouldNotStart`` when the
    session never started; otherwise :attr:`RunResult.outcome` says how it ended (and the
    session's files say the same).
    """
    from labsuite.lslconfig import use_machine_scope

    if options.simulate:
        use_machine_scope()
    protocol, prog_setup = prepare_session(options)
    the_plan = plan(protocol, options, gui=gui)
    status = on_status or (lambda text: log.info("%s", text))
    if the_plan.session_file is not None:
        try:
            Path(options.out_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--out {options.out_dir}: cannot create the folder: {exc}") from None
    metronome = next((r for r in the_plan.roles if r.name == "metronome"), None)
    if metronome is not None:
        output = metronome.kwargs["settings"].output
        try:
            dev = check_sound(output)
        except DeviceError as exc:
            text = str(exc)
            raise DeviceError(f"{text}{'' if text.endswith(('.', '?')) else '.'} The protocol has a "
                              "metronome cue: connect a working sound "
                              "output (check it with `labsuite audio test`), name it with --audio-device, "
                              "or give --no-sound to run with the session's silent timer beats") from None
        status(f"sound: clicks on {dev.name!r} ({dev.host_api}, {dev.sample_rate_hz:g} Hz, "
               f"reported output latency {1e3 * dev.output_latency_s:.1f} ms)")
    elif protocol.metronome_cues:
        status("sound: off (--no-sound): no click is played; the beats in the file are the "
               "session's timer (clock 'timer')")
    events: list[str] = []

    def on_role(role: str, text: str) -> None:
        events.append(f"{role}: {text}")
        status(f"{role}: {text}")

    session = Session(protocol, the_plan.session, on_action=on_action,
                      context=prog_setup.context if prog_setup is not None else None)
    watch = RoleWatch(session, session_file=the_plan.session_file)
    # The recorder starts last, once every stream it records is visible: streams that appear
    # after it started only get its few spare slots.
    supervisor = Supervisor(on_event=on_role, on_state=watch.on_state)
    recorder = Supervisor(on_event=on_role, on_state=watch.on_state)
    watch.supervisors = [supervisor, recorder]
    for role in the_plan.roles:
        (recorder if role.name == RECORDER else supervisor).add_role(role)
    supervisor.start()
    started = False
    try:
        session.open()
        if on_session is not None:
            on_session(session)
        if supervisor_hook is not None:
            supervisor_hook(supervisor)
        status("waiting for the treadmill, force plates and processor ...")
        missing = session.wait_ready()
        if missing:
            raise CouldNotStart(not_ready_message(options.connect_timeout_s, missing, session.log))
        if the_plan.session_file is not None:
            recorder.start()
            if recorder_hook is not None:
                recorder_hook(recorder)
            _wait_for_recorder(the_plan.session_file, options.connect_timeout_s, recorder)
            # connected readers may still be subscribing; markers sent before that are lost
            time.sleep(options.settle_s)
        status(f"session {the_plan.lab_id}: starting {protocol.name!r}")
        session.start()
        started = True
        while not session.wait(0.1):
            watch.tick(recorder)
        # keep recording while the belt ramps down, then a little more for the last samples;
        # a recorder restarting now gets its 2 s to record the end
        import pylsl

        deadline = time.monotonic() + 30.0
        while ((session.machine.belt_speed_m_s(pylsl.local_clock()) > 0 or watch.recorder_down)
               and time.monotonic() < deadline):
            watch.tick(recorder)
            time.sleep(0.1)
        time.sleep(1.5)
    finally:
        watch.stopping()
        # nested so that an interrupt during one step (a second Ctrl-C) still stops the rest:
        # role processes are not daemons and would otherwise outlive this one
        try:
            session.close()
        finally:
            try:
                recorder.stop(timeout_s=30.0)
            finally:
                supervisor.stop(timeout_s=15.0)
    m = session.machine
    new_state = None
    if prog_setup is not None and the_plan.session_file is not None and m.state != "idle":
        # the session ran and was recorded: it counts in the programme (an unrecorded one does not)
        new_state = programme.record(prog_setup, records=list(m.records), view=m.view,
                                     end_reason=m.end_reason, session_file=the_plan.session_file)
        status(f"programme state: {prog_setup.path}")
    recording = None
    if the_plan.session_file is not None:
        recording = read_recording(the_plan.session_file, recorder_gave_up=watch.recorder_gave_up)
    outcome = classify(m.end_reason, len(m.view.safety_events), recording) if started else \
        Outcome(COULD_NOT_START, "the session did not start")
    if the_plan.session_file is not None:
        write_outcome(the_plan.session_file, outcome)
    return RunResult(protocol, list(m.records), m.end_reason, the_plan.session_file, the_plan.lab_id,
                     list(session.log), list(session.published),
                     {"cadence_spm": m.baseline_cadence_spm, "valr_bw_per_s": m.baseline_valr_bw_per_s,
                      "tibial_peak_g": m.baseline_tibial_g, "body_mass_kg": m.body_mass_kg}, events,
                     outcome, recording, prog_setup, new_state)


def not_ready_message(timeout_s: float, missing: list[str], events: list[tuple[float, str]]) -> str:
    """Why the session could not start: the streams not found, and where LSL looked for them."""
    from labsuite.lslconfig import port_range

    ports = port_range()
    recent = "; ".join(text for _, text in events[-5:]) or "no stream events"
    return (f"not ready after {timeout_s:g} s: {'; '.join(missing)} (last events: {recent}). "
            f"Streams are looked for with the LSL configuration {ports.config}, which asks ports "
            f"{ports.base}-{ports.base + ports.size - 1}: a device that runs but is not found may "
            "have an outlet outside that range (other LSL programs holding the ports; `labsuite "
            "streams` lists what is visible)")


class CouldNotStart(DeviceError):
    """The session never started: devices, processor or recorder did not come up."""


def _wait_for_recorder(path: Path, timeout_s: float, supervisor: Any) -> None:
    """Wait until the recorder created the session file and connected to every stream."""
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and supervisor.ready(RECORDER)):
        if time.monotonic() > deadline:
            raise CouldNotStart(f"the recorder did not start recording {path} within {timeout_s:g} s")
        role = supervisor.roles.get(RECORDER)
        if role is not None and role.exits:
            raise CouldNotStart(f"the recorder stopped (exit code {role.exits[-1]}) before recording "
                                f"{path}; nothing was started")
        time.sleep(0.05)
