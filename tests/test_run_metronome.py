"""``labsuite run --simulate --headless`` with the audible metronome, heard on a private null sink.

One short session (a tempo change between two cadence stages) plays its clicks on a private
PulseAudio null sink while parec records the sink's monitor. In the session file: one click in the
recording for every beat marker, inter-onset intervals equal to the marker intervals (SD <= 1 ms)
and a constant onset-minus-marker offset (SD <= 1 ms) across the tempo change. Without a sound
output the same command refuses to start, naming the device it tried, unless --no-sound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from labsuite import ids
from labsuite.archive.reader import open_session
from labsuite.audio.nullsink import NullSinkServer
from labsuite.audio.onsets import detect_onsets

# each test module's sessions take 40-60 s on a loaded 2-core machine (the module fixture runs one)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RATE = 48000
SLOW_SPM, FAST_SPM = 165.0, 178.0
PROTOCOL = f"""\
schema: labsuite-protocol/1
name: metronome-run
speed_m_s: 3.0
# a generous force watchdog: this test is about the clicks, on a shared 2-core machine
safety: {{accel_m_s2: 1.5, force_timeout_s: 3.0}}
checkins: {{at_start: false, at_stage_boundaries: false}}
simulation: {{mode: run, preferred_cadence_spm: 165}}
stages:
  # standing first: the processor's kernels load while the belt is still
  - {{name: stand, kind: quiet_standing, duration_s: 3}}
  - {{name: slow, kind: cadence, duration_s: 7, target_spm: {SLOW_SPM:g}, cues: {{metronome: {{}}}}}}
  - name: fast
    kind: cadence
    duration_s: 7
    target_spm: {FAST_SPM:g}
    cues: {{metronome: {{spm: target, sound: tone, tone_hz: 1200, volume_db: -10}}}}
"""


def _run(tmp_path: Path, lab_id: str, env: dict[str, str], *extra: str,
         timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    import signal

    proto = tmp_path / "metronome.yaml"
    proto.write_text(PROTOCOL)
    cmd = [sys.executable, "-m", "labsuite", "run", str(proto), "--participant", "M01", "--simulate",
           "--headless", "--auto-start", "--out", str(tmp_path / "out"), "--lab-id", lab_id, *extra]
    # its own process group: on a timeout the run and every role it started are stopped, not
    # only the run (its role processes would outlive it)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the run stops its roles itself
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"labsuite run did not end within {timeout_s:g} s: {out[-2000:]}{err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One session on a private null sink, its output, its file and the recording of the sink."""
    import uuid

    tmp = tmp_path_factory.mktemp("run-metronome")
    lab_id = f"metro-{uuid.uuid4().hex[:8]}"
    with NullSinkServer(rate_hz=RATE) as server:
        env = {**os.environ, **server.client_env()}
        recording = server.record(tmp / "sink.raw")
        try:
            proc = _run(tmp, lab_id, env)
        finally:
            samples = recording.stop()
        files = sorted((tmp / "out").glob("M01_*.h5"))
        yield {"proc": proc, "files": files, "samples": samples, "lab_id": lab_id,
               "lost_s": recording.wall_s - recording.recorded_s}


def test_the_session_plays_its_beats_and_the_file_keeps_them(played: dict) -> None:
    proc = played["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sound: clicks on" in proc.stdout and "reported output latency" in proc.stdout
    assert len(played["files"]) == 1
    beats_sid = ids.beats_source_id(played["lab_id"])
    with open_session(played["files"][0]) as f:
        assert f.complete
        assert beats_sid in {s.spec.source_id for s in f.streams.values()}  # the recorder kept it
        markers = f.markers
        texts = [json.loads(t) for t in markers["text"]]
        start = next(t for t in texts if t.get("event") == "session_start")
        assert start["beats"] == "audio"
        beats = [(float(ts), t) for ts, t, sid in zip(markers["time_s"], texts, markers["source_id"],
                                                     strict=True) if t.get("event") == "beat"]
        # every beat in the file is a click of the metronome role, none is the session's timer
        assert beats and all(sid == beats_sid for sid in
                             markers["source_id"][[t.get("event") == "beat" for t in texts]])
        # the file's times are the recorder's corrected ones: the stamped DAC time plus the clock
        # offset it measured to the role's process (tens of µs on one machine)
        assert all(t["clock"] == "dac" and t["dac_lsl_s"] == pytest.approx(ts, abs=2e-4)
                   for ts, t in beats)
        assert {t["sound"] for _, t in beats} == {"woodblock", "tone"}
        stages = f.stages[1:]
    # the tempo change is in the beats: both tempi, in stage order
    spms = [t["spm"] for _, t in beats]
    assert spms[0] == SLOW_SPM and spms[-1] == FAST_SPM and sorted(set(spms)) == [SLOW_SPM, FAST_SPM]
    slow, _ = stages
    in_slow = [ts for ts, t in beats if slow.start_s <= ts < slow.end_s + 0.2]
    assert len(in_slow) == pytest.approx((slow.end_s - slow.start_s) * SLOW_SPM / 60, abs=2)


def test_clicks_heard_are_the_beat_markers_across_the_tempo_change(played: dict) -> None:
    proc = played["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert played["lost_s"] < 0.1, f"the recording lost {played['lost_s']:.2f} s: nothing to compare"
    with open_session(played["files"][0]) as f:
        markers = f.markers
        texts = [json.loads(t) for t in markers["text"]]
        beat_t = np.array([ts for ts, t in zip(markers["time_s"], texts, strict=True)
                           if t.get("event") == "beat"])
        flagged = {t["n"] for t in texts if t.get("event") == "beat_disrupted"}
    onsets_s = detect_onsets(played["samples"], RATE) / RATE
    # one click in the recording for every beat marker in the file
    assert len(onsets_s) == len(beat_t), (len(onsets_s), len(beat_t))
    assert not flagged, f"beats flagged disrupted: {sorted(flagged)} (a stalled sound server)"
    ioi_err_s = np.diff(onsets_s) - np.diff(beat_t)
    offset_s = onsets_s - beat_t  # recording clock minus LSL: constant if each marker is its click
    change = int(np.argmax(np.diff(beat_t) < 60 / SLOW_SPM - 0.01))  # first fast interval
    assert 5 < change < len(beat_t) - 5, "the tempo change is not inside the run"
    print(f"run metronome: {len(beat_t)} beats = {len(onsets_s)} clicks; IOI error SD "
          f"{1e3 * np.std(ioi_err_s):.3f} ms (max {1e3 * np.abs(ioi_err_s).max():.3f}); offset SD "
          f"{1e3 * np.std(offset_s):.3f} ms, before/after the change "
          f"{1e3 * np.mean(offset_s[:change]):.3f}/{1e3 * np.mean(offset_s[change + 1:]):.3f} ms")
    assert np.std(ioi_err_s) <= 0.001
    assert np.std(offset_s) <= 0.001
    assert abs(np.mean(offset_s[:change]) - np.mean(offset_s[change + 1:])) <= 0.001


def test_without_a_sound_output_the_run_refuses_naming_the_device_unless_no_sound(tmp_path: Path,
                                                                                  uid: str) -> None:
    # a sound server that is not there: PortAudio (through ALSA's pulse plugin) finds no output
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(PULSE_SERVER=f"unix:{tmp_path / 'no-such-server'}", PULSE_RUNTIME_PATH=str(tmp_path),
               PULSE_COOKIE=str(tmp_path / "cookie"))
    proc = _run(tmp_path, uid, env, "--quiet", timeout_s=120)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "the system default output" in err[0] and "--no-sound" in err[0], err[0]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.h5"))
    with pytest.raises(subprocess.CalledProcessError):  # --audio-device and --no-sound contradict
        subprocess.run([sys.executable, "-m", "labsuite", "run", str(tmp_path / "metronome.yaml"),
                        "--participant", "M01", "--simulate", "--no-sound", "--audio-device", "x"],
                       check=True, capture_output=True, env=env, timeout=60)


RESTART = """\
schema: labsuite-protocol/1
name: metronome-restart
speed_m_s: 3.0
safety: {accel_m_s2: 1.5, force_timeout_s: 3.0}
checkins: {at_start: false, at_stage_boundaries: false}
simulation: {mode: run, preferred_cadence_spm: 165}
stages:
  - {name: stand, kind: quiet_standing, duration_s: 3}
  - {name: cued, kind: cadence, duration_s: 11, target_spm: 170, cues: {metronome: {}}}
"""


def test_a_killed_metronome_role_is_restarted_and_picks_the_beat_up(tmp_path: Path, uid: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL the metronome role mid-stage: the supervisor restarts it and, told the tempo again by
    the session within a second, it clicks on; the gap and the new start are in the beat stream."""
    import threading

    import pylsl

    from labsuite.lab.run import RunOptions, run_protocol
    from labsuite.markers import StageStart

    proto = tmp_path / "restart.yaml"
    proto.write_text(RESTART)
    killed: dict[str, float] = {}
    holder: dict = {}

    def on_action(action) -> None:  # type: ignore[no-untyped-def]
        if isinstance(action.marker, StageStart) and action.marker.name == "cued":
            def kill() -> None:
                threading.Event().wait(3.0)
                killed["t"] = pylsl.local_clock()
                holder["sup"].kill("metronome")
            threading.Thread(target=kill, daemon=True).start()

    with NullSinkServer(rate_hz=RATE) as server:
        for k, v in server.client_env().items():
            monkeypatch.setenv(k, v)  # the roles are spawned with this environment
        result = run_protocol(
            RunOptions(protocol_path=proto, participant_id="M02", simulate=True, out_dir=tmp_path / "out",
                       lab_id=uid, connect_timeout_s=60.0, auto_start=True),
            on_action=on_action, supervisor_hook=lambda sup: holder.__setitem__("sup", sup))
    assert result.end_reason == "completed", result.log[-10:]
    assert any(e.startswith("metronome: exited") for e in result.role_events), result.role_events
    assert sum(e.startswith("metronome: started") for e in result.role_events) == 2
    with open_session(result.session_file) as f:
        markers = f.markers
        texts = [json.loads(t) for t in markers["text"]]
        beats = [(float(ts), t["n"]) for ts, t in zip(markers["time_s"], texts, strict=True)
                 if t.get("event") == "beat"]
        cued = f.stages[1]
    before = [(ts, n) for ts, n in beats if ts < killed["t"]]
    after = [(ts, n) for ts, n in beats if ts > killed["t"] + 0.2]
    assert len(before) >= 6 and len(after) >= 5, (len(before), len(after))
    assert after[0][1] == 1  # a new process counts from 1 again
    back_s = after[0][0] - killed["t"]
    print(f"metronome restart: first click {back_s:.2f} s after the kill")
    assert back_s < 6.0  # restart delay 0.5 s + device settling (1-2 s) + the next announcement (1 s)
    # after the restart it beats at the stage's tempo until the stage ends
    t_after = np.array([ts for ts, _ in after])
    assert np.median(np.diff(t_after)) == pytest.approx(60 / 170, rel=1e-3)
    assert t_after[-1] > cued.end_s - 1.0
