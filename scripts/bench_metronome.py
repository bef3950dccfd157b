"""Benchmark the metronome's timing on a real sound server: what was played against what was reported.

Usage: python scripts/bench_metronome.py [--duration-s 60] [--spm 170] [--load none|cpu|lab]
       [--gil-hog] [--latency-s 0.1] [--backends session,role,sounddevice,qt-pull,qt-effect]

Starts a private PulseAudio null sink (labsuite.audio.nullsink), records its monitor with parec,
runs the click track for ``--duration-s`` with a tempo change (+6 %) halfway, detects the click
onsets in the recording and compares them with the times each backend reported for its clicks:

* ``session``: a whole ``labsuite run --simulate --headless`` session as deployed (simulated lab,
  processor, recorder, session, metronome role): a standing stage, then two cadence stages at
  ``--spm`` and +6 % with a metronome cue; times are the beat markers in the session file.
* ``role``: labsuite's metronome role alone, in its own supervised process (labsuite.audio.role),
  tempo by session markers over LSL, times from its beat markers.
* ``sounddevice``: the same Metronome inside this process (PortAudio callback, clicks at sample
  frames, DAC times), where ``--gil-hog`` competes with it for the GIL.
* ``qt-pull``: Qt Multimedia's QAudioOutput in pull mode, clicks at sample frames; Qt reports no
  latency, so the time is the best estimate Qt allows (write time + buffered bytes).
* ``qt-effect``: QSoundEffect.play() fired by a precise QTimer (the time is the request).

Prints per backend: clicks recorded vs reported, the interval error (recorded - reported
inter-onset intervals) p50/p99/max, the spread of the onset-vs-reported offset (SD, max-min),
underflows, beats flagged as disrupted, and how much audio the null sink's recording lost against
the wall clock (a starved sound server skips time; then no comparison is valid). ``--load cpu``
runs a busy process per core; ``--load lab`` runs ``labsuite demo --no-sound`` (the full simulated
lab, processor, recorder and session; silent, so only the measured clicks are on the sink)
meanwhile; ``--gil-hog`` adds a busy Python thread inside this process (what a session process
would add to an in-process metronome).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np

from labsuite.audio.clicks import ClickSettings, synthesize
from labsuite.audio.nullsink import NullSinkServer
from labsuite.audio.onsets import detect_onsets
from labsuite.errors import LabsuiteError

RATE = 48000


def run_role(args: argparse.Namespace) -> tuple[list[float], dict]:
    """The metronome as deployed: its own supervised process, tempo by session markers over LSL."""
    import json
    import uuid

    import pylsl

    from labsuite.audio.metronome import OutputSettings
    from labsuite.audio.role import EVENT_BEAT_DISRUPTED, MetronomeRoleSettings, run_metronome
    from labsuite.processes import Supervisor
    from labsuite.streams import messages as msg
    from labsuite.streams.contracts import markers_spec

    uid = f"bench-{uuid.uuid4().hex[:10]}"
    session = pylsl.StreamOutlet(markers_spec(f"{uid}-markers", name=f"{uid}-markers").to_info())
    settings = MetronomeRoleSettings(session_markers_source_id=f"{uid}-markers",
                                     beats_source_id=f"{uid}-beats", name=f"{uid}-beats",
                                     output=OutputSettings(latency_s=args.latency_s))
    times: dict[int, float] = {}
    disrupted: set[int] = set()
    sup = Supervisor()
    sup.add("metronome", run_metronome, {"settings": settings}, restart=False)

    def pull(inlet: object, until: float) -> None:
        while pylsl.local_clock() < until:
            got, ts = inlet.pull_sample(timeout=0.2)  # type: ignore[attr-defined]
            if got is None:
                continue
            f = json.loads(got[0])
            if f["event"] == msg.EVENT_BEAT:
                times[f["n"]] = ts
            elif f["event"] == EVENT_BEAT_DISRUPTED:
                disrupted.add(f["n"])

    with sup:
        found = []
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline:
            found = pylsl.resolve_byprop("source_id", f"{uid}-beats", timeout=1.0)
        if not found:
            raise SystemExit("the metronome role did not publish its beat stream within 30 s")
        inlet = pylsl.StreamInlet(found[0], max_buflen=60)
        inlet.open_stream(timeout=10)
        audio = inlet.info(timeout=10).desc().child("setup").child("audio")
        latency_s = float(audio.child_value("output_latency_s"))
        time.sleep(1.0)  # the role's reader finds the session stream
        session.push_sample([msg.marker(msg.EVENT_METRONOME, spm=args.spm)])
        pull(inlet, pylsl.local_clock() + args.duration_s / 2)
        session.push_sample([msg.marker(msg.EVENT_METRONOME, spm=args.spm * 1.06)])
        pull(inlet, pylsl.local_clock() + args.duration_s / 2)
        session.push_sample([msg.marker(msg.EVENT_METRONOME, spm=None)])
        pull(inlet, pylsl.local_clock() + 1.5)
    ordered = [times[n] for n in sorted(times)]
    return ordered, {"underflows": "in role", "disrupted": len(disrupted),
                     "clean": [n not in disrupted for n in sorted(times)],
                     "reported_latency_ms": 1e3 * latency_s}


SESSION_PROTOCOL = """\
schema: labsuite-protocol/1
name: bench-metronome
speed_m_s: 3.0
safety: {{accel_m_s2: 1.5, force_timeout_s: 3.0}}
checkins: {{at_start: false, at_stage_boundaries: false}}
simulation: {{mode: run, preferred_cadence_spm: {spm:g}}}
stages:
  - {{name: stand, kind: quiet_standing, duration_s: 3}}
  - {{name: a, kind: cadence, duration_s: {half:g}, target_spm: {spm:g}, cues: {{metronome: {{}}}}}}
  - {{name: b, kind: cadence, duration_s: {half:g}, target_spm: {fast:.1f}, cues: {{metronome: {{}}}}}}
"""


def run_session(args: argparse.Namespace, tmp: Path) -> tuple[list[float], dict]:
    """A whole simulated session as deployed; the beats and flags are read from its session file."""
    import json
    import uuid

    from labsuite.archive.reader import open_session

    proto = tmp / "bench-session.yaml"
    proto.write_text(SESSION_PROTOCOL.format(spm=args.spm, fast=args.spm * 1.06, half=args.duration_s / 2))
    out = tmp / "bench-sessions"
    proc = subprocess.run(
        [sys.executable, "-m", "labsuite", "run", str(proto), "--participant", "BENCH", "--simulate",
         "--headless", "--auto-start", "--quiet", "--out", str(out), "--lab-id",
         f"bench-{uuid.uuid4().hex[:8]}"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=args.duration_s + 300)
    files = sorted(out.glob("BENCH_*.h5"))
    if proc.returncode != 0 or len(files) != 1:
        raise SystemExit(f"the session failed (exit {proc.returncode}): {proc.stdout[-1500:]}"
                         f"{proc.stderr[-1500:]}")
    with open_session(files[0]) as f:
        markers = f.markers
        texts = [json.loads(t) for t in markers["text"]]
        beats = [(n, float(ts)) for ts, t in zip(markers["time_s"], texts, strict=True)
                 if t.get("event") == "beat" and (n := t["n"]) is not None]
        disrupted = {t["n"] for t in texts if t.get("event") == "beat_disrupted"}
        latency = next((float(s.spec.setup["audio"]["output_latency_s"]) for s in f.streams.values()
                        if "audio" in (s.spec.setup or {})), float("nan"))
    beats.sort()
    return [t for _, t in beats], {"underflows": "in role", "disrupted": len(disrupted),
                                   "clean": [n not in disrupted for n, _ in beats],
                                   "reported_latency_ms": 1e3 * latency}


def run_sounddevice(args: argparse.Namespace) -> tuple[list[float], dict]:
    import pylsl

    from labsuite.audio.metronome import Beat, Metronome, OutputSettings

    times: list[float] = []
    numbers: list[int] = []
    disrupted: set[int] = set()

    def on_beat(beat: Beat) -> None:
        times.append(beat.t_lsl_s)
        numbers.append(beat.n)

    m = Metronome(OutputSettings(latency_s=args.latency_s), ClickSettings(), on_beat=on_beat,
                  on_disrupted=lambda beat: disrupted.add(beat.n)).open()
    try:
        m.set_tempo(args.spm)
        time.sleep(args.duration_s / 2)
        m.set_tempo(args.spm * 1.06)
        time.sleep(args.duration_s / 2)
        m.set_tempo(None)
        time.sleep(max(0.0, times[-1] - pylsl.local_clock()) + 2.0)  # the last judgements
        stats = m.stats()
        latency = m.device.output_latency_s if m.device else float("nan")
    finally:
        m.close()
    return times, {"underflows": stats["underflows"], "disrupted": stats["disrupted"],
                   "clean": [n not in disrupted for n in numbers], "reported_latency_ms": 1e3 * latency}


def _qt_app():  # type: ignore[no-untyped-def]
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt5 import QtWidgets

    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


def run_qt_pull(args: argparse.Namespace) -> tuple[list[float], dict]:
    import pylsl
    from PyQt5 import QtCore, QtMultimedia

    app = _qt_app()
    fmt = QtMultimedia.QAudioFormat()
    fmt.setSampleRate(RATE)
    fmt.setChannelCount(2)
    fmt.setSampleSize(16)
    fmt.setCodec("audio/pcm")
    fmt.setByteOrder(QtMultimedia.QAudioFormat.LittleEndian)
    fmt.setSampleType(QtMultimedia.QAudioFormat.SignedInt)
    click = (synthesize(ClickSettings(), RATE) * 32767).astype(np.int16)
    times: list[float] = []
    state = {"frame": 0, "next": float(RATE), "period": 60.0 * RATE / args.spm, "on": 1.0}
    out = QtMultimedia.QAudioOutput(fmt)
    out.setBufferSize(int(args.latency_s * RATE) * 4)
    active: list[int] = []

    class Source(QtCore.QIODevice):
        def readData(self, maxlen: int) -> bytes:
            frames = maxlen // 4
            start = state["frame"]
            now = pylsl.local_clock()
            queued = max(0, out.bufferSize() - maxlen) // 4
            buf = np.zeros((frames, 2), dtype=np.int32)
            while state["on"] and state["next"] < start + frames:
                onset = round(state["next"])
                active.append(onset)
                times.append(now + (queued + onset - start) / RATE)
                state["next"] += state["period"]
            for onset in list(active):
                lo, src = max(0, onset - start), max(0, start - onset)
                n = min(frames - lo, len(click) - src)
                if n > 0:
                    buf[lo:lo + n] += click[src:src + n, None]
                if onset + len(click) <= start + frames:
                    active.remove(onset)
            state["frame"] = start + frames
            return np.clip(buf, -32768, 32767).astype(np.int16).tobytes()

        def writeData(self, data: bytes) -> int:
            return 0

        def bytesAvailable(self) -> int:
            return 1 << 20

        def isSequential(self) -> bool:
            return True

    src = Source()
    src.open(QtCore.QIODevice.ReadOnly)
    out.start(src)

    def change() -> None:
        state["period"] = 60.0 * RATE / (args.spm * 1.06)

    QtCore.QTimer.singleShot(int(500 * args.duration_s), change)
    QtCore.QTimer.singleShot(int(1000 * args.duration_s), lambda: state.update(on=0.0))
    QtCore.QTimer.singleShot(int(1000 * args.duration_s) + 1000, app.quit)
    app.exec_()
    out.stop()
    return times, {"underflows": "n/a", "disrupted": "n/a", "reported_latency_ms": "n/a (Qt has none)"}


def run_qt_effect(args: argparse.Namespace, tmp: Path) -> tuple[list[float], dict]:
    import pylsl
    from PyQt5 import QtCore, QtMultimedia

    app = _qt_app()
    path = tmp / "click.wav"
    samples = (synthesize(ClickSettings(), RATE) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.tobytes())
    effect = QtMultimedia.QSoundEffect()
    effect.setSource(QtCore.QUrl.fromLocalFile(str(path)))
    times: list[float] = []
    deadline = time.monotonic() + 5
    while effect.status() != QtMultimedia.QSoundEffect.Ready and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    timer = QtCore.QTimer()
    timer.setTimerType(QtCore.Qt.PreciseTimer)

    def fire() -> None:
        times.append(pylsl.local_clock())
        effect.play()

    timer.timeout.connect(fire)
    timer.start(round(60000 / args.spm))
    faster_ms = round(60000 / (args.spm * 1.06))
    QtCore.QTimer.singleShot(int(500 * args.duration_s), lambda: timer.setInterval(faster_ms))
    QtCore.QTimer.singleShot(int(1000 * args.duration_s), timer.stop)
    QtCore.QTimer.singleShot(int(1000 * args.duration_s) + 1000, app.quit)
    app.exec_()
    return times, {"underflows": "n/a", "disrupted": "n/a", "reported_latency_ms": "n/a (Qt has none)"}


def compare(x: np.ndarray, reported: list[float], period_s: float) -> dict:
    """Match recorded onsets to reported times; interval and offset statistics in ms."""
    onsets = detect_onsets(x, RATE) / RATE
    t = np.asarray(reported)
    out: dict = {"recorded": len(onsets), "reported": len(t)}
    if not len(onsets) or not len(t):
        return out
    # align on the median of the first few offsets, then pair each report with the nearest onset
    k = min(5, len(onsets), len(t))
    shift = float(np.median(onsets[:k] - t[:k]))
    idx = np.clip(np.searchsorted(onsets, t + shift), 1, len(onsets) - 1)
    nearest = np.where(np.abs(onsets[idx] - t - shift) < np.abs(onsets[idx - 1] - t - shift), idx, idx - 1)
    ok = np.abs(onsets[nearest] - t - shift) < period_s / 3
    pairs_on, pairs_t = onsets[nearest[ok]], t[ok]
    out["matched"] = int(ok.sum())
    offset = pairs_on - pairs_t
    err = np.abs(np.diff(pairs_on) - np.diff(pairs_t))
    out.update(ioi_p50=1e3 * np.percentile(err, 50), ioi_p99=1e3 * np.percentile(err, 99),
               ioi_max=1e3 * err.max(), offset_sd=1e3 * np.std(offset), offset_range=1e3 * np.ptp(offset))
    return out


class Load:
    """The requested background load; stopped by ``stop()``."""

    def __init__(self, kind: str, gil_hog: bool, tmp: Path) -> None:
        self.procs: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self.kind = kind
        if kind == "cpu":
            for _ in range(os.cpu_count() or 2):
                self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        elif kind == "lab":
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "labsuite", "demo", "--quiet", "--no-sound", "--out", str(tmp)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
            time.sleep(20.0)  # drivers, processor and recorder up and the belt moving
        if gil_hog:
            threading.Thread(target=self._hog, daemon=True).start()

    def _hog(self) -> None:
        while not self._stop.is_set():
            sum(i * i for i in range(10_000))

    def stop(self) -> None:
        """End the load (the demo by SIGINT, so it stops its processes itself)."""
        self._stop.set()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT if self.kind == "lab" else signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL) if self.kind == "lab" else p.kill()
                p.wait(5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=60.0)
    ap.add_argument("--spm", type=float, default=170.0)
    ap.add_argument("--latency-s", type=float, default=0.1)
    ap.add_argument("--load", choices=("none", "cpu", "lab"), default="none")
    ap.add_argument("--gil-hog", action="store_true")
    ap.add_argument("--backends", default="role")
    args = ap.parse_args()
    backends = args.backends.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-metronome-") as tmpdir, \
            NullSinkServer(rate_hz=RATE) as srv:
        tmp = Path(tmpdir)
        os.environ.update(srv.client_env())
        load = Load(args.load, args.gil_hog, tmp)
        try:
            for name in backends:
                rec = srv.record(tmp / f"{name}.raw")
                time.sleep(0.3)
                try:
                    if name == "session":
                        times, info = run_session(args, tmp)
                    elif name == "role":
                        times, info = run_role(args)
                    elif name == "sounddevice":
                        times, info = run_sounddevice(args)
                    elif name == "qt-pull":
                        times, info = run_qt_pull(args)
                    elif name == "qt-effect":
                        times, info = run_qt_effect(args, tmp)
                    else:
                        raise SystemExit(f"unknown backend {name!r}")
                except LabsuiteError as exc:  # a backend that cannot play is a result too
                    rec.stop()
                    rows.append((name, {"recorded": 0, "reported": 0, "error": str(exc)}, {}))
                    continue
                time.sleep(0.5)
                x = rec.stop()
                info["lost_s"] = rec.wall_s - rec.recorded_s
                period_s = 60.0 / (args.spm * 1.06)
                rows.append((name, compare(x, times, period_s), info))
                if "clean" in info:  # the beats not flagged 'disrupted': what an analysis keeps
                    kept = [t for t, ok in zip(times, info["clean"], strict=True) if ok]
                    rows.append((f"{name} clean", compare(x, kept, period_s), info))
        finally:
            load.stop()
    print(f"metronome on a PulseAudio null sink: {args.duration_s:g} s at {args.spm:g} spm then "
          f"{args.spm * 1.06:.1f} spm, load={args.load}{' + GIL hog thread' if args.gil_hog else ''}, "
          f"latency {args.latency_s:g} s, load average {os.getloadavg()[0]:.1f}")
    print(f"{'backend':<17} {'clicks rec/rep':>10} {'IOI err p50/p99/max ms':>24} "
          f"{'offset SD/range ms':>19} {'underflows':>10} {'disrupted':>9} {'rec. lost s':>11}"
          "  reported latency ms")
    for name, c, info in rows:
        if "ioi_p50" not in c:
            note = c.get("error", "(nothing to compare)")
            print(f"{name:<17} {c['recorded']:>6}/{c['reported']:<8} {note}")
            continue
        print(f"{name:<17} {c['recorded']:>6}/{c['reported']:<8} "
              f"{c['ioi_p50']:>7.3f}/{c['ioi_p99']:.3f}/{c['ioi_max']:.3f}   "
              f"{c['offset_sd']:>8.3f}/{c['offset_range']:.3f}  {info['underflows']!s:>10} "
              f"{info['disrupted']!s:>9} {info['lost_s']:>11.2f}  {info['reported_latency_ms']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
