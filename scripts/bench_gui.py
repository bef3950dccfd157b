"""Benchmark the feedback GUI under the full simulated lab: frame rate, GUI-thread CPU, latency.

Runs the simulated lab (2 kHz split-belt plates, two 1 kHz IMUs, camera, treadmill, participant)
and the live step processor as supervised processes, a marker stream with a cued stage and a
metronome (so the participant display draws its cue and pulse), and both windows in this process.
Measures, over ``--duration-s``:

* frames painted per second by the force plot, and timer frames per second;
* CPU time of the GUI (main) thread / wall time, and of the whole GUI process;
* latency from a force sample's LSL timestamp to the end of the first paint that showed it:
  (a) every left-belt sample (each paint shows the samples newer than the previous paint's);
  (b) foot strikes found by an independent plain pylsl reader of the left plate in another
      process (first sample with Fz >= 200 N after >= 100 ms below 50 N).
The sample timestamp is the simulated device's sample clock, so (a) and (b) include the driver's
10 ms chunking, LSL transport, the reader thread, the frame timer and painting.

Usage: python scripts/bench_gui.py [--duration-s 30] [--fps 40] [--plate-rate-hz 2000] [--show]
(offscreen Qt unless --show).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np


def run_strike_probe(stop, source_id: str, out_path: str) -> None:
    """Role: read the plate with a plain pylsl inlet; write foot-strike sample times to a file."""
    import pylsl

    resolver = pylsl.ContinuousResolver(prop="source_id", value=source_id)
    inlet = None
    while inlet is None and not stop.is_set():
        found = resolver.results()
        if found:
            inlet = pylsl.StreamInlet(found[0], max_buflen=30)
            inlet.open_stream(timeout=10.0)
        else:
            stop.wait(0.1)
    strikes: list[float] = []
    below_since = math.nan
    loaded = True
    while inlet is not None and not stop.is_set():
        samples, stamps = inlet.pull_chunk(timeout=0.05, max_samples=4096)
        if not stamps:
            continue
        # a sample in ~35 µs of Python: fine for 2 kHz in its own process
        for fz, t in zip(np.asarray(samples)[:, 2], stamps, strict=True):
            if fz < 50.0:
                if loaded:
                    below_since, loaded = t, False
            elif fz >= 200.0 and not loaded:
                if t - below_since >= 0.1:
                    strikes.append(float(t))
                loaded = True
    Path(out_path).write_text(json.dumps(strikes))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--fps", type=float, default=40.0)
    ap.add_argument("--plate-rate-hz", type=float, default=2000.0)
    ap.add_argument("--warmup-s", type=float, default=5.0)
    ap.add_argument("--show", action="store_true", help="use the real display instead of offscreen")
    args = ap.parse_args()

    from labsuite.lslconfig import use_machine_scope

    use_machine_scope()
    if not args.show:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import tempfile
    import uuid

    import pylsl
    from PyQt5 import QtCore, QtWidgets

    from labsuite.drivers.sim.lab import SimLabSettings, sim_lab_roles
    from labsuite.feedback.feed import FeedSettings, LiveFeed
    from labsuite.feedback.windows import GuiController
    from labsuite.ids import markers_source_id
    from labsuite.lab.live import run_processor
    from labsuite.processes import Supervisor
    from labsuite.streams import messages as msg
    from labsuite.streams.contracts import markers_spec

    lab_id = f"bench-{uuid.uuid4().hex[:8]}"
    sim = SimLabSettings(lab_id=lab_id, plate_rate_hz=args.plate_rate_hz)
    steps_sid = f"labsuite-steps-{lab_id}"
    probe_out = Path(tempfile.mkdtemp(prefix="bench_gui_")) / "strikes.json"
    sup = Supervisor()
    for role in sim_lab_roles(sim):
        sup.add_role(dataclasses.replace(role, restart=False))
    sup.add("processor", run_processor, {
        "plates": {"left": sim.source_id("fp-left"), "right": sim.source_id("fp-right")},
        "imus": {"left": sim.source_id("imu-left"), "right": sim.source_id("imu-right")},
        "treadmill": sim.source_id("treadmill"), "steps_source_id": steps_sid, "layout": "split",
        "mode": "run", "mass_kg": sim.participant.mass_kg}, restart=False)
    sup.add("probe", run_strike_probe, {"source_id": sim.source_id("fp-left"),
                                        "out_path": str(probe_out)}, restart=False)

    # the session's marker stream, played by this script: a cued stage with a metronome
    markers = pylsl.StreamOutlet(markers_spec(markers_source_id(lab_id)).to_info())
    spm = 172.0
    stop_beats = threading.Event()

    def play_markers() -> None:
        t = pylsl.local_clock()
        for text in (msg.marker("session_start", protocol="bench"),
                     msg.marker("stage_start", index=0, name="bench", kind="cadence",
                                duration_s=3600, target_cadence_spm=spm, band_low_spm=spm - 5,
                                band_high_spm=spm + 5, belt_speed_m_s=3.0),
                     msg.marker("cue", feedback_on=True, metronome_spm=spm, band_low_spm=spm - 5,
                                band_high_spm=spm + 5, target_spm=spm, valr_max_bw_per_s=None,
                                tibial_max_g=None),
                     # the participant display's flash on the beat (a cue asks for it)
                     msg.marker(msg.EVENT_METRONOME, spm=spm, flash=True)):
            markers.push_sample([text], t)
        n = 0
        while not stop_beats.wait(60.0 / spm):
            n += 1
            markers.push_sample([msg.marker(msg.EVENT_BEAT, n=n, spm=spm)])

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["bench_gui"])
    settings = FeedSettings.for_sim_lab(sim, steps_source_id=steps_sid, participant_id="BENCH",
                                        session_file="(none)", fps=args.fps)
    sup.start()
    feed = LiveFeed(settings).start()
    gui = GuiController(feed, None)
    gui.show(second_screen=False)
    plot = gui.operator.force_plot

    def spin(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents(QtCore.QEventLoop.AllEvents, 20)
            time.sleep(0.001)

    try:
        deadline = time.monotonic() + 120.0
        while not feed.wait_connected(0.0) and time.monotonic() < deadline:
            spin(0.2)
        if not feed.wait_connected(0.0):
            lost = [str(r.query) for r in feed.readers if not r.wait_connected(0.0)]
            raise SystemExit(f"streams not connected after 120 s: {lost}")
        threading.Thread(target=play_markers, daemon=True).start()
        spin(args.warmup_s)
        plot.frames = deque()
        ticks0, paints0 = gui.ticks, plot.paints
        frame_cpu0 = gui.gui_cpu_s
        wall0, thread0, proc0 = time.perf_counter(), time.thread_time(), time.process_time()
        load0 = os.getloadavg()
        # the main thread runs the Qt event loop, as app.exec_() would
        timer = QtCore.QTimer()
        timer.setSingleShot(True)
        timer.timeout.connect(app.quit)
        timer.start(int(args.duration_s * 1000))
        app.exec_()
        wall = time.perf_counter() - wall0
        thread_cpu = time.thread_time() - thread0
        proc_cpu = time.process_time() - proc0
        frames = list(plot.frames)
        ticks, paints = gui.ticks - ticks0, plot.paints - paints0
        frame_cpu = gui.gui_cpu_s - frame_cpu0
        health = feed.health()
        pulse_seen = gui.participant.cue
    finally:
        stop_beats.set()
        gui.stop_without_abort()
        feed.stop()
        codes = sup.stop(timeout_s=15.0)
    strikes = np.array(json.loads(probe_out.read_text())) if probe_out.exists() else np.empty(0)

    paint_t = np.array([f[0] for f in frames])
    shown_left = np.array([f[1][0] if f[1] else math.nan for f in frames])
    # (a) every sample: the samples in (shown[i-1], shown[i]] appear first in paint i
    rate = args.plate_rate_hz
    lat_all: list[np.ndarray] = []
    prev = math.nan
    for t_paint, shown in zip(paint_t, shown_left, strict=True):
        if math.isfinite(prev) and math.isfinite(shown) and shown > prev:
            ts = np.arange(shown, prev, -1.0 / rate)
            lat_all.append(t_paint - ts)
        if math.isfinite(shown):
            prev = max(prev, shown) if math.isfinite(prev) else shown
    lat_all_ms = np.concatenate(lat_all) * 1000 if lat_all else np.empty(0)
    # (b) strikes seen by the independent reader, inside the measured window
    lat_strike_ms = []
    if len(paint_t):
        running_max = np.fmax.accumulate(np.nan_to_num(shown_left, nan=-np.inf))
        for s in strikes:
            if not (paint_t[0] - 1.0 < s < paint_t[-1] - 0.5) or running_max[0] >= s:
                continue
            i = int(np.searchsorted(running_max, s))
            if i < len(paint_t):
                lat_strike_ms.append((paint_t[i] - s) * 1000)
    lat_strike_ms = np.asarray(lat_strike_ms)

    def pct(a: np.ndarray, q: float) -> str:
        return f"{np.percentile(a, q):6.1f}" if len(a) else "   n/a"

    print(f"feedback GUI benchmark: simulated lab {lab_id}, plates {rate:g} Hz x2, IMUs "
          f"{sim.imu_rate_hz:g} Hz x2, camera {sim.camera_rate_hz:g} Hz, treadmill, processor; "
          f"Qt platform {os.environ.get('QT_QPA_PLATFORM', 'default')}; timer {args.fps:g} fps")
    print(f"measured {wall:.1f} s; load average at start {load0[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"frames: {paints / wall:5.1f} painted/s (force plot), {ticks / wall:5.1f} timer frames/s "
          f"(target {args.fps:g})")
    print(f"GUI thread CPU: {100 * thread_cpu / wall:5.1f} % of one core "
          f"(frame slots alone {100 * frame_cpu / wall:4.1f} %, painting and Qt the rest); "
          f"whole GUI process {100 * proc_cpu / wall:5.1f} % (reader threads included)")
    print(f"latency, LSL sample time -> end of the first paint showing it (ms): "
          f"every left-plate sample n={len(lat_all_ms)}: p50 {pct(lat_all_ms, 50)} "
          f"p99 {pct(lat_all_ms, 99)} max {pct(lat_all_ms, 100)}")
    print(f"latency for foot strikes found by an independent pylsl reader (ms): "
          f"n={len(lat_strike_ms)}: p50 {pct(lat_strike_ms, 50)} p99 {pct(lat_strike_ms, 99)}")
    print("streams: " + "; ".join(f"{h.label} {h.stats.measured_rate_hz:.0f} Hz gaps {h.stats.gaps}"
                                  for h in health))
    print(f"participant display cue at the end: {pulse_seen}; role exit codes {codes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
