"""``labsuite simulate``: run the simulated gait lab (one process per device) with a live view.

Starts the virtual participant and its devices under the Supervisor, reads every stream back with
the lab-side acquisition and redraws a table of rates, gaps and lag once a second, until Ctrl-C or
the end of ``--duration``. LSL discovery stays on this machine unless LSLAPICFG is already set.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

COMMAND = "simulate"
HELP = "Run the simulated instrumented-treadmill lab over LSL with a live view of its streams."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``labsuite simulate``."""
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop after S seconds (default: run until Ctrl-C)")
    parser.add_argument("--mode", choices=("run", "walk"), default="run")
    parser.add_argument("--speed", type=float, default=None, metavar="M_S",
                        help="belt speed in m/s (default 3.0 running, 1.3 walking)")
    parser.add_argument("--cadence", type=float, default=None, metavar="SPM",
                        help="preferred cadence in steps/min (default: typical for mode and speed)")
    parser.add_argument("--strike", choices=("rearfoot", "forefoot"), default="rearfoot")
    parser.add_argument("--mass-kg", type=float, default=70.0, metavar="KG")
    parser.add_argument("--plate-rate-hz", type=float, default=1000.0, metavar="HZ",
                        help="force-plate rate: 500, 1000 or 2000 Hz (default 1000)")
    parser.add_argument("--single-belt", action="store_true",
                        help="one plate under both feet instead of a split-belt treadmill")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the participant")
    parser.add_argument("--lab-id", default="default",
                        help="suffix of every source_id (run two labs side by side with two ids)")
    parser.add_argument("--no-view", action="store_true",
                        help="do not read the streams back; just publish them")


def run(args: argparse.Namespace) -> int:
    """Start the lab, show the view, stop everything cleanly."""
    from labsuite.lslconfig import use_machine_scope

    cfg = use_machine_scope()
    from labsuite.drivers.sim import gait
    from labsuite.drivers.sim.lab import SimLabSettings, sim_lab_roles
    from labsuite.errors import ConfigError
    from labsuite.processes import Supervisor

    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration: expected seconds > 0, got {args.duration}")
    participant = gait.ParticipantSettings(
        mass_kg=args.mass_kg, mode=args.mode, speed_m_s=args.speed,
        preferred_cadence_spm=args.cadence, strike=args.strike, single_belt=args.single_belt,
        seed=args.seed)
    settings = SimLabSettings(lab_id=args.lab_id, participant=participant,
                              plate_rate_hz=args.plate_rate_hz, imu_rate_hz=1000.0)
    events: list[str] = []
    supervisor = Supervisor(on_event=lambda role, text: events.append(f"{role}: {text}"))
    for role in sim_lab_roles(settings):
        supervisor.add_role(role)

    # SIGTERM (a service manager, `timeout`) stops as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(f"labsuite simulate: {args.mode}, {participant.initial_speed_m_s:.2f} m/s, "
          f"{participant.mass_kg:g} kg, {args.strike}, "
          f"{'single belt' if args.single_belt else 'split belt'}, plates at {args.plate_rate_hz:g} Hz"
          f" (LSL config {cfg})", flush=True)
    supervisor.start()
    try:
        if args.no_view:
            _wait(args.duration)
        else:
            _view(settings, args.duration, events)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        codes = supervisor.stop()
    bad = {k: v for k, v in codes.items() if v not in (0, None)}
    print("all device processes stopped" + (f"; exit codes {bad}" if bad else " cleanly"))
    return 0 if not bad else 1


def _wait(duration_s: float | None) -> None:
    deadline = None if duration_s is None else time.monotonic() + duration_s
    while deadline is None or time.monotonic() < deadline:
        time.sleep(0.2)


def _view(settings, duration_s: float | None, events: list[str]) -> None:
    from labsuite.cli.streams import format_table
    from labsuite.drivers.sim.lab import gait_plan_spec
    from labsuite.streams.acquisition import Acquisition, StreamQuery, StreamReader

    sources = [spec.source_id for specs in settings.stream_specs().values() for spec in specs]
    sources.append(gait_plan_spec(settings).source_id)
    readers = [StreamReader(StreamQuery(source_id=s), buffer_s=5.0) for s in sources]
    tty = sys.stdout.isatty()
    start = time.monotonic()
    deadline = None if duration_s is None else start + duration_s
    shown = 0
    with Acquisition(readers):
        while deadline is None or time.monotonic() < deadline:
            time.sleep(1.0)
            rows = [(r.spec, r.stats()) for r in readers if r.spec is not None]
            elapsed = time.monotonic() - start
            header = f"t = {elapsed:5.1f} s" + (f" of {duration_s:g} s" if duration_s else "")
            table = format_table(rows) if rows else "(waiting for streams)"
            new_events = events[shown:]
            shown = len(events)
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J" + header + "\n" + table + "\n")
                for line in events[-5:]:
                    sys.stdout.write(f"  {line}\n")
                sys.stdout.flush()
            elif int(elapsed) % 5 == 0 or (deadline is not None and time.monotonic() + 1 >= deadline):
                print(header + "\n" + table, flush=True)
                for line in new_events:
                    print(f"  {line}", flush=True)
