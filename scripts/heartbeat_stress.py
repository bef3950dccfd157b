"""Run the full simulated lab on a machine kept busy by CPU hogs and count false heartbeat stops.

One ``labsuite run --simulate --headless`` session after another (weigh-in, then one long baseline
stage at 3 m/s; every role, the recorder included) for ``--duration-s`` seconds in all, with
``--hog N`` CPU-bound processes beside it (4 on 2 cores keeps the load average above 4).
Meanwhile this script listens, as any LSL client could, to

* the session's command stream: every heartbeat's LSL timestamp is its send time, so the largest
  gap between two heartbeats says whether the session really fell silent;
* the treadmill driver's events stream (``treadmill_watchdog_stop``, ``drivers/treadmill.py``);
* the session's markers: every ``belt_fault`` (the session saw the belt leave its commanded
  speed, ``labsuite/protocol/belt.py``), so a stop the driver made is also one the session saw.

A watchdog stop while the session ran is *false* when the heartbeats sent in the watchdog's window
before it show no gap of the watchdog's timeout (0.5 s): the session was sending, the driver judged
wrongly. A stop after the session's last heartbeat (it closed and fell silent) is counted apart. Prints one
line per session and a summary: session time covered, load average (min/mean/max, sampled every
5 s), heartbeats, largest gap between heartbeats sent, watchdog stops, false ones.

Run:  python scripts/heartbeat_stress.py --duration-s 1800 --hog 4
LSL stays on this machine (machine-scope config).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 0.5  # labsuite.streams.messages.HEARTBEAT_TIMEOUT_S


def protocol_text(run_s: float) -> str:
    return f"""\
schema: labsuite-protocol/1
name: heartbeat-stress
speed_m_s: 3.0
safety: {{accel_m_s2: 1.0}}
checkins: {{at_start: false, at_stage_boundaries: false}}
simulation: {{mode: run, body_mass_kg: 70}}
stages:
  - {{name: weigh-in, kind: quiet_standing, duration_s: 4}}
  - {{name: run, kind: baseline, duration_s: {run_s:.0f}, measure_last_steps: 20}}
"""


def hog(stop_at: float) -> None:
    """A CPU-bound process."""
    x = 0
    while time.monotonic() < stop_at:
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF


class Listener:
    """Heartbeat send times and treadmill events of one lab, from plain LSL readers."""

    def __init__(self, lab_id: str) -> None:
        from labsuite.drivers.treadmill import events_source_id
        from labsuite.streams.acquisition import StreamQuery, StreamReader

        self.heartbeats: list[float] = []
        self.events: list[tuple[float, dict]] = []
        self.belt_faults: list[tuple[float, dict]] = []
        self._lock = threading.Lock()
        treadmill = f"labsuite-sim-{lab_id}-treadmill"
        self.readers = [
            StreamReader(StreamQuery(source_id=f"labsuite-session-{lab_id}-commands"),
                         on_chunk=self._on_commands, buffer_s=30.0).start(),
            StreamReader(StreamQuery(source_id=events_source_id(treadmill)), on_chunk=self._on_events,
                         buffer_s=30.0).start(),
            StreamReader(StreamQuery(source_id=f"labsuite-session-{lab_id}-markers"),
                         on_chunk=self._on_markers, buffer_s=30.0).start(),
        ]

    def _on_commands(self, reader, ts: np.ndarray, data: np.ndarray) -> None:
        with self._lock:
            for t, row in zip(ts, data, strict=True):
                if '"heartbeat"' in str(row[0]):
                    self.heartbeats.append(float(t))

    def _on_events(self, reader, ts: np.ndarray, data: np.ndarray) -> None:
        with self._lock:
            for t, row in zip(ts, data, strict=True):
                try:
                    self.events.append((float(t), json.loads(str(row[0]))))
                except json.JSONDecodeError:
                    pass

    def _on_markers(self, reader, ts: np.ndarray, data: np.ndarray) -> None:
        with self._lock:
            for t, row in zip(ts, data, strict=True):
                if '"belt_fault"' in str(row[0]):
                    self.belt_faults.append((float(t), json.loads(str(row[0]))))

    def stop(self) -> None:
        """Stop listening."""
        for r in self.readers:
            r.stop()


def run_session(run_s: float, folder: Path, n: int) -> dict:
    lab_id = f"hbstress-{uuid.uuid4().hex[:8]}"
    proto = folder / f"stress{n}.yaml"
    proto.write_text(protocol_text(run_s))
    listener = Listener(lab_id)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "labsuite", "run", str(proto), "--participant", f"H{n:03d}", "--simulate",
         "--headless", "--auto-start", "--out", str(folder / f"out{n}"), "--lab-id", lab_id, "--quiet",
         "--connect-timeout", "120"],
        capture_output=True, text=True)
    wall = time.monotonic() - t0
    for f in (folder / f"out{n}").glob("*"):
        f.unlink()  # the recorder ran (the full lab); its file is not needed here
    time.sleep(1.0)
    listener.stop()
    hb = np.sort(np.asarray(listener.heartbeats))
    stops = [(t, e) for t, e in listener.events if e.get("event") == "treadmill_watchdog_stop"]
    # A stop after the session's last heartbeat is the session closing (it stops sending): true.
    during = [(t, e) for t, e in stops if len(hb) and t < hb[-1]]
    false = 0
    for t, _ in during:
        # false: every heartbeat gap in the watchdog's window before the stop is below its timeout
        window = hb[(hb > t - TIMEOUT_S - 1.0) & (hb <= t)]
        edges = np.concatenate([window, [t]])
        if len(window) and np.max(np.diff(edges)) < TIMEOUT_S:
            false += 1
    logged = len(re.findall(r"treadmill watchdog_stop", proc.stdout + proc.stderr))
    end = re.search(r"session ended: (\S+)", proc.stdout)
    return {"lab_id": lab_id, "code": proc.returncode, "outcome": end.group(1) if end else "did not start",
            "wall_s": wall, "heartbeats": len(hb),
            "max_gap_s": float(np.max(np.diff(hb))) if len(hb) > 1 else float("nan"),
            "span_s": float(hb[-1] - hb[0]) if len(hb) > 1 else 0.0,
            "stops": len(during), "at_close": len(stops) - len(during), "false": false,
            "belt_faults": len(listener.belt_faults),
            "belt_fault_reasons": sorted({e.get("reason", "") for _, e in listener.belt_faults}),
            "logged_stops": logged,
            "tail": (proc.stdout + proc.stderr)[-1500:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=300.0, help="session time to cover")
    parser.add_argument("--session-s", type=float, default=300.0, help="length of each session's run")
    parser.add_argument("--hog", type=int, default=4, help="CPU-bound processes (default 4)")
    args = parser.parse_args()
    os.environ.setdefault("LSLAPICFG", str(REPO / "labsuite" / "data" / "lsl_local.cfg"))
    end_at = time.monotonic() + args.duration_s
    hogs = [mp.Process(target=hog, args=(end_at + 600,), daemon=True) for _ in range(args.hog)]
    for h in hogs:
        h.start()
    loads: list[float] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(5.0):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="hb_stress_") as tmp:
            n = 0
            while time.monotonic() < end_at - 20:
                n += 1
                run_s = max(20.0, min(args.session_s, end_at - time.monotonic() - 15))
                row = run_session(run_s, Path(tmp), n)
                rows.append(row)
                print(f"session {n}: {row['outcome']:<22} exit {row['code']}  {row['span_s']:6.0f} s of "
                      f"heartbeats ({row['heartbeats']}), largest gap sent {row['max_gap_s']:.3f} s, "
                      f"watchdog stops while it ran {row['stops']} (false {row['false']}), after it "
                      f"closed {row['at_close']}, in the log {row['logged_stops']}; belt faults the "
                      f"session recorded {row['belt_faults']} {row['belt_fault_reasons'] or ''}; load now "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
                if row["code"] not in (0, 3) or row["heartbeats"] == 0:
                    print(row["tail"], flush=True)
    finally:
        sampling.set()
        for h in hogs:
            h.terminate()
    covered = sum(r["span_s"] for r in rows)
    stops = sum(r["stops"] for r in rows)
    false = sum(r["false"] for r in rows)
    faults = sum(r["belt_faults"] for r in rows)
    gaps = [r["max_gap_s"] for r in rows if np.isfinite(r["max_gap_s"])]
    load = np.asarray(loads) if loads else np.asarray([float("nan")])
    print(f"covered {covered:.0f} s of session in {len(rows)} sessions with {args.hog} CPU hogs on "
          f"{os.cpu_count()} cores; load average min {load.min():.1f} mean {load.mean():.1f} max "
          f"{load.max():.1f}; heartbeats {sum(r['heartbeats'] for r in rows)}, largest gap sent "
          f"{max(gaps) if gaps else float('nan'):.3f} s; watchdog stops {stops}, false {false}; "
          f"belt faults recorded by the session {faults}")
    return 0 if false == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
