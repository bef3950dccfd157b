"""Inject a fault into every role of a real ``labsuite run`` and check the run told the truth.

For each role of ``labsuite run --simulate --headless`` (every simulated driver, the processor,
the recorder, and the session: the ``labsuite run`` process itself) and each fault (``kill``:
SIGKILL; ``freeze``: SIGSTOP, then SIGCONT ``--freeze-s`` later), start a short protocol, inject
the fault at a random moment of its moving stage, and read the session's files back. One row per
case: role, fault, time into the stage, session outcome, exit code, seconds missing from the file
(recording gaps), belt stopped after (s, measured speed from the treadmill stream; '-' when the
belt did not stop before the protocol's end), whether a safety event is recorded, and the belt
stops nobody recorded. The summary counts cases of exit 0 over an incomplete file and unrecorded
belt stops (both should be 0).

Run:  python scripts/fault_matrix.py                # every role x fault once (about 10 min)
      python scripts/fault_matrix.py --n 3 --roles recorder,sim-fp-left --faults kill
Runs ``--parallel`` cases at a time (default 2). LSL stays on this machine (machine scope).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("LSLAPICFG", str(REPO / "labsuite" / "data" / "lsl_local.cfg"))

STAGE_S = 14.0
PROTOCOL = f"""\
schema: labsuite-protocol/1
name: fault-matrix
speed_m_s: 2.5
safety: {{accel_m_s2: 1.5, stop_decel_m_s2: 3.0}}
checkins: {{at_start: false, at_stage_boundaries: false}}
simulation: {{mode: run, preferred_cadence_spm: 165}}
stages:
  - {{name: base, kind: baseline, duration_s: {STAGE_S:g}, measure_last_steps: 10}}
"""
DRIVERS = ("sim-participant", "sim-fp-left", "sim-fp-right", "sim-imu-left", "sim-imu-right",
           "sim-camera", "sim-treadmill")
ROLES = (*DRIVERS, "processor", "recorder", "session")
FAULTS = ("kill", "freeze")
STOPPED_M_S = 0.05
MOVING_M_S = 0.5


@dataclass
class Case:
    """One fault injection and what came of it."""

    role: str
    fault: str
    n: int
    at_s: float = float("nan")  # seconds into the moving stage
    t_fault: float = float("nan")  # LSL time of the injection
    outcome: str = ""
    code: int | None = None
    missing_s: float = float("nan")
    file_status: str = ""
    belt_stopped_after_s: float = float("nan")
    safety_recorded: bool = False
    unrecorded_stops: int = 0
    note: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def incomplete_file(self) -> bool:
        """The session's files miss data or were not closed cleanly."""
        return self.file_status != "complete" or not (self.missing_s == 0.0)


def run_case(case: Case, folder: Path, protocol: Path, freeze_s: float, seed: int) -> Case:
    """Start a run, inject the fault, wait for the end, read the files back."""
    import pylsl

    rng = random.Random(seed)
    participant = f"F{case.n:03d}"
    out_dir = folder / f"{case.role}-{case.fault}-{case.n}"
    err = (folder / f"{out_dir.name}.err").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "labsuite", "run", str(protocol), "--participant", participant,
         "--simulate", "--headless", "--out", str(out_dir), "--auto-start", "--auto-resume",
         "--connect-timeout", "120"],
        stdout=subprocess.PIPE, stderr=err, text=True, env=dict(os.environ), start_new_session=True)
    err.close()
    pids: dict[str, int] = {"session": proc.pid}
    started = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            case.lines.append(line)
            m = re.search(r"^\s+(\S+): started \(pid (\d+)\)", line)
            if m:
                pids[m[1]] = int(m[2])
            if line.startswith("== stage 1"):
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not started.wait(240):
            case.note = "the stage never started"
        else:
            case.at_s = rng.uniform(1.5, STAGE_S - 4.0)
            time.sleep(case.at_s)
            pid = pids.get(case.role)
            if pid is None:
                case.note = f"no pid for {case.role}"
            else:
                case.t_fault = pylsl.local_clock()
                if case.fault == "kill":
                    os.kill(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGSTOP)
                    time.sleep(freeze_s)
                    os.kill(pid, signal.SIGCONT)
        proc.wait(timeout=400)
    except subprocess.TimeoutExpired:
        case.note = "run did not end within 400 s; interrupted"
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    reader.join(10)
    if proc.stdout is not None:
        proc.stdout.close()
    case.code = proc.returncode
    (folder / f"{out_dir.name}.out").write_text("".join(case.lines))
    if case.role == "session" and case.fault == "kill":
        time.sleep(12.0)  # its roles record on for their orphan grace, then close the file
    text = "".join(case.lines)
    m = re.search(r"^outcome: (\S+)", text, re.M)
    case.outcome = m[1] if m else ("killed" if (case.code or 0) < 0 else "none printed")
    if case.outcome == "could_not_start" and not case.note:
        why = re.search(r"^could not start: (.{0,70})", text, re.M)
        case.note = why[1] if why else ""
    files = sorted(out_dir.glob(f"{participant}_*.h5"))
    first = [f for f in files if ".part" not in f.name]
    if not first:
        case.file_status = "no file"
        return case
    read_back(case, first[0])
    return case


def read_back(case: Case, path: Path) -> None:
    """Fill the file's columns: missing seconds, belt stops, safety events."""
    from labsuite.archive.reader import open_session
    from labsuite.errors import ArchiveError

    try:
        s = open_session(path, allow_damaged=True)
    except ArchiveError as exc:
        case.file_status, case.note = "unreadable", str(exc)[:80]
        return
    with s:
        case.file_status = s.status
        case.missing_s = s.missing_s
        if case.outcome in ("killed", "none printed") and s.outcome[0]:
            case.outcome = s.outcome[0]
        markers = []
        for t, text in zip(s.markers["time_s"], s.markers["text"], strict=True):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                continue
            markers.append((float(t), obj))
            for missed in obj.get("missed", []) if obj.get("event") == "recording_gap" else []:
                inner = json.loads(missed)
                markers.append((float(inner.get("t_s", t)), inner))
        safety = [(t, m) for t, m in markers if m.get("event") in ("safety_stop", "emergency_stop")]
        case.safety_recorded = any(t >= case.t_fault - 0.2 for t, _ in safety) if np.isfinite(
            case.t_fault) else bool(safety)
        ends = [t for t, m in markers if m.get("event") == "session_end"]
        end_reason = next((m.get("reason") for t, m in markers if m.get("event") == "session_end"), "")
        belts = s.streams_of_kind("treadmill")
        cmds = s.streams_of_kind("commands")
        if not belts:
            case.note = (case.note + " no treadmill stream").strip()
            return
        belt = belts[0]
        speed = np.asarray(belt.data, dtype=float)[:, 0]
        ts = belt.timestamps
        stop_cmds = []
        if cmds:
            for t, row in zip(cmds[0].timestamps, cmds[0].data, strict=False):
                try:
                    c = json.loads(str(row[0] if isinstance(row, (list, tuple, np.ndarray)) else row))
                except json.JSONDecodeError:
                    continue
                if c.get("cmd") in ("stop", "emergency_stop"):
                    stop_cmds.append(float(t))
        explained = stop_cmds + [t for t, m in markers if m.get("event") in (
            "safety_stop", "emergency_stop", "paused", "session_end")]
        # every stop of the belt (moving -> still): commanded or recorded, or nobody's
        moving = speed >= MOVING_M_S
        for i in np.flatnonzero(moving[:-1]):
            if not moving[i + 1] and speed[i + 1:].size:
                still = np.flatnonzero(speed[i + 1:] < STOPPED_M_S)
                if not still.size:
                    continue
                j = i + 1 + int(still[0])
                if moving[i + 1:j].any():
                    continue
                t_drop, t_still = float(ts[i]), float(ts[j])
                if not any(t_drop - 12.0 <= t <= t_still + 0.2 for t in explained):
                    case.unrecorded_stops += 1
                if np.isfinite(case.t_fault) and t_still >= case.t_fault and not np.isfinite(
                        case.belt_stopped_after_s):
                    natural = end_reason == "completed" and ends and t_drop >= ends[0] - 0.5
                    if not natural:
                        case.belt_stopped_after_s = t_still - case.t_fault


def fmt(v: float, spec: str = ".2f") -> str:
    """A number, or '-' when there is none."""
    return format(v, spec) if isinstance(v, float) and np.isfinite(v) else "-"


def main() -> int:
    """Run the matrix and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1, help="cases per role and fault (default 1)")
    parser.add_argument("--roles", default=",".join(ROLES), help="comma-separated roles")
    parser.add_argument("--faults", default=",".join(FAULTS), help="kill, freeze or both")
    parser.add_argument("--freeze-s", type=float, default=2.0, help="how long a frozen role stays stopped")
    parser.add_argument("--parallel", type=int, default=2, help="cases run at the same time")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", type=Path, default=None, help="keep the session files in this folder")
    args = parser.parse_args()
    roles = [r for r in args.roles.split(",") if r]
    faults = [f for f in args.faults.split(",") if f]
    bad = [r for r in roles if r not in ROLES] + [f for f in faults if f not in FAULTS]
    if bad or args.n < 1 or args.parallel < 1:
        parser.error(f"unknown role or fault {bad}; roles: {', '.join(ROLES)}; faults: kill, freeze")
    cases = [Case(r, f, k) for k in range(args.n) for r in roles for f in faults]
    for i, c in enumerate(cases):
        c.n = i
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="fault-matrix-")
    folder = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    folder.mkdir(parents=True, exist_ok=True)
    protocol = folder / "fault-matrix.yaml"
    protocol.write_text(PROTOCOL)
    t0 = time.monotonic()
    load0 = os.getloadavg()[0]
    head = (f"{'role':<16} {'fault':<7} {'at s':>5} {'outcome':<21} {'exit':>4} {'missing s':>9} "
            f"{'belt stopped after s':>20} {'safety event':>12} {'unrecorded stops':>16}  note")
    print(f"fault matrix: {len(cases)} cases ({args.n} per role and fault), {args.parallel} at a time, "
          f"protocol: one {STAGE_S:g} s moving stage; freeze {args.freeze_s:g} s", flush=True)
    print(head)
    print("-" * len(head), flush=True)
    lock = threading.Lock()

    def one(c: Case) -> Case:
        run_case(c, folder, protocol, args.freeze_s, args.seed * 1000 + c.n)
        with lock:
            print(f"{c.role:<16} {c.fault:<7} {fmt(c.at_s, '.1f'):>5} {c.outcome:<21} {c.code!s:>4} "
                  f"{fmt(c.missing_s):>9} {fmt(c.belt_stopped_after_s):>20} "
                  f"{'yes' if c.safety_recorded else 'no':>12} {c.unrecorded_stops:>16}  {c.note}",
                  flush=True)
        return c

    with ThreadPoolExecutor(args.parallel) as pool:
        done = list(pool.map(one, cases))
    lying = [c for c in done if c.code == 0 and c.incomplete_file]
    unrecorded = sum(c.unrecorded_stops for c in done)
    print("-" * len(head))
    print(f"summary: {len(done)} cases in {(time.monotonic() - t0) / 60:.1f} min (load {load0:.1f} at "
          f"the start, {os.getloadavg()[0]:.1f} at the end); cases of exit 0 over an incomplete file: "
          f"{len(lying)}; unrecorded belt stops: {unrecorded}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if not lying and not unrecorded else 1


if __name__ == "__main__":
    sys.exit(main())
