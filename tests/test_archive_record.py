"""`labsuite record` over real LSL on loopback: clean stops, kill -9, steps and stage tables."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from labsuite.archive.layout import spec_to_json
from labsuite.archive.reader import open_session
from labsuite.stages import StageRecord
from labsuite.steps import empty_steps, steps_to_rows
from labsuite.streams.contracts import Channel, StreamSpec, markers_spec, steps_spec
from labsuite.streams.messages import marker

RATE_HZ = 2000.0


class CounterOutlet:
    """A 2 kHz stream whose single channel counts samples, pushed in 10 ms chunks on a thread."""

    def __init__(self, source_id: str) -> None:
        import pylsl

        self.spec = StreamSpec(name=f"counter-{source_id}", kind="imu",
                               channels=(Channel("n", "count", "Counter"),), rate_hz=RATE_HZ,
                               dtype="float64", source_id=source_id)
        self.outlet = pylsl.StreamOutlet(self.spec.to_info(), 0, 60)
        self.t0 = pylsl.local_clock()
        self.n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CounterOutlet:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        # Destroy the outlet now: a process with several live outlets resolves slowly (see report).
        self.outlet = None

    def _run(self) -> None:
        import pylsl

        while not self._stop.wait(0.01):
            due = int((pylsl.local_clock() - self.t0) * RATE_HZ)
            if due > self.n:
                k = np.arange(self.n, due, dtype=np.float64)
                self.outlet.push_chunk(k.reshape(-1, 1), self.t0 + k / RATE_HZ)
                self.n = due


def _record_cmd(path, *sources, extra=()):
    return [sys.executable, "-m", "labsuite", "record", "--file", str(path), "--participant", "P01",
            "--streams", *sources, "--wait-s", "3", "--flush-s", "0.25", *extra]


def _check_counter(sd, t0):
    counter = sd.data[:, 0]
    assert len(counter) > 0
    # Contiguous from the first sample the inlet received: nothing lost, nothing doubled.
    assert np.array_equal(counter, counter[0] + np.arange(len(counter)))
    assert np.allclose(sd.timestamps_raw, t0 + counter / RATE_HZ, atol=1e-9)
    return counter


def test_kill_9_of_the_recorder_keeps_everything_up_to_the_last_flush(tmp_path, uid):
    path = tmp_path / "killed.h5"
    with CounterOutlet(uid) as src:
        proc = subprocess.Popen(_record_cmd(path, uid), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        written = 0
        try:
            deadline = time.monotonic() + 90
            pattern = re.compile(rf"counter-{uid}=(\d+)/(\d+)")
            while written < 6000 and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                m = pattern.search(line)
                if m:
                    written = int(m.group(1))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            err = proc.stderr.read()
            proc.stdout.close()
            proc.stderr.close()
        assert written >= 6000, err
        with open_session(path) as s:
            assert not s.complete
            counter = _check_counter(s.streams[uid], src.t0)
            # Every sample reported as written (flushed) before the kill is in the file.
            assert len(counter) >= written


_PUBLISHER = textwrap.dedent("""
    import json, sys
    import pylsl
    from labsuite.archive.layout import spec_from_json
    spec = spec_from_json(sys.argv[1])
    outlet = pylsl.StreamOutlet(spec.to_info())
    print("ready", flush=True)
    for line in sys.stdin:
        obj = json.loads(line)
        outlet.push_sample(obj["sample"], obj["ts"])
    print("done", flush=True)
""")


class Publisher:
    """One stream published by a child process (one outlet per process, as a role would)."""

    def __init__(self, spec: StreamSpec) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _PUBLISHER, spec_to_json(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def push(self, sample: list, ts: float) -> None:
        self.proc.stdin.write(json.dumps({"sample": sample, "ts": ts}) + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        out, _ = self.proc.communicate(timeout=30)
        assert "done" in out


def test_recorder_stores_streams_steps_stages_and_stops_cleanly(tmp_path, uid):
    import pylsl

    mk = markers_spec(f"{uid}-markers")
    st = steps_spec(f"{uid}-steps")
    mk_pub, st_pub = Publisher(mk), Publisher(st)
    path = tmp_path / "rec.h5"
    cmd = [*_record_cmd(path, uid, mk.source_id, st.source_id), "--mass-kg", "70"]
    try:
        with CounterOutlet(uid) as src:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                # Wait until the recorder reads all three streams before publishing events.
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    line = proc.stdout.readline()
                    assert line, proc.stderr.read()
                    if line.count("Hz") + line.count(" - ") >= 1 and "LOST" not in line and \
                            line.count("=") >= 3:
                        break
                steps = empty_steps(3)
                steps["foot"] = [0, 1, 0]
                steps["strike_s"] = [1.0, 1.4, 1.8]
                steps["valr_bw_per_s"] = [60.0, 62.5, np.nan]
                now = pylsl.local_clock()
                stage = StageRecord(0, "baseline", "baseline", now - 2, now, belt_speed_m_s=2.5,
                                    end_reason="time")
                mk_pub.push([marker("stage_start", stage="baseline")], now - 2)
                for row, t in zip(steps_to_rows(steps), [now - 1.0, now - 0.6, now - 0.2], strict=True):
                    st_pub.push(row.tolist(), t)
                mk_pub.push([marker("stage_end", **stage.to_marker_fields())], now)
                time.sleep(2.0)
                proc.send_signal(signal.SIGINT)
                _out, err = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    finally:
        mk_pub.close()
        st_pub.close()
    assert proc.returncode == 0, err
    with open_session(path) as s:
        assert s.complete and s.participant_id == "P01" and s.mass_kg == 70.0
        _check_counter(s.streams[uid], src.t0)
        assert s.stages == [stage]
        got = s.steps
        assert got["strike_s"].tolist() == [1.0, 1.4, 1.8]
        assert np.array_equal(got["valr_bw_per_s"], steps["valr_bw_per_s"], equal_nan=True)
        assert next(m["text"] for m in s.markers) == marker("stage_start", stage="baseline")
        assert len(s.streams[uid].clock_offsets) >= 1
        assert any(e["kind"] == "connected" and e["source_id"] == mk.source_id for e in s.events)


def test_record_cli_stops_after_duration_and_marks_the_file_complete(tmp_path, uid):
    path = tmp_path / "d.h5"
    with CounterOutlet(uid) as src:
        res = subprocess.run(_record_cmd(path, uid, extra=("--duration", "2")), capture_output=True,
                             text=True, timeout=100)
    assert res.returncode == 0, res.stderr
    assert "closed" in res.stdout
    with open_session(path) as s:
        assert s.complete
        counter = _check_counter(s.streams[uid], src.t0)
        assert len(counter) > 2000


def test_record_cli_errors_are_clear(tmp_path, uid):
    res = subprocess.run([sys.executable, "-m", "labsuite", "record", "--participant", "Jane Doe",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "participant_id" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_record_cli_closes_the_file_on_ctrl_c_and_sigterm(tmp_path, uid, sig):
    path = tmp_path / "c.h5"
    with CounterOutlet(uid):
        proc = subprocess.Popen(_record_cmd(path, uid), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if f"counter-{uid}=" in line and not re.search(rf"counter-{uid}=0/", line):
                    break
            proc.send_signal(sig)
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    with open_session(path) as s:
        assert s.complete and s.streams[uid].n_samples > 0


def test_record_runs_the_live_processor_so_the_file_has_steps(tmp_path, uid, shared_data):
    """RBDS001 replayed as a live plate, recorded with --processor on: steps land in the file."""
    prefix = f"rr{uid[-6:]}-"
    sid = f"{prefix}c3d-RBDS001runT35-fp-single"
    replay = subprocess.Popen([sys.executable, "-m", "labsuite", "replay",
                               str(shared_data / "rbds" / "RBDS001runT35.c3d"), "--source-prefix", prefix,
                               "--lead-s", "0", "--loop", "--quiet"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    path = tmp_path / "steps.h5"
    try:
        assert "publishing" in replay.stdout.readline()
        res = subprocess.run(_record_cmd(path, sid, extra=("--duration", "12", "--processor", "on",
                                                           "--mass-kg", "62")),
                             capture_output=True, text=True, timeout=110)
    finally:
        replay.terminate()
        replay.communicate(timeout=30)
    assert res.returncode == 0, res.stderr
    assert "live processor" in res.stderr
    with open_session(path) as s:
        assert s.complete
        steps = s.steps
        assert len(steps) >= 10  # about 2.9 steps/s once the processor runs
        assert set(steps["foot"].tolist()) == {0.0, 1.0}
        assert np.all(np.diff(steps["strike_s"]) > 0)
        assert any(sd.spec.kind == "steps" for sd in s.streams.values())
        # Contact times of a 3.5 m/s forefoot runner (RBDS S1: about 0.22 s).
        assert 0.15 < float(np.median(steps["contact_s"])) < 0.3


def test_record_processor_on_without_mass_is_a_clear_error(tmp_path, uid):
    with CounterOutlet(uid):
        res = subprocess.run(_record_cmd(tmp_path / "x.h5", uid, extra=("--processor", "on")),
                             capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "--processor on" in res.stderr and "Traceback" not in res.stderr


def test_a_named_stream_that_starts_late_is_recorded_in_a_spare_slot(tmp_path, uid):
    import pylsl

    mk = markers_spec(f"{uid}-late-markers")
    path = tmp_path / "late.h5"
    with CounterOutlet(uid) as src:
        proc = subprocess.Popen(_record_cmd(path, uid, mk.source_id), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        pub = None
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # recording the counter, markers not there yet
                line = proc.stdout.readline()
                assert line
                if re.search(rf"counter-{uid}=[1-9]", line):
                    break
            pub = Publisher(mk)  # the marker stream appears after the start
            connected = False
            deadline = time.monotonic() + 75
            while time.monotonic() < deadline and not connected:
                line = proc.stdout.readline()
                part = line.split("labsuite-markers=", 1)
                connected = len(part) == 2 and "LOST" not in part[1][:30]
            assert connected, "the recorder never connected to the late stream"
            stage = StageRecord(0, "late", "baseline", 1.0, 2.0, end_reason="time")
            pub.push([marker("stage_end", **stage.to_marker_fields())], pylsl.local_clock())
            time.sleep(2.0)
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            if pub is not None:
                pub.close()
    assert proc.returncode == 0, err
    with open_session(path) as s:
        assert s.complete
        _check_counter(s.streams[uid], src.t0)
        late = s.streams[mk.source_id]
        assert late.late and late.key.startswith("late_")
        assert s.stages == [stage]
        assert any(e["kind"] == "late_stream" for e in s.events)
