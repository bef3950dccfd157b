"""Start a short session N times in a row and report every start that fails, with its cause.

Each start is ``labsuite run --headless`` of a 15-second protocol (weigh-in, baseline) on either
the emulated lab (``--lab``: Bertec, serial and QTM plates and two x-IMU3s speaking their wire
protocols, tests/emulators/lab.py, a fresh lab id each time) or the built-in simulated lab
(``--simulate``). The machine can be kept busy meanwhile: ``--hog N`` CPU-bound processes and
``--other-lab`` (a second simulated lab publishing on the same machine, as on a shared lab PC).
Prints one row per start (outcome, exit code, seconds to the first stage, the failure line) and a
summary with the load measured during the run.

Run:  python scripts/lab_starts.py --lab --starts 10 --hog 2 --other-lab
      python scripts/lab_starts.py --simulate --starts 10 --hog 2 --other-lab
LSL stays on this machine (machine-scope config).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = """\
schema: labsuite-protocol/1
name: start-check
speed_m_s: 3.0
safety: {accel_m_s2: 1.5}
checkins: {at_start: false, at_stage_boundaries: false}
simulation: {mode: run, body_mass_kg: 70}
stages:
  - {name: weigh-in, kind: quiet_standing, duration_s: 4}
  - {name: baseline, kind: baseline, duration_s: 10, measure_last_steps: 10}
"""


def hog(stop_at: float) -> None:
    """A CPU-bound process (a busy lab PC)."""
    x = 0
    while time.monotonic() < stop_at:
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF


def one_start(args: argparse.Namespace, folder: Path, n: int) -> dict:
    proto = folder / "start.yaml"
    proto.write_text(PROTOCOL)
    out = folder / f"out{n}"
    cmd = [sys.executable, "-m", "labsuite", "run", str(proto), "--participant", f"S{n:02d}",
           "--headless", "--auto-start", "--out", str(out), "--connect-timeout",
           str(args.connect_timeout)]
    lab = None
    if args.lab:
        sys.path.insert(0, str(REPO / "tests"))
        from emulators.lab import EmulatedLab

        lab = EmulatedLab(folder / f"lab{n}", f"starts-{uuid.uuid4().hex[:8]}").__enter__()
        cmd += ["--lab", str(lab.lab_file), "--mass-kg", "70"]
    else:
        cmd += ["--simulate", "--lab-id", f"starts-{uuid.uuid4().hex[:8]}"]
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first_stage = float("nan")
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if first_stage != first_stage and line.startswith("== stage 1"):
                first_stage = time.monotonic() - t0
        code = proc.wait(timeout=600)
    finally:
        if lab is not None:
            lines.append(f"emulated lab: {lab.describe()}")
            lab.__exit__(None, None, None)
    text = "\n".join(lines)
    end = re.search(r"session ended: (\S+)", text)
    failure = next((ln for ln in lines if "not ready" in ln or "error:" in ln), "")
    return {"n": n, "code": code, "outcome": end.group(1) if end else "did not start",
            "first_stage_s": first_stage, "wall_s": time.monotonic() - t0, "failure": failure,
            "log": text}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--lab", action="store_true", help="the emulated lab (wire-protocol emulators)")
    where.add_argument("--simulate", action="store_true", help="the built-in simulated lab")
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--hog", type=int, default=0, metavar="N", help="CPU-bound processes")
    parser.add_argument("--other-lab", action="store_true", help="a second simulated lab publishing")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--keep-logs", type=Path, default=None, help="folder for each start's output")
    args = parser.parse_args()
    os.environ.setdefault("LSLAPICFG", str(REPO / "labsuite" / "data" / "lsl_local.cfg"))
    stop_at = time.monotonic() + 24 * 3600
    hogs = [mp.Process(target=hog, args=(stop_at,), daemon=True) for _ in range(args.hog)]
    for h in hogs:
        h.start()
    other = None
    if args.other_lab:
        other = subprocess.Popen([sys.executable, "-m", "labsuite", "simulate", "--no-view", "--lab-id",
                                  f"other-{uuid.uuid4().hex[:6]}"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    loads = []
    rows = []
    try:
        time.sleep(3.0 if hogs or other else 0.0)
        with tempfile.TemporaryDirectory(prefix="lab_starts_") as tmp:
            for n in range(1, args.starts + 1):
                loads.append(os.getloadavg()[0])
                row = one_start(args, Path(tmp), n)
                rows.append(row)
                ok = row["code"] == 0 and row["outcome"] == "completed"
                print(f"start {n:2d}: {'ok  ' if ok else 'FAIL'} exit {row['code']}  "
                      f"{row['outcome']:<24} first stage after {row['first_stage_s']:5.1f} s  "
                      f"load {loads[-1]:4.1f}  {row['failure']}", flush=True)
                if args.keep_logs is not None:
                    args.keep_logs.mkdir(parents=True, exist_ok=True)
                    (args.keep_logs / f"start{n:02d}.log").write_text(row["log"])
    finally:
        for h in hogs:
            h.terminate()
        if other is not None:
            other.terminate()
            other.wait(30)
    good = sum(1 for r in rows if r["code"] == 0 and r["outcome"] == "completed")
    kind = "emulated lab (--lab)" if args.lab else "simulated lab (--simulate)"
    print(f"{kind}: {good} of {len(rows)} starts completed; load average during the run "
          f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores; {args.hog} CPU hogs"
          f"{', another simulated lab publishing' if other else ''}")
    return 0 if good == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
