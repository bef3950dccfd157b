"""Benchmark the live path's latency: plate sample -> step record, against a bare pylsl pull.

Runs the simulated lab (2 kHz split-belt plates, two 1 kHz IMUs, camera, treadmill, participant),
the live step processor with early records and the recorder (writing a session file, so the
machine carries what a session carries) as supervised processes, and in this process, in the
same run:

* a bare pylsl inlet on the left plate: a blocking pull of one sample, then whatever else is
  there; latency = pull time - timestamp of the newest sample pulled;
* a StreamReader on the same plate (the reader every consumer uses), timed the same way in its
  chunk callback: the reader's overhead is its latency over the bare pull's;
* a steps inlet (blocking pulls) noting when each record arrives.

For each record, ``decided_s`` is the timestamp of the newest plate sample it depends on (the
sample that decided an early record's impact window; toe-off + filter delay + 2 samples for a
full record). Printed (ms, p50 / p99 / max): bare pull, reader, early record - end of its impact
window (the deciding sample less the filter delay: filter delay included), early record - its
deciding sample, full record - toe-off (filter delay included), full record - its deciding
sample, and the ratios. All times are LSL times on this machine (the readers correct clock
offsets; one machine: about 0). Sample timestamps are the simulated devices' sample clocks, so
the figures include the drivers' chunking (``--chunk-s``, 10 ms as the simulator's default).

Usage: python scripts/bench_latency.py [--duration-s 60] [--warmup-s 8] [--chunk-s 0.01]
                                      [--pull-timeout-s S]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np


def run_early_processor(stop: Any, plates: dict[str, str], imus: dict[str, str],
                        treadmill: str | None, steps_source_id: str, mass_kg: float,
                        pull_timeout_s: float | None) -> None:
    """Processor role publishing early records, full records and corrections.

    ``pull_timeout_s`` (None: the readers' default) is how long each of its readers' pulls waits
    to fill a chunk before handing it over.
    """
    from labsuite.lab.live import LiveRunner
    from labsuite.realtime.processor import PlateGeometry, ProcessorSettings, StepProcessor

    class EarlyRunner(LiveRunner):
        # until the live runner has the option itself (issue 15, after the runner moves)
        def _ensure_processor(self) -> None:
            super()._ensure_processor()
            if self.processor is not None and not self.processor.early_records:
                self.processor = StepProcessor(self.processor.settings, early_records=True)

    settings = ProcessorSettings(
        rate_hz=1000.0, plates=tuple(PlateGeometry.lab_aligned(b) for b in plates),
        layout="split", mode="run", body_mass_kg=mass_kg, imu_sides=tuple(sorted(imus)))
    runner = EarlyRunner(settings, plates, imus=imus, treadmill=treadmill,
                         steps_source_id=steps_source_id)
    if pull_timeout_s is not None:
        for reader in runner.readers:
            reader.pull_timeout_s = pull_timeout_s
    runner.start()
    try:
        stop.wait()
    finally:
        runner.stop()


def _pct(a: np.ndarray) -> str:
    if not len(a):
        return "    n/a     n/a     n/a"
    return f"{np.percentile(a, 50):7.2f} {np.percentile(a, 99):7.2f} {np.max(a):7.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=60.0)
    ap.add_argument("--warmup-s", type=float, default=8.0)
    ap.add_argument("--plate-rate-hz", type=float, default=2000.0)
    ap.add_argument("--chunk-s", type=float, default=0.01, help="the drivers' chunk (10 ms)")
    ap.add_argument("--pull-timeout-s", type=float, default=None,
                    help="how long the processor's readers wait to fill a chunk (default: the "
                         "StreamReader default, 20 ms)")
    args = ap.parse_args()

    from labsuite.lslconfig import use_machine_scope

    use_machine_scope()
    import pylsl

    from labsuite.archive.recorder import RecorderSettings, run_recorder
    from labsuite.drivers.sim.lab import SimLabSettings, sim_lab_roles
    from labsuite.processes import Supervisor
    from labsuite.realtime.processor import PlateGeometry, ProcessorSettings, design_lowpass
    from labsuite.steps import (
        RECORD_CORRECTION,
        RECORD_EARLY,
        RECORD_FULL,
        STEP_FIELD_NAMES,
        rows_to_steps,
    )
    from labsuite.streams.acquisition import StreamQuery, StreamReader

    lab_id = f"lat-{uuid.uuid4().hex[:8]}"
    sim = SimLabSettings(lab_id=lab_id, plate_rate_hz=args.plate_rate_hz, chunk_s=args.chunk_s)
    steps_sid = f"labsuite-steps-{lab_id}"
    plates = {"left": sim.source_id("fp-left"), "right": sim.source_id("fp-right")}
    imus = {"left": sim.source_id("imu-left"), "right": sim.source_id("imu-right")}
    out_dir = Path(tempfile.mkdtemp(prefix="bench_latency_"))
    sup = Supervisor()
    for role in sim_lab_roles(sim):
        sup.add_role(dataclasses.replace(role, restart=False))
    sup.add("processor", run_early_processor, {
        "plates": plates, "imus": imus, "treadmill": sim.source_id("treadmill"),
        "steps_source_id": steps_sid, "mass_kg": sim.participant.mass_kg,
        "pull_timeout_s": args.pull_timeout_s}, restart=False)
    sources = (*plates.values(), *imus.values(), sim.source_id("treadmill"),
               sim.source_id("camera"), steps_sid)
    sup.add("recorder", run_recorder, {"settings": RecorderSettings(
        participant_id="BENCH", path=out_dir / "bench.h5", source_ids=sources, wait_s=5.0,
        mass_kg=sim.participant.mass_kg, expected_duration_s=args.duration_s + 120)},
        restart=False)
    # the filter delay of the processor's default low-pass at this rate
    geo = (PlateGeometry.lab_aligned("left"), PlateGeometry.lab_aligned("right"))
    _, delay = design_lowpass(ProcessorSettings(rate_hz=args.plate_rate_hz, plates=geo))
    delay_s = round(delay) / args.plate_rate_hz

    measuring = threading.Event()
    stop = threading.Event()
    bare_ms: list[float] = []
    reader_ms: list[float] = []
    received: list[tuple[float, list[float]]] = []

    def bare_pull() -> None:
        resolver = pylsl.ContinuousResolver(prop="source_id", value=plates["left"])
        inlet = None
        while inlet is None and not stop.is_set():
            found = resolver.results()
            if found:
                inlet = pylsl.StreamInlet(found[0], max_buflen=10, recover=False)
                inlet.open_stream(timeout=30.0)
            else:
                stop.wait(0.1)
        offset = inlet.time_correction(timeout=5.0) if inlet is not None else 0.0
        while inlet is not None and not stop.is_set():
            _, ts = inlet.pull_sample(timeout=0.2)
            if ts is None:
                continue
            _, more = inlet.pull_chunk(timeout=0.0, max_samples=4096)
            now = pylsl.local_clock()
            newest = more[-1] if more else ts
            if measuring.is_set():
                bare_ms.append((now - (newest + offset)) * 1000.0)

    def on_plate(reader: StreamReader, ts: np.ndarray, data: np.ndarray) -> None:
        if measuring.is_set() and len(ts):
            reader_ms.append((pylsl.local_clock() - float(ts[-1])) * 1000.0)

    def steps_pull() -> None:
        resolver = pylsl.ContinuousResolver(prop="source_id", value=steps_sid)
        inlet = None
        while inlet is None and not stop.is_set():
            found = resolver.results()
            if found:
                inlet = pylsl.StreamInlet(found[0], max_buflen=60, recover=False)
                inlet.open_stream(timeout=30.0)
            else:
                stop.wait(0.1)
        labels = None
        if inlet is not None:
            info = inlet.info(timeout=10.0)
            ch = info.desc().child("channels").child("channel")
            labels = []
            for _ in range(info.channel_count()):
                labels.append(ch.child_value("label"))
                ch = ch.next_sibling()
            if tuple(labels) != STEP_FIELD_NAMES:
                raise SystemExit(f"steps stream {steps_sid}: channels are not this version's record")
        while inlet is not None and not stop.is_set():
            sample, ts = inlet.pull_sample(timeout=0.2)
            if ts is None:
                continue
            now = pylsl.local_clock()
            if measuring.is_set():
                received.append((now, sample))

    load0 = os.getloadavg()
    sup.start()
    threads = [threading.Thread(target=f, daemon=True) for f in (bare_pull, steps_pull)]
    for th in threads:
        th.start()
    reader = StreamReader(StreamQuery(source_id=plates["left"]), on_chunk=on_plate,
                          buffer_s=5.0).start()
    try:
        if not reader.wait_connected(120.0):
            raise SystemExit(f"plate stream {plates['left']} not found within 120 s")
        time.sleep(args.warmup_s)
        measuring.set()
        t0 = time.perf_counter()
        load_mid = []
        while time.perf_counter() - t0 < args.duration_s:
            time.sleep(min(5.0, args.duration_s))
            load_mid.append(os.getloadavg()[0])
        measuring.clear()
        wall = time.perf_counter() - t0
    finally:
        stop.set()
        reader.stop()
        codes = sup.stop(timeout_s=30.0)
        for th in threads:
            th.join(timeout=5.0)
    load1 = os.getloadavg()
    recs = rows_to_steps(np.array([r for _, r in received])) if received else rows_to_steps(
        np.empty((0, len(STEP_FIELD_NAMES))))
    arrived = np.array([t for t, _ in received])
    kind = recs["record_kind"]
    early, full = kind == RECORD_EARLY, kind == RECORD_FULL
    bare, rdr = np.asarray(bare_ms), np.asarray(reader_ms)
    early_dec = (arrived[early] - recs["decided_s"][early]) * 1000.0
    early_win = early_dec + delay_s * 1000.0
    full_toe = (arrived[full] - recs["toe_off_s"][full]) * 1000.0
    full_dec = (arrived[full] - recs["decided_s"][full]) * 1000.0
    n_fix = int(np.sum(kind == RECORD_CORRECTION))
    with_peak = int(np.sum(early & (recs["loading_rate_method"] == 0)))
    session = out_dir / "bench.h5"
    size = session.stat().st_size if session.exists() else 0
    shutil.rmtree(out_dir, ignore_errors=True)

    print(f"live latency benchmark: simulated lab {lab_id}, plates {args.plate_rate_hz:g} Hz x2 "
          f"(driver chunks {args.chunk_s * 1000:g} ms), IMUs {sim.imu_rate_hz:g} Hz x2, camera, "
          f"treadmill; processor with early records (its readers' pull window "
          f"{'default' if args.pull_timeout_s is None else f'{args.pull_timeout_s * 1000:g} ms'}); "
          f"recorder ({size / 1e6:.1f} MB written)")
    print(f"measured {wall:.0f} s after {args.warmup_s:g} s warm-up; load average "
          f"{load0[0]:.1f} at start, {np.mean(load_mid):.1f} during, {load1[0]:.1f} at the end "
          f"on {os.cpu_count()} CPUs")
    print(f"filter delay (50 Hz Butterworth, order 4, at {args.plate_rate_hz:g} Hz): "
          f"{delay_s * 1000:.1f} ms")
    print(f"records: {int(np.sum(early))} early ({with_peak} with an impact peak), "
          f"{int(np.sum(full))} full, {n_fix} corrections")
    print("                                                        n     p50     p99     max (ms)")
    print(f"  bare pylsl pull - newest sample                  {len(bare):6d} {_pct(bare)}")
    print(f"  StreamReader chunk callback - newest sample      {len(rdr):6d} {_pct(rdr)}")
    print(f"  early record - end of its impact window (+delay) {len(early_win):6d} {_pct(early_win)}")
    print(f"  early record - its deciding sample               {len(early_dec):6d} {_pct(early_dec)}")
    print(f"  full record - toe-off (filter delay included)    {len(full_toe):6d} {_pct(full_toe)}")
    print(f"  full record - its deciding sample                {len(full_dec):6d} {_pct(full_dec)}")
    if len(bare) and len(rdr):
        b99 = np.percentile(bare, 99)
        print(f"ratios to the bare pull p99 ({b99:.2f} ms): reader {np.percentile(rdr, 99) / b99:.2f}x "
              f"(target <= 1.5x)"
              + (f", early record {np.percentile(early_dec, 99) / b99:.2f}x" if len(early_dec) else "")
              + (f", full record {np.percentile(full_dec, 99) / b99:.2f}x" if len(full_dec) else ""))
    print("targets: early and full record p99 <= 15 ms after the data that decide them, filter "
          "delay included (rows 3 and 5)")
    print(f"role exit codes {codes}")
    return 0 if len(full) and int(np.sum(full)) > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
