"""Session writer and reader on real HDF5 files: round trip, crash safety, live reading, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from labsuite.archive.reader import corrected_times, open_session
from labsuite.archive.writer import SessionWriter, WriterSettings
from labsuite.errors import ArchiveError, ConfigError
from labsuite.stages import StageRecord
from labsuite.steps import STEP_FIELD_NAMES, empty_steps
from labsuite.streams.contracts import (
    camera_spec,
    force_plate_spec,
    imu_spec,
    markers_spec,
)
from labsuite.streams.messages import marker

CORNERS = np.array([[1.6, 0.5, 0.0], [1.6, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.5, 0.0]])


def _plate(uid, belt="left"):
    return force_plate_spec(f"{uid}-fp-{belt}", belt=belt, corners_m=CORNERS, origin_m=(0.0, 0.0, -0.04),
                            calibration_id="cal-1", rate_hz=2000.0)


def test_round_trip_keeps_every_value_and_the_metadata(tmp_path, uid):
    rng = np.random.default_rng(1)
    path = tmp_path / "s.h5"
    protocol = "stages:\n  - baseline\n"
    fp, mk, cam = _plate(uid), markers_spec(f"{uid}-mk"), camera_spec(f"{uid}-cam")
    w = SessionWriter(path, participant_id="P-007", mass_kg=62.0, protocol_text=protocol,
                      session_number=3, site="lab-a")
    h_fp, h_mk, h_cam = w.add_stream(fp), w.add_stream(mk), w.add_stream(cam)
    chunks = [rng.normal(0, 300, (rng.integers(1, 60), 6)).astype(np.float32) for _ in range(50)]
    ts_parts, t = [], 100.0
    for c in chunks:
        ts = t + np.arange(len(c)) / 2000.0
        t = ts[-1] + 1 / 2000.0
        ts_parts.append(ts)
        w.append(h_fp, ts, c)
    w.add_clock_offset(h_fp, 100.0, 0.25)
    w.add_clock_offset(h_fp, 110.0, 0.35)
    w.append(h_cam, [100.0, 100.01], np.array([[0.0, 0.0, -1.0], [1.0, 0.0, -1.0]]))
    stage = StageRecord(0, "baseline", "baseline", 100.0, 100.5, belt_speed_m_s=3.0, end_reason="time")
    w.append(h_mk, [100.0, 100.5], [[marker("stage_start", stage="baseline")],
                                    [marker("stage_end", **stage.to_marker_fields())]])
    w.append_marker(100.2, "operator note: ünïcode ok")
    steps = empty_steps(4)
    steps["strike_s"] = [100.1, 100.2, 100.3, 100.6]
    steps["foot"] = [0, 1, 0, 1]
    w.append_steps(steps)
    w.set_calibration({"plate": fp.source_id, "matrix": np.eye(6), "zero_n": [0.1] * 6})
    late = w.add_stream(imu_spec(f"{uid}-imu", location="left distal tibia", side="left"))
    w.append(late, [100.0, 100.001], np.arange(12, dtype=np.float32).reshape(2, 6))
    w.close()

    with open_session(path) as s:
        assert s.complete
        a = s.attrs
        assert a["participant_id"] == "P-007" and a["mass_kg"] == 62.0 and a["session_number"] == 3
        assert a["protocol_text"] == protocol
        assert a["protocol_sha256"] == hashlib.sha256(protocol.encode()).hexdigest()
        assert a["site"] == "lab-a"
        for key in ("labsuite_version", "pylsl_version", "liblsl_version", "numpy_version", "numba_version",
                    "h5py_version", "hdf5_version", "host", "start_time_utc"):
            assert a[key], key
        rec = s.streams[fp.source_id]
        assert (rec.spec.name, rec.spec.kind, rec.spec.channels, rec.spec.rate_hz, rec.spec.dtype) == (
            fp.name, fp.kind, fp.channels, fp.rate_hz, fp.dtype)
        assert rec.spec.setup["force_platform"]["corners_m"] == CORNERS.tolist()
        assert np.array_equal(rec.data, np.concatenate(chunks))
        raw = np.concatenate(ts_parts)
        assert np.array_equal(rec.timestamps_raw, raw)
        # Offsets interpolate linearly between measurements (0.25 s at 100 s, 0.35 s at 110 s).
        assert np.allclose(rec.timestamps, raw + 0.25 + (raw - 100.0) * 0.01)
        ts, data, spec = s.streams[cam.source_id]
        assert spec.can_drop_samples and data[:, 0].tolist() == [0.0, 1.0]
        assert [m["text"] for m in s.markers][1] == "operator note: ünïcode ok"
        assert [m["source_id"] for m in s.markers] == [mk.source_id, "", mk.source_id]
        assert s.stages == [stage]
        assert s.steps["strike_s"].tolist() == [100.1, 100.2, 100.3, 100.6]
        assert s.stages_steps() == [(stage, 3)]
        assert s.calibration[0]["matrix"] == np.eye(6).tolist()
        lt = s.streams[late.spec.source_id]
        assert lt.late and np.array_equal(lt.data, np.arange(12, dtype=np.float32).reshape(2, 6))
        assert any(e["kind"] == "late_stream" for e in s.events)


def test_file_is_readable_without_labsuite(tmp_path, uid):
    """The documented layout (docs/archive.md) read with plain h5py."""
    path = tmp_path / "plain.h5"
    fp = _plate(uid)
    with SessionWriter(path, participant_id="P1") as w:
        h = w.add_stream(fp)
        w.append(h, [1.0, 2.0], np.ones((2, 6)))
        w.append_marker(1.5, "hi")
    with h5py.File(path, "r") as f:
        g = f["streams"][fp.source_id]
        assert g["time_series"].shape == (2, 6) and g["time_stamps"][()].tolist() == [1.0, 2.0]
        assert json.loads(g.attrs["channel_labels"]) == ["Fx", "Fy", "Fz", "Mx", "My", "Mz"]
        m = f["markers"]
        assert bytes(m["text_data"][: m["text_end"][0]]).decode() == "hi"
        assert list(f["steps"]["table"].dtype.names) == list(STEP_FIELD_NAMES)
        assert bool(f.attrs["complete"])


def test_corrected_times_matches_definition():
    raw = np.array([0.0, 5.0, 10.0, 20.0])
    co = np.array([[10.0, 2.0], [0.0, 1.0]])  # unsorted on purpose
    assert corrected_times(raw, co).tolist() == [1.0, 6.5, 12.0, 22.0]
    assert corrected_times(raw, np.empty((0, 2))).tolist() == raw.tolist()


@pytest.mark.parametrize("pid", ["", "a b", "../x", "x" * 33, "Jane.Doe"])
def test_participant_id_is_validated(tmp_path, pid):
    with pytest.raises(ConfigError, match="participant_id"):
        SessionWriter(tmp_path / "x.h5", participant_id=pid)
    assert not (tmp_path / "x.h5").exists()


def test_unwritable_targets_are_clear_errors_at_start(tmp_path):
    with pytest.raises(ArchiveError, match="does not exist"):
        SessionWriter(tmp_path / "missing" / "x.h5", participant_id="P1")
    (tmp_path / "taken.h5").write_bytes(b"precious")
    with pytest.raises(ArchiveError, match="never overwritten"):
        SessionWriter(tmp_path / "taken.h5", participant_id="P1")
    assert (tmp_path / "taken.h5").read_bytes() == b"precious"
    with pytest.raises(ArchiveError, match="not enough free space"):
        SessionWriter(tmp_path / "big.h5", participant_id="P1", expected_rate_bytes_per_s=1e15,
                      expected_duration_s=3600)
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(ArchiveError, match="not writable"):
                SessionWriter(ro / "x.h5", participant_id="P1")
        finally:
            ro.chmod(0o700)


def test_bad_appends_name_the_stream(tmp_path, uid):
    w = SessionWriter(tmp_path / "x.h5", participant_id="P1")
    h = w.add_stream(_plate(uid))
    with pytest.raises(ArchiveError, match=f"{uid}-fp-left.*shape"):
        w.append(h, [1.0, 2.0], np.ones((2, 5)))
    with pytest.raises(ArchiveError, match="added already"):
        w.add_stream(_plate(uid))
    with pytest.raises(ArchiveError, match="STEP_DTYPE"):
        w.append_steps(np.zeros(3))
    w.close()
    with pytest.raises(ArchiveError, match="closed"):
        w.append(h, [1.0], np.ones((1, 6)))


def test_late_streams_beyond_the_spares_are_refused_loudly(tmp_path, uid):
    events = []
    w = SessionWriter(tmp_path / "x.h5", participant_id="P1", settings=WriterSettings(late_stream_slots=1),
                      on_event=lambda k, d: events.append((k, d)))
    w.start()
    w.add_stream(imu_spec(f"{uid}-a", location="x", side="left"))
    with pytest.raises(ArchiveError, match="NOT recorded"):
        w.add_stream(imu_spec(f"{uid}-b", location="x", side="right"))
    w.close()
    with open_session(tmp_path / "x.h5") as s:
        kinds = [e["kind"] for e in s.events]
        assert "late_stream" in kinds and "late_stream_refused" in kinds
    assert events and events[0][0] == "late_stream_refused"


_COUNTER_WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from labsuite.archive.writer import SessionWriter, WriterSettings
    from labsuite.streams.contracts import Channel, StreamSpec
    spec = StreamSpec(name="counter", kind="imu", channels=(Channel("n", "count", "Counter"),),
                      rate_hz=2000.0, dtype="float64", source_id=sys.argv[2])
    w = SessionWriter(sys.argv[1], participant_id="P1", settings=WriterSettings(flush_interval_s=0.25))
    h = w.add_stream(spec)
    w.start()
    n, t0 = 0, time.monotonic()
    last = -1
    while True:
        due = int((time.monotonic() - t0) * 2000)
        if due > n:
            w.append(h, 1000.0 + np.arange(n, due) / 2000.0, np.arange(n, due, dtype=float).reshape(-1, 1))
            n = due
        flushed = w.stats().samples_written.get(sys.argv[2], 0)
        if flushed != last:
            print("flushed", flushed, flush=True)
            last = flushed
        time.sleep(0.01)
""")


def test_kill_9_keeps_every_sample_up_to_the_last_flush(tmp_path, uid):
    path = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-c", _COUNTER_WRITER, str(path), uid], stdout=subprocess.PIPE,
                            text=True)
    flushed = 0
    try:
        deadline = time.monotonic() + 60
        while flushed < 6000 and time.monotonic() < deadline:  # about 3 s of data, several flushes
            line = proc.stdout.readline()
            assert line, "writer process ended early"
            flushed = int(line.split()[1])
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
    assert flushed >= 6000
    with open_session(path) as s:
        assert not s.complete
        sd = s.streams[uid]
        counter = sd.data[:, 0]
        assert len(counter) >= flushed  # everything reported flushed is there...
        assert np.array_equal(counter, np.arange(len(counter)))  # ...with no hole and no duplicate
        assert np.allclose(sd.timestamps_raw, 1000.0 + counter / 2000.0)


_LIVE_READER = textwrap.dedent("""
    import sys, time, json
    import numpy as np
    from labsuite.archive.reader import open_session
    s = open_session(sys.argv[1])
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        s.refresh()
        sd = s.streams[sys.argv[2]]
        c = sd.data[:, 0]
        ok = bool(np.array_equal(c, np.arange(len(c))))
        print(json.dumps({"n": len(c), "ok": ok, "complete": s.complete}), flush=True)
        seen.append(len(c))
        if len(c) >= int(sys.argv[3]):
            break
        time.sleep(0.2)
""")


def test_second_process_reads_the_file_while_it_is_written(tmp_path, uid):
    path = tmp_path / "live.h5"
    spec = imu_spec(uid, location="x", side="left", rate_hz=1000.0)
    w = SessionWriter(path, participant_id="P1", settings=WriterSettings(flush_interval_s=0.2))
    h = w.add_stream(spec)
    w.start()
    target = 4000
    reader = subprocess.Popen([sys.executable, "-c", _LIVE_READER, str(path), uid, str(target)],
                              stdout=subprocess.PIPE, text=True)
    try:
        n = 0
        t0 = time.monotonic()
        while reader.poll() is None and time.monotonic() - t0 < 90:
            due = min(int((time.monotonic() - t0) * 1000), 2 * target)
            if due > n:
                rows = np.zeros((due - n, 6), dtype=np.float32)
                rows[:, 0] = np.arange(n, due)
                w.append(h, np.arange(n, due) / 1000.0, rows)
                n = due
            time.sleep(0.01)
        out, _ = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
        w.close()
    lines = [json.loads(x) for x in out.splitlines()]
    counts = [x["n"] for x in lines]
    assert reader.returncode == 0
    assert all(x["ok"] for x in lines)  # every snapshot is a contiguous prefix of the counter
    assert counts[-1] >= target and len(set(counts)) >= 3  # it saw the file grow
    assert not any(x["complete"] for x in lines)


_FSIZE_WRITER = textwrap.dedent("""
    import resource, signal, sys, time, numpy as np
    from labsuite.archive.writer import SessionWriter, WriterSettings
    from labsuite.errors import ArchiveError
    from labsuite.streams.contracts import imu_spec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full disk shows up as a write error, not a signal
    limit = 2_000_000
    w = SessionWriter(sys.argv[1], participant_id="P1",
                      settings=WriterSettings(flush_interval_s=0.1, compression=None))
    h = w.add_stream(imu_spec(sys.argv[2], location="x", side="left"))
    w.start()
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    n = 0
    try:
        for _ in range(3000):
            rows = np.zeros((100, 6), np.float32); rows[:, 0] = np.arange(n, n + 100)
            w.append(h, np.arange(n, n + 100) / 1000.0, rows)
            n += 100
            time.sleep(0.002)
        print("no error", flush=True)
    except ArchiveError as exc:
        print("append refused:", exc, flush=True)
    try:
        w.close()
    except ArchiveError as exc:
        print("close:", exc, flush=True)
""")


def test_full_disk_stops_recording_with_a_message_and_keeps_the_file(tmp_path, uid):
    path = tmp_path / "full.h5"
    res = subprocess.run([sys.executable, "-c", _FSIZE_WRITER, str(path), uid], capture_output=True,
                         text=True, timeout=100)
    assert "append refused" in res.stdout, res.stdout + res.stderr
    assert "recording stopped" in res.stdout and str(path) in res.stdout
    with open_session(path) as s:
        c = s.streams[uid].data[:, 0]
        assert len(c) > 10000  # what was flushed before the disk filled is kept
        assert np.array_equal(c, np.arange(len(c)))
        assert not s.complete


def test_reader_refuses_foreign_files(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["x"] = 1
    with pytest.raises(ArchiveError, match="not a labsuite session"):
        open_session(p)
    with pytest.raises(ArchiveError, match="does not exist"):
        open_session(tmp_path / "nope.h5")
    Path(tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ArchiveError, match="cannot open"):
        open_session(tmp_path / "junk.h5")


def test_the_documented_plain_h5py_example_runs(tmp_path, uid, capsys):
    doc = (Path(__file__).resolve().parents[1] / "docs" / "archive.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "doc.h5"
    with SessionWriter(path, participant_id="P01") as w:
        h = w.add_stream(_plate(uid))
        w.add_clock_offset(h, 1.0, 0.5)
        w.append(h, [1.0, 2.0], np.ones((2, 6)))
        w.append_marker(1.5, "first")
        w.append_marker(1.6, "second ü")
    namespace: dict = {}
    exec(code.replace("P01_20261124T101500Z.h5", str(path)), namespace)
    assert namespace["texts"] == ["first", "second ü"]
    assert np.allclose(namespace["ts"], [1.5, 2.5])
    assert "P01 True" in capsys.readouterr().out


@pytest.mark.parametrize("compression", ["gzip", "lzf", None])
def test_every_compression_round_trips(tmp_path, uid, compression):
    rng = np.random.default_rng(2)
    data = rng.normal(0, 100, (3000, 6)).astype(np.float32)
    ts = 10.0 + np.arange(3000) / 2000.0
    path = tmp_path / f"{compression}.h5"
    with SessionWriter(path, participant_id="P1", settings=WriterSettings(compression=compression)) as w:
        h = w.add_stream(_plate(uid))
        for k in range(0, 3000, 100):
            w.append(h, ts[k:k + 100], data[k:k + 100])
    with open_session(path) as s:
        assert np.array_equal(s.streams[f"{uid}-fp-left"].data, data)
    with h5py.File(path, "r") as f:
        assert f["streams"][f"{uid}-fp-left"]["time_series"].compression == compression
