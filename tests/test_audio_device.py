"""The metronome on a real sound server: a private PulseAudio null sink, recorded with parec.

Every click the metronome reports must be in the recording, one for one, at the reported intervals
(SD <= 1 ms) and at a constant offset from the reported DAC times (SD <= 1 ms), across a tempo change.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from labsuite.audio.clicks import ClickSettings
from labsuite.audio.nullsink import NullSinkServer
from labsuite.audio.onsets import detect_onsets

RATE = 48000


@pytest.fixture(scope="module")
def null_sink() -> Iterator[NullSinkServer]:
    """A private PulseAudio for this module; this process and its children reach it by PULSE_SERVER."""
    server = NullSinkServer(rate_hz=RATE).start()
    saved = {k: os.environ.get(k) for k in server.client_env()}
    os.environ.update(server.client_env())
    if "sounddevice" in sys.modules:  # PortAudio lists devices once: list them again for this server
        sd = sys.modules["sounddevice"]
        sd._terminate()
        sd._initialize()
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


class _Run:
    """Play a tempo script through the metronome while parec records the sink's monitor."""

    def __init__(self, server: NullSinkServer, path: Path, click: ClickSettings | None = None) -> None:
        from labsuite.audio.metronome import Beat, Metronome

        self.beats: list[Beat] = []
        self._lock = threading.Lock()
        self.recording = server.record(path)
        self.metronome = Metronome(click=click, on_beat=self._on_beat).open()

    def _on_beat(self, beat) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            self.beats.append(beat)

    def wait_beats(self, n: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.beats) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.beats) >= n, f"only {len(self.beats)} of {n} beats within {timeout_s} s"

    def finish(self) -> tuple[np.ndarray, list]:
        import pylsl

        self.metronome.set_tempo(None)
        time.sleep(0.05)
        # let the last click leave the buffer and reach parec before the recording stops
        with self._lock:
            last = self.beats[-1].t_lsl_s if self.beats else 0.0
        time.sleep(max(0.0, last - pylsl.local_clock()) + 0.4)
        self.metronome.check()
        self.metronome.close()
        return self.recording.stop(), list(self.beats)


def _compare(x: np.ndarray, beats: list) -> tuple[np.ndarray, np.ndarray]:
    onsets = detect_onsets(x, RATE)
    assert len(onsets) == len(beats), f"{len(onsets)} clicks recorded, {len(beats)} beats reported"
    t = np.array([b.t_lsl_s for b in beats])
    offset = onsets / RATE - t
    ioi_error = np.diff(onsets) / RATE - np.diff(t)
    return offset, ioi_error


def test_clicks_match_reported_beats_across_a_tempo_change(null_sink: NullSinkServer,
                                                           tmp_path: Path) -> None:
    run = _Run(null_sink, tmp_path / "monitor.raw")
    run.metronome.set_tempo(180.0)
    run.wait_beats(12)
    run.metronome.set_tempo(150.0)
    run.wait_beats(24)
    x, beats = run.finish()
    # (an underflow under a loaded machine is allowed: it must not misdate a click, checked below)
    offset, ioi_error = _compare(x, beats)
    assert np.std(ioi_error) <= 0.001
    assert np.std(offset) <= 0.001
    # no double and no missing click at the change: both tempi were played and every interval is,
    # to the sample, the period of the tempo the beat reports
    spm = np.array([b.spm for b in beats])
    assert {180.0, 150.0} <= set(spm)
    _assert_sample_exact_periods(beats)
    assert [b.n for b in beats] == list(range(1, len(beats) + 1))
    # the click is written ahead and reported at its DAC time, not at the write
    lead = np.array([b.t_lsl_s - b.written_lsl_s for b in beats])
    assert np.all(lead > 0.5 * run.metronome.device.output_latency_s)


def _assert_sample_exact_periods(beats: list, start: int = 0, stop: int | None = None) -> None:
    """Each click's frame follows the previous by its tempo's period (within a sample), except that
    after a break of the device's timing (a new segment) a click may have waited for the timing to
    settle, so there it may only be later, never sooner."""
    chosen = beats[start:stop]
    gaps = np.diff([b.frame for b in chosen])
    periods = np.array([60.0 * RATE / b.spm for b in chosen[1:]])
    same = np.array([b.segment == a.segment for a, b in itertools.pairwise(chosen)])
    assert np.all(np.abs(gaps - periods)[same] <= 1.0), gaps - periods
    assert np.all((gaps - periods)[~same] >= -1.0), gaps - periods


def test_tempo_from_a_given_beat_and_stop_restart(null_sink: NullSinkServer, tmp_path: Path) -> None:
    run = _Run(null_sink, tmp_path / "monitor.raw", ClickSettings(sound="tone", volume_db=-12.0))
    run.metronome.set_tempo(120.0)
    run.metronome.set_tempo(160.0, from_beat=5)
    run.wait_beats(8)
    run.metronome.set_tempo(None)
    time.sleep(1.0)
    run.metronome.set_tempo(100.0)  # restart: never sooner than one new period after the last click
    run.wait_beats(11)
    x, beats = run.finish()
    assert [b.spm for b in beats[:8]] == [120.0] * 4 + [160.0] * 4
    _assert_sample_exact_periods(beats, 0, 8)
    _assert_sample_exact_periods(beats, 8)
    assert beats[8].frame - beats[7].frame >= 0.6 * RATE - 1
    offset, ioi_error = _compare(x, beats)
    assert np.std(offset) <= 0.001 and np.std(ioi_error) <= 0.001
    # the level is the volume setting: -12 dB re full scale
    assert 20 * np.log10(np.max(np.abs(x))) == pytest.approx(-12.0, abs=0.5)


def test_alternating_ears_put_each_click_in_one_channel(null_sink: NullSinkServer, tmp_path: Path) -> None:
    run = _Run(null_sink, tmp_path / "monitor.raw", ClickSettings(ear="alternate"))
    run.metronome.set_tempo(170.0)
    run.wait_beats(6)
    run.metronome.set_click(ClickSettings(ear="right"))
    run.wait_beats(12)
    x, beats = run.finish()
    onsets = detect_onsets(x, RATE)
    assert len(onsets) == len(beats)
    heard = []
    for on in onsets:
        seg = np.abs(x[on:on + RATE // 50])
        left, right = seg[:, 0].max(), seg[:, 1].max()
        heard.append("left" if left > 0 and right == 0 else "right" if right > 0 and left == 0 else "both")
    assert heard == [b.ear for b in beats]
    assert heard[:6] == ["left", "right"] * 3
    assert "right" in heard[6:] and "left" not in heard[-4:]


def test_stalls_of_the_sound_server_flag_every_misdated_click(null_sink: NullSinkServer,
                                                              tmp_path: Path) -> None:
    """Freeze the sound server (SIGSTOP) three times: clicks in flight may play late; each one whose
    reported time is off by more than 1 ms must be flagged disrupted, the others stay exact."""
    import signal

    disrupted: list[int] = []
    run = _Run(null_sink, tmp_path / "monitor.raw")
    run.metronome.on_disrupted = lambda beat: disrupted.append(beat.n)
    run.metronome.set_tempo(170.0)
    pid = null_sink.pid
    for _ in range(3):
        time.sleep(2.9)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.3)
        os.kill(pid, signal.SIGCONT)
    time.sleep(3.0)
    run.metronome.set_tempo(None)
    time.sleep(2.0)  # the last flags come 1.5 s after their click
    x, beats = run.finish()
    onsets = detect_onsets(x, RATE) / RATE
    t = np.array([b.t_lsl_s for b in beats])
    clean = np.array([b.n not in disrupted for b in beats])
    assert clean.sum() >= len(beats) // 3, f"{len(disrupted)} of {len(beats)} beats flagged"
    # the recording's time base: the median offset of the clean beats to their nearest onsets
    nearest = np.abs(onsets[None, :] - t[:, None] - np.median(onsets[:3] - t[:3])).argmin(axis=1)
    reference = float(np.median((onsets[nearest] - t)[clean]))
    err = onsets[None, :] - t[:, None] - reference  # every onset against every beat
    # every clean beat was heard once, exactly where reported ...
    hits = np.abs(err) <= 0.001
    heard = hits.sum(axis=1)
    wrong = [b.n for b, h, c in zip(beats, heard, clean, strict=True) if c and h != 1]
    assert not wrong, f"clean beats misdated or missing: {wrong} (flagged: {disrupted})"
    assert np.std(err[clean][hits[clean]]) <= 0.001
    # ... and every other sound belongs to a flagged beat (late by a stall, or cut in two by one)
    flagged = ~clean
    explained = hits[clean].any(axis=0) | ((err[flagged] > -0.001) & (err[flagged] < 1.0)).any(axis=0)
    assert np.all(explained), f"sounds no beat accounts for at {onsets[~explained]}"
    assert run.metronome.stats()["segments"] > 1  # the stalls were seen


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labsuite", "audio", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_audio_test_command_plays_and_reports(null_sink: NullSinkServer) -> None:
    done = _cli(null_sink.client_env(), "test", "--clicks", "4", "--spm", "150")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "device: default" in out and "sample rate: 48000 Hz" in out
    assert "reported output latency: 100.0 ms" in out
    assert out.count("leaves the DAC at LSL") == 4
    assert "4 clicks, 0 underflows" in out


def test_no_sound_server_is_a_clear_error_naming_the_device(tmp_path: Path) -> None:
    gone = {"PULSE_SERVER": f"unix:{tmp_path}/no-such-socket", "PULSE_RUNTIME_PATH": str(tmp_path),
            "PULSE_COOKIE": str(tmp_path / "cookie")}
    done = _cli(gone, "test")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "the system default output" in lines[0], done.stderr


def test_unknown_device_is_named_with_the_ones_there_are(null_sink: NullSinkServer) -> None:
    done = _cli(null_sink.client_env(), "test", "--device", "Focusrite")
    assert done.returncode == 1
    assert "output device 'Focusrite'" in done.stderr and "'default'" in done.stderr
    assert "Traceback" not in done.stderr


def test_metronome_role_follows_session_markers_and_publishes_dac_times(
        null_sink: NullSinkServer, tmp_path: Path, uid: str) -> None:
    """The role process: session metronome markers in (real LSL), clicks out, beat markers at DAC times."""
    import json

    import pylsl

    from labsuite.audio.role import MetronomeRoleSettings, run_metronome
    from labsuite.processes import Supervisor
    from labsuite.streams import messages as msg
    from labsuite.streams.contracts import markers_spec
    from tests.lsl_helpers import plain_inlet

    session = pylsl.StreamOutlet(markers_spec(f"{uid}-markers", name=f"{uid}-markers").to_info())
    settings = MetronomeRoleSettings(session_markers_source_id=f"{uid}-markers",
                                     beats_source_id=f"{uid}-beats", name=f"{uid}-beats",
                                     click=ClickSettings(sound="tone"))
    recording = null_sink.record(tmp_path / "monitor.raw")
    sup = Supervisor()
    sup.add("metronome", run_metronome, {"settings": settings}, restart=False)
    with sup:
        beats_in = plain_inlet(f"{uid}-beats")
        assert beats_in.info().desc().child("setup").child("audio").child_value("timestamps") == "dac"
        # the reader in the role needs a moment to find the session stream: announce until it clicks
        received: list[tuple[dict, float]] = []
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            session.push_sample([msg.marker(msg.EVENT_METRONOME, spm=165.0, ear="alternate")])
            text, ts = beats_in.pull_sample(timeout=0.5)
            if text is not None:
                received.append((json.loads(text[0]), ts))
        assert received, "no beat marker within 30 s"
        session.push_sample(['{"event":"metronome","spm":"fast"}'])  # rejected; the beat goes on
        while len(received) < 10:
            text, ts = beats_in.pull_sample(timeout=5.0)
            assert text is not None, "beats stopped"
            received.append((json.loads(text[0]), ts))
        changed_at = pylsl.local_clock()
        session.push_sample([msg.marker(msg.EVENT_METRONOME, spm=140.0)])
        while len(received) < 20:
            text, ts = beats_in.pull_sample(timeout=5.0)
            assert text is not None, "beats stopped"
            received.append((json.loads(text[0]), ts))
        session.push_sample([msg.marker(msg.EVENT_METRONOME, spm=None)])
        time.sleep(1.0)
        while True:  # beats written before the stop marker arrived
            text, ts = beats_in.pull_sample(timeout=0.2)
            if text is None:
                break
            received.append((json.loads(text[0]), ts))
        assert sup.alive()["metronome"]
    x = recording.stop()
    # the stream carries the beats and, 1.5 s after a click, a 'beat_disrupted' for a click in doubt
    assert {f["event"] for f, _ in received} <= {"beat", "beat_disrupted"}
    flagged = [f for f, _ in received if f["event"] == "beat_disrupted"]
    received = [(f, t) for f, t in received if f["event"] == "beat"]
    fields = [f for f, _ in received]
    stamps = np.array([t for _, t in received])
    assert [f["n"] for f in fields] == list(range(1, len(fields) + 1))
    assert {f["n"] for f in flagged} <= {f["n"] for f in fields}
    assert np.allclose(stamps, [f["dac_lsl_s"] for f in fields], atol=2e-6)  # timestamp = DAC time
    assert [f["ear"] for f in fields[:4]] == ["left", "right", "left", "right"]
    # the first 140 spm beat is the first one written after the marker could arrive
    first_new = next(i for i, f in enumerate(fields) if f["spm"] == 140.0)
    assert all(f["spm"] == 165.0 for f in fields[:first_new])
    assert stamps[first_new] - changed_at < 60 / 140 + 0.25
    # clicks heard one for one at the marker times (the recording covers the whole run)
    onsets = detect_onsets(x, RATE)
    assert len(onsets) == len(stamps)
    offset = onsets / RATE - stamps
    assert np.std(offset) <= 0.001
    assert np.std(np.diff(onsets) / RATE - np.diff(stamps)) <= 0.001
