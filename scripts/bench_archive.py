"""Benchmark the session archive under the full simulated lab load.

Starts the simulated lab (2 force plates at 2 kHz, 2 tibial IMUs at 1 kHz, camera, treadmill,
participant plan), the live step processor (steps stream) and a session-markers publisher
(metronome beats and stage markers) as separate processes, records everything with the
Recorder in this process for --duration-s (10 minutes by default), then prints what was compared:

* samples lost: for every stream, samples the recorder's readers received minus samples in the
  file (must be 0), and for the plates and IMUs (exact clock grids) holes in the timestamp grid;
  the camera drops frames on purpose (can_drop_samples) and is reported separately;
* writer CPU share: CPU time of the writer thread (and of the whole recorder process) divided by
  wall time, in % of one core;
* file size per hour, and the raw data rate for comparison (the compression ratio).

Run:  python scripts/bench_archive.py [--duration-s 600] [--compression none|gzip|lzf] [--out DIR]
LSL stays on this machine (machine-scope config).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

METRONOME_SPM = 172.0


def publish_session_markers(stop: Any, source_id: str) -> None:
    """Role: the session's markers: a metronome beat per step, a stage change every 60 s."""
    import pylsl

    from labsuite.stages import StageRecord
    from labsuite.streams.contracts import markers_spec
    from labsuite.streams.messages import EVENT_BEAT, EVENT_METRONOME, marker

    outlet = pylsl.StreamOutlet(markers_spec(source_id).to_info())
    t_start = pylsl.local_clock()
    stage_start, stage_index, beat = t_start, 0, 0
    outlet.push_sample([marker("stage_start", stage=f"stage-{stage_index}")])
    outlet.push_sample([marker(EVENT_METRONOME, spm=METRONOME_SPM)])
    period = 60.0 / METRONOME_SPM
    next_beat = t_start + period
    while not stop.wait(0.005):
        now = pylsl.local_clock()
        if now >= next_beat:
            beat += 1
            outlet.push_sample([marker(EVENT_BEAT, n=beat, spm=METRONOME_SPM)], next_beat)
            next_beat += period
        if now - stage_start >= 60.0:
            rec = StageRecord(stage_index, f"stage-{stage_index}", "cadence", stage_start, now,
                              target_cadence_spm=METRONOME_SPM, end_reason="time")
            outlet.push_sample([marker("stage_end", **rec.to_marker_fields())], now)
            stage_index += 1
            stage_start = now
            outlet.push_sample([marker("stage_start", stage=f"stage-{stage_index}")], now)


def wait_visible(source_ids: list[str], timeout_s: float) -> None:
    """Wait until every stream is visible on LSL (spawned roles start slowly on a loaded machine)."""
    import pylsl

    resolver = pylsl.ContinuousResolver(forget_after=10.0)
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while time.monotonic() < deadline:
        seen |= {i.source_id() for i in resolver.results()}
        if set(source_ids) <= seen:
            return
        time.sleep(0.2)
    print(f"  not visible after {timeout_s:g} s: {sorted(set(source_ids) - seen)}", flush=True)


def grid_holes(ts: np.ndarray, rate_hz: float) -> int:
    """Samples missing from an exact t0 + k/rate grid between the first and last timestamp."""
    if len(ts) < 2:
        return 0
    k = np.rint((ts - ts[0]) * rate_hz).astype(np.int64)
    return int(k[-1] + 1 - len(np.unique(k)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--compression", choices=("gzip", "lzf", "none"), default="none")
    parser.add_argument("--out", type=Path, default=None, help="folder for the session file (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the session file")
    args = parser.parse_args()

    from labsuite.lslconfig import use_machine_scope

    use_machine_scope()
    from labsuite.archive.reader import open_session
    from labsuite.archive.recorder import Recorder, RecorderSettings, format_progress
    from labsuite.archive.writer import WriterSettings, expected_bytes_per_s
    from labsuite.drivers.sim import gait
    from labsuite.drivers.sim.lab import SimLabSettings, gait_plan_spec, sim_lab_roles
    from labsuite.lab.live import run_processor
    from labsuite.processes import Supervisor

    lab_id = f"bench{os.getpid()}"
    participant = gait.ParticipantSettings(mode="run", speed_m_s=3.0, mass_kg=70.0)
    lab = SimLabSettings(lab_id=lab_id, participant=participant, plate_rate_hz=2000.0, imu_rate_hz=1000.0)
    specs = [s for group in lab.stream_specs().values() for s in group]
    plates = {s.setup["force_platform"]["belt"]: s.source_id for s in specs if s.kind == "force_plate"}
    imus = {s.setup["sensor"]["side"]: s.source_id for s in specs if s.kind == "imu"}
    treadmill = next(s.source_id for s in specs if s.kind == "treadmill")
    steps_sid = f"labsuite-steps-{lab_id}"
    markers_sid = lab.session_markers_source_id
    sources = [s.source_id for s in specs] + [gait_plan_spec(lab).source_id, steps_sid, markers_sid]

    sup = Supervisor()
    for role in sim_lab_roles(lab):
        sup.add_role(role)
    sup.add("processor", run_processor, {"plates": plates, "imus": imus, "treadmill": treadmill,
                                         "steps_source_id": steps_sid, "layout": "split", "mode": "run",
                                         "mass_kg": participant.mass_kg})
    sup.add("markers", publish_session_markers, {"source_id": markers_sid})

    out_dir = args.out or Path(tempfile.mkdtemp(prefix="bench_archive_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench_{lab_id}.h5"
    compression = None if args.compression == "none" else args.compression
    settings = RecorderSettings(participant_id="BENCH01", path=path, source_ids=tuple(sources), wait_s=5.0,
                                mass_kg=participant.mass_kg, expected_duration_s=args.duration_s + 60,
                                writer=WriterSettings(compression=compression))
    print(f"bench_archive: simulated lab {lab_id}: plates 2 x 2000 Hz, IMUs 2 x 1000 Hz, camera "
          f"{lab.camera_rate_hz:g} Hz, treadmill, participant plan, processor steps, session markers; "
          f"{args.duration_s:g} s, compression {args.compression}", flush=True)
    sup.start()
    recorder = Recorder(settings, on_message=lambda text: print(f"  recorder: {text}", flush=True))
    try:
        wait_visible(sources, 120.0)  # the bench measures recording, not the roles' start-up
        recorder.start()
        t_conn = time.monotonic()
        while time.monotonic() - t_conn < 180.0:
            recorder.tick()  # also retries readers stuck on a first connection that timed out
            waiting = [p.source_id for p in recorder.progress() if not p.connected]
            if not waiting:
                break
            time.sleep(1.0)
        print(f"  recorder connected to {len(sources) - len(waiting)} of {len(sources)} streams after "
              f"{time.monotonic() - t_conn:.1f} s" + (f"; still waiting for {waiting}" if waiting else ""),
              flush=True)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.monotonic()
        next_print = wall0 + 30.0
        try:
            while time.monotonic() - wall0 < args.duration_s and recorder.failed is None:
                time.sleep(1.0)
                recorder.tick()
                if time.monotonic() >= next_print:
                    next_print += 30.0
                    print(format_progress(time.monotonic() - wall0, recorder.progress(),
                                          recorder.writer.stats().samples_queued), flush=True)
        finally:
            recorder.stop()
        wall = time.monotonic() - wall0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        codes = sup.stop()
    progress = {p.source_id: p for p in recorder.progress()}
    wstats = recorder.writer.stats()
    proc_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    size = path.stat().st_size
    rows = []
    lost_total = 0
    with open_session(path) as s:
        raw_rate = expected_bytes_per_s([sd.spec for sd in s.streams.values()])
        for sid in sources:
            sd = s.streams.get(sid)
            p = progress.get(sid)
            received = p.received if p else 0
            n = sd.n_samples if sd is not None else 0
            holes = (grid_holes(sd.timestamps_raw, sd.spec.rate_hz)
                     if sd is not None and sd.spec.kind in ("force_plate", "imu") else 0)
            dropped_by_device = (grid_holes(sd.timestamps_raw, sd.spec.rate_hz)
                                 if sd is not None and sd.spec.kind == "camera" else 0)
            lost = (received - n) + holes
            lost_total += lost
            rows.append((sid.replace(f"-{lab_id}", ""), received, n, holes, lost, dropped_by_device,
                         sd.measured_rate_hz if sd is not None else float("nan")))
        n_steps, n_markers, n_stages = len(s.steps), len(s.markers), len(s.stages)
        complete = s.complete
    print()
    print(f"recorded {wall:.1f} s into {path} (complete={complete}); roles exit codes {codes}")
    print(f"{'stream':42s} {'received':>10s} {'in file':>10s} {'grid holes':>10s} {'LOST':>6s} "
          f"{'dev drops':>9s} {'rate Hz':>9s}")
    for name, rec, n, holes, lost, drops, rate in rows:
        print(f"{name:42s} {rec:10d} {n:10d} {holes:10d} {lost:6d} {drops:9d} {rate:9.2f}")
    print(f"steps in file: {n_steps}   markers: {n_markers}   stages: {n_stages}")
    print(f"samples lost (readers -> file, plus holes in plate/IMU clock grids): {lost_total}"
          f"{'  OK' if lost_total == 0 else '  FAIL'}")
    print(f"writer thread CPU: {wstats.cpu_s:.1f} s over {wall:.1f} s wall = "
          f"{100 * wstats.cpu_s / wall:.2f} % of one core; whole recorder process (readers, "
          f"writer, LSL) {100 * proc_cpu / wall:.1f} %; flushes {wstats.flushes}, "
          f"longest flush {1000 * wstats.max_flush_s:.1f} ms")
    per_hour = size / wall * 3600
    ratio = per_hour / (raw_rate * 3600)
    print(f"file size: {size / 1e6:.1f} MB for {wall:.0f} s = {per_hour / 1e6:.0f} MB per hour "
          f"(raw data rate {raw_rate * 3600 / 1e6:.0f} MB per hour, ratio {ratio:.2f}, "
          f"compression {args.compression})")
    print(json.dumps({"lost": lost_total, "writer_cpu_pct": 100 * wstats.cpu_s / wall,
                      "process_cpu_pct": 100 * proc_cpu / wall, "mb_per_hour": per_hour / 1e6,
                      "duration_s": wall, "steps": n_steps}))
    if not args.keep and args.out is None:
        path.unlink()
        out_dir.rmdir()
    return 0 if lost_total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
