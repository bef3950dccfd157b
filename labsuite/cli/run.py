"""``labsuite run PROTOCOL.yaml --participant ID``: run a session end to end from the terminal.

Validates the protocol, starts drivers (simulated with ``--simulate``), processor and recorder as
processes, runs the stage machine here, shows progress per stage and prints a per-stage summary.
Keys: e or space = EMERGENCY STOP, p pause, r resume, s skip stage, q abort, c check-in, 0-10 Enter = pain.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import sys
import threading
import time
from pathlib import Path
from typing import Any

from labsuite import markers as mk

COMMAND = "run"
HELP = "run a protocol session end to end: drivers, processor, recorder and the stage machine"

KEYS_HELP = ("keys: [e]/[space] EMERGENCY STOP  [g]o: start the belt  [p]ause  [r]esume  [s]kip stage  "
             "[q] abort  "
             "[c]heck-in  pain: digits then Enter")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("protocol", metavar="PROTOCOL.yaml", help="protocol file")
    parser.add_argument("--participant", required=True, metavar="ID",
                        help="pseudonymous participant id (1-32 letters, digits, - or _)")
    parser.add_argument("--simulate", action="store_true", help="use the built-in simulated lab")
    parser.add_argument("--lab", type=Path, default=None, metavar="LAB.yaml",
                        help="the lab file naming the real devices (instead of --simulate)")
    display = parser.add_mutually_exclusive_group()
    display.add_argument("--headless", action="store_true",
                         help="terminal only: progress per stage and a summary (the default)")
    display.add_argument("--gui", action="store_true",
                         help="also open the operator console and the participant display")
    parser.add_argument("--out", type=Path, default=Path("sessions"), metavar="DIR",
                        help="folder for the session file (default ./sessions)")
    parser.add_argument("--session", type=int, default=None, metavar="N",
                        help="which session of the protocol's programme this is (1-based)")
    parser.add_argument("--recheck", action="store_true",
                        help="run the programme's next recheck (no cues, short) instead of a "
                             "training session")
    parser.add_argument("--sim-days-later", type=float, default=None, metavar="D",
                        help="with --simulate: the virtual participant comes back D days after its "
                             "last session (default: the real time since)")
    parser.add_argument("--mass-kg", type=float, default=None, metavar="KG", help="body mass")
    parser.add_argument("--speed", type=float, default=None, metavar="M_S",
                        help="belt speed for every moving stage (overrides the file)")
    parser.add_argument("--lab-id", default=None,
                        help="id in every session stream's source_id (default: random with "
                             "--simulate, the lab file's with --lab)")
    parser.add_argument("--pain-script", default=None, metavar="LIST|FILE",
                        help="answers to the pain check-ins in order, e.g. '0,0,1' (the last one "
                             "repeats), or a file with one number per line: for unattended runs")
    parser.add_argument("--no-sound", action="store_true",
                        help="run a protocol with a metronome cue without sound: no click, the "
                             "session's timer beats instead (flagged in the file)")
    parser.add_argument("--audio-device", default=None, metavar="NAME|INDEX",
                        help="the sound output for the metronome (default: the system default; "
                             "see `labsuite audio devices`)")
    parser.add_argument("--auto-resume", action="store_true",
                        help="after a lost device is back, resume without the operator's key "
                             "(scripted studies; recorded in the file's session_start marker)")
    parser.add_argument("--no-record", action="store_true", help="do not write a session file")
    parser.add_argument("--auto-start", action="store_true",
                        help="start the belt without the operator's Start (key g, the console's "
                             "Start button), for scripted studies; recorded in the session file")
    parser.add_argument("--connect-timeout", type=float, default=60.0, metavar="S",
                        help="how long to wait for devices and processor (default 60 s)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines, summary only")


def parse_pain_script(text: str | None) -> list[int] | None:
    """Parse ``--pain-script``: '0,1,2' or a file of numbers; ConfigError naming the bad item."""
    from labsuite.errors import ConfigError

    if text is None:
        return None
    source = text
    path = Path(text)
    if path.is_file():
        source = path.read_text()
        where = f"--pain-script {path}"
    else:
        where = "--pain-script"
    items = [s for s in source.replace("\n", ",").replace(" ", "").split(",") if s]
    if not items:
        raise ConfigError(f"{where}: expected pain ratings 0-10 separated by commas, got nothing")
    out = []
    for k, item in enumerate(items):
        if not item.isdigit() or not 0 <= int(item) <= 10:
            raise ConfigError(f"{where}: item {k + 1} {item!r}: expected an integer 0-10")
        out.append(int(item))
    return out


class Console:
    """The headless operator console: progress, prompts, pain answers and keys."""

    def __init__(self, pain_script: list[int] | None, quiet: bool, out: Any = None) -> None:
        self.pain_script = pain_script
        self.quiet = quiet
        self.out = out or sys.stdout
        self.session: Any = None
        self._pain_i = 0
        self._buffer = ""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._tty_state: Any = None
        self.emergency_stops = 0

    def say(self, text: str) -> None:
        """Print one line (with a newline, flushed)."""
        print(text, file=self.out, flush=True)

    # ---- wiring -------------------------------------------------------------------------------
    def attach(self, session: Any) -> None:
        """Start reading keys and printing progress for ``session``."""
        self.session = session
        keys = threading.Thread(target=self._keys, name="keys", daemon=True)
        self._threads.append(keys)
        keys.start()
        if not self.quiet:
            prog = threading.Thread(target=self._progress, name="progress", daemon=True)
            self._threads.append(prog)
            prog.start()

    def close(self) -> None:
        """Stop the key and progress threads; restore the terminal."""
        self._stop.set()
        for t in self._threads:
            t.join(2.0)
        self._restore_tty()

    # ---- actions from the session ---------------------------------------------------------------
    def on_action(self, action: Any) -> None:
        """Print what matters to the operator; answer check-ins from the pain script."""
        m = action.marker  # None for a treadmill command
        if m is None or m.FREQUENT:
            return
        if isinstance(m, mk.StageStart):
            extra = (f", target {m.target_cadence_spm:.1f} spm ({m.band_low_spm:.1f}-{m.band_high_spm:.1f})"
                     if math.isfinite(m.target_cadence_spm) else "")
            self.say(f"== stage {m.index + 1}: {m.name} ({m.kind}, {m.duration_s:g} s, "
                     f"belt {m.belt_speed_m_s:g} m/s{extra})")
            if m.instructions:
                self.say(f"   say: {m.instructions}")
        elif isinstance(m, mk.StageEnd):
            self.say(f"-- {m.record.name} ended ({m.record.end_reason})")
        elif isinstance(m, mk.Baseline):
            if m.ok:
                self.say(f"   baseline: {m.cadence_spm:.1f} spm, VALR {_fmt(m.valr_bw_per_s)} BW/s, "
                         f"tibial {_fmt(m.tibial_peak_g)} g over {m.n_steps} steps")
            else:
                self.say(f"   baseline FAILED: {m.detail}")
        elif isinstance(m, mk.ProgrammeDecision):
            base = (f"; programme baseline {m.baseline_cadence_spm:.1f} spm"
                    if math.isfinite(m.baseline_cadence_spm) else "; programme baseline: this session's")
            self.say(f"== programme ({m.kind}, {m.sessions_done} sessions done): {m.action}: "
                     f"{m.reason}{base}")
        elif isinstance(m, mk.RecheckResult):
            flag = "REGRESSION" if m.regression else "no regression"
            self.say(f"   recheck {m.number}: {flag}: {m.reason}")
        elif isinstance(m, mk.BodyWeight):
            self.say(f"   weigh-in: {m.mass_kg:.1f} kg")
        elif isinstance(m, mk.CheckinRequest):
            self._checkin(m.id, m.reason)
        elif isinstance(m, mk.Checkin):
            self.say(f"   pain {m.pain}/10 recorded (rule: {m.action})")
        elif isinstance(m, mk.AwaitingStart):
            self.say(f"!! the belt waits for you: press g to start it ({m.stage}, {m.speed_m_s:g} m/s) "
                     "or q to end the session")
        elif isinstance(m, mk.StartAuthorised):
            self.say(f"   belt start: {'automatic, ' if m.auto else ''}by {m.source}")
        elif isinstance(m, mk.BeltFault):
            self.say(f"!! BELT FAULT ({m.reason}): {m.detail}")
        elif isinstance(m, mk.DecisionRequired) and m.reason == "belt_fault":
            self.say("!! PAUSED: the belt left its commanded speed; check the participant and the "
                     "treadmill, then press r to resume or q to end the session")
        elif isinstance(m, mk.DecisionRequired) and m.reason == "device_back":
            self.say("!! every lost device is back: check the participant, then press r to resume "
                     "or q to end the session")
        elif isinstance(m, mk.DecisionRequired):
            why = f"pain {m.pain}" if m.reason == "pain" else m.reason
            self.say(f"!! PAUSED for {why}: press r to resume"
                     + (", s to skip the stage" if "skip" in m.options else "")
                     + " or q to end the session")
        elif isinstance(m, mk.Drift):
            self.say(f"!! DRIFT in {m.stage}: {m.metric} {m.change_pct:+.1f} % (last vs first "
                     f"window; limit {m.limit_pct:g} %): {'stage ended' if m.action == 'end' else 'paused'}")
        elif isinstance(m, mk.DeviceBack):
            self.say(f"   {m.device} is back after {m.down_s:.1f} s")
        elif isinstance(m, mk.RecordingGap):
            self.say(f"!! the recorder was restarted: recording again in {m.file} after {m.gap_s:.2f} s "
                     "without recording")
        elif isinstance(m, (mk.Paused, mk.Resumed, mk.Operator)):
            self.say(f"   {m.event}: {json.dumps(m.fields())}")
        elif isinstance(m, mk.SafetyStop) and m.device:
            self.say(f"!! {m.event.upper()} ({m.reason}): {m.detail}: belt stopped, session PAUSED "
                     "until it is back")
        elif isinstance(m, mk.SafetyStop):
            self.say(f"!! {m.event.upper()}: {m.detail or m.reason}")
        elif isinstance(m, mk.EmergencyStop):
            self.say(f"!! {m.event.upper()}: {m.source}")
        elif isinstance(m, mk.SessionEnd):
            # not yet the outcome: that waits for what the recorder left on disk
            self.say(f"== protocol ended: {_protocol_end(m.reason)}")

    def _checkin(self, checkin_id: int, reason: str) -> None:
        if self.pain_script is not None:
            pain = self.pain_script[min(self._pain_i, len(self.pain_script) - 1)]
            self._pain_i += 1
            self.say(f"?? check-in {checkin_id} ({reason}): pain {pain} (from --pain-script)")
            self.session.answer_pain(pain, checkin_id, source="pain-script")
        else:
            self.say(f"?? check-in {checkin_id} ({reason}): ask the participant for pain 0-10, "
                     "type it and press Enter")

    # ---- keys ---------------------------------------------------------------------------------
    def _keys(self) -> None:
        try:
            fd = sys.stdin.fileno()
        except (OSError, ValueError, AttributeError):
            return  # no terminal: operator commands come over LSL only
        if os.isatty(fd):
            import termios
            import tty

            self._tty_state = (fd, termios.tcgetattr(fd))
            tty.setcbreak(fd)
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            data = os.read(fd, 64)
            if not data:
                return  # end of input
            for ch in data.decode(errors="replace"):
                self.key(ch)

    def key(self, ch: str) -> None:
        """Act on one key (public so other front ends and tests can drive it)."""
        s = self.session
        if s is None:
            return
        if ch in ("e", "E", " ", "\x1b"):
            self.emergency_stops += 1
            s.emergency_stop(source="cli")
            self.say("!! EMERGENCY STOP sent")
        elif ch.isdigit():
            self._buffer += ch
        elif ch in ("\n", "\r"):
            if self._buffer:
                value, self._buffer = int(self._buffer), ""
                if 0 <= value <= 10:
                    s.answer_pain(value, source="cli")
                else:
                    self.say(f"   pain {value}? expected 0-10")
        elif ch == "g":
            s.start_belt(source="cli")
        elif ch == "p":
            s.pause(source="cli")
        elif ch == "r":
            s.resume(source="cli")
        elif ch == "s":
            s.skip(source="cli")
        elif ch == "q":
            s.abort(source="cli")
        elif ch == "c":
            s.request_checkin(source="cli")
        elif ch in ("\x7f", "\b"):
            self._buffer = self._buffer[:-1]

    def _restore_tty(self) -> None:
        if self._tty_state is not None:
            import termios

            fd, state = self._tty_state
            termios.tcsetattr(fd, termios.TCSADRAIN, state)
            self._tty_state = None

    # ---- progress -------------------------------------------------------------------------------
    def _progress(self) -> None:
        while not self._stop.wait(2.0):
            s = self.session
            if s is None or s.machine.state not in ("running", "paused"):
                continue
            self.say("   " + format_live(s.live()))


def _protocol_end(reason: str) -> str:
    """The stage machine's end reason in words that do not claim the session's outcome."""
    return "every stage ran" if reason == "completed" else reason


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def format_live(live: dict[str, Any]) -> str:
    """One progress line: stage, time left, cadence vs target, VALR vs baseline."""
    parts = [f"[{live['stage']}] {_fmt(live['time_left_s'], '.0f')} s left"]
    if live["state"] == "paused":
        parts[0] += f" PAUSED ({live['pause_reason']})"
    parts.append(f"{live['steps']} steps")
    parts.append(f"cadence {_fmt(live['cadence_spm'])} spm")
    if math.isfinite(live["target_spm"]):
        low, high = live["band_spm"]
        parts[-1] += f" (target {live['target_spm']:.1f}, band {low:.1f}-{high:.1f}, " \
                     f"{live['in_band_run']} in a row)"
    valr = live["valr_bw_per_s"]
    base = live["baseline_valr_bw_per_s"]
    parts.append(f"VALR {_fmt(valr)} BW/s" + (f" ({100 * valr / base:.0f} % of baseline)"
                                              if math.isfinite(valr) and math.isfinite(base) else ""))
    return " | ".join(parts)


def format_summary(records: list[Any], baseline: dict[str, float]) -> str:
    """The per-stage summary table printed at the end of a run."""
    head = (f"{'#':>2} {'stage':<16} {'kind':<14} {'time s':>7} {'end':<12} {'steps':>5} "
            f"{'cadence':>8} {'target':>7} {'in band':>8} {'VALR':>6} {'%base':>6} {'tibial g':>8}")
    lines = [head, "-" * len(head)]
    for r in records:
        s = json.loads(r.summary_json)
        in_band = s.get("in_band_fraction")
        lines.append(
            f"{r.index + 1:>2} {r.name:<16} {r.kind:<14} {r.end_s - r.start_s:>7.1f} {r.end_reason:<12} "
            f"{s.get('n_steps', 0):>5} {_fmt(s.get('cadence_spm')):>8} {_fmt(r.target_cadence_spm):>7} "
            f"{(_fmt(100 * in_band, '.0f') + ' %') if in_band is not None else '-':>8} "
            f"{_fmt(s.get('valr_bw_per_s')):>6} {_fmt(s.get('valr_percent_of_baseline'), '.0f'):>6} "
            f"{_fmt(s.get('tibial_peak_g')):>8}")
    lines.append(f"cadence = 60 / mean step time and VALR = mean over each stage's last 30 steps; "
                 f"baseline {_fmt(baseline.get('cadence_spm'))} spm, "
                 f"VALR {_fmt(baseline.get('valr_bw_per_s'))} BW/s")
    return "\n".join(lines)


def gui_role(protocol: Any, plan: Any) -> Any:
    """The operator console and participant display as a role of the run (``--gui``)."""
    from labsuite.feedback.app import gui_role as feedback_role

    s = plan.streams
    return feedback_role(protocol, lab_id=plan.lab_id, participant_id=plan.session.participant_id,
                         session_file=plan.session_file, plates=s.plates, imus=s.imus,
                         steps_source_id=s.steps, extra_source_ids=(s.treadmill, *s.extra),
                         beats_source_id=s.beats)


def execute(options: Any, *, pain_script: list[int] | None, quiet: bool, gui: bool = False,
            supervisor_hook: Any = None) -> int:
    """Run a session with the terminal console (and the windows with ``gui``); print the summary.

    Returns the outcome's exit code (labsuite.lab.outcome): 0 completed, 3 stopped by a protocol
    rule or the operator, 4 stopped for safety, 5 recording incomplete, 6 could not start.
    """
    from labsuite.lab import outcome as oc
    from labsuite.lab.run import CouldNotStart, prepare, run_protocol

    protocol = prepare(options)  # a bad file fails here, before any process starts
    console = Console(pain_script, quiet)
    console.say(f"labsuite run: {protocol.name!r} for participant {options.participant_id}"
                + (f", programme session {options.programme_session}" if options.programme_session else "")
                + (" on the simulated lab" if options.simulate else f" with lab {options.lab_file}"))
    console.say(KEYS_HELP)
    t0 = time.monotonic()
    try:
        result = run_protocol(options, gui=gui_role if gui else None, on_action=console.on_action,
                              on_status=(lambda text: None) if quiet else (lambda t: console.say(f"   {t}")),
                              on_session=console.attach, supervisor_hook=supervisor_hook)
    except CouldNotStart as exc:
        console.say(f"could not start: {exc}")
        console.say(f"outcome: {oc.COULD_NOT_START} (exit code {oc.EXIT_CODES[oc.COULD_NOT_START]})")
        return oc.EXIT_CODES[oc.COULD_NOT_START]
    finally:
        console.close()
    outcome = result.outcome
    assert outcome is not None
    console.say("")
    console.say(format_summary(result.records, result.baseline))
    rc = next((a.marker for a in reversed(result.published)
               if isinstance(a.marker, mk.RecheckResult)), None)
    if rc is not None:
        console.say(f"recheck {rc.number}: {'REGRESSION' if rc.regression else 'no regression'}: "
                    f"{rc.reason}")
    if result.programme is not None and result.programme_state is not None:
        console.say(f"programme state: {result.programme.path} "
                    f"({result.programme_state.sessions_done} training sessions, "
                    f"{result.programme_state.rechecks_done} rechecks done)")
    end = result.end_reason if outcome.name == oc.COMPLETED else _protocol_end(result.end_reason)
    console.say(f"session ended: {end} after {time.monotonic() - t0:.0f} s")
    if result.recording is not None:
        for line in oc.format_files(result.recording):
            console.say(line)
        console.say(f"session file: {result.session_file}")
    console.say(f"outcome: {outcome.name} (exit code {outcome.code}): {outcome.detail}")
    return outcome.code


def audio_device(text: str | None) -> str | int | None:
    """``--audio-device``: a PortAudio index when it is a number, else (part of) a device name."""
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text


def run(args: argparse.Namespace) -> int:
    """Validate, then run the session; exit code: the outcome's (see :func:`execute`), 1 bad input."""
    from labsuite.lab.run import RunOptions

    options = RunOptions(
        protocol_path=Path(args.protocol), participant_id=args.participant, simulate=args.simulate,
        out_dir=args.out, programme_session=args.session, lab_file=args.lab, lab_id=args.lab_id,
        mass_kg=args.mass_kg, speed_m_s=args.speed, record=not args.no_record,
        auto_start=args.auto_start,
        sound=not args.no_sound, audio_device=audio_device(args.audio_device),
        connect_timeout_s=args.connect_timeout, auto_resume=args.auto_resume, recheck=args.recheck,
        sim_days_later=args.sim_days_later)
    return execute(options, pain_script=parse_pain_script(args.pain_script), quiet=args.quiet,
                   gui=args.gui)
