"""Session files never collide or overwrite, a session's parts read as one, and the outcome is honest.

Real processes and real files: 20 processes create session files for one participant at the same
instant through the real naming and writer path; the reader joins a session's part files; the
outcome rules; and real ``labsuite run --simulate --headless`` runs (two at once for one
participant; one whose recorder is killed with SIGKILL).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from labsuite.archive import layout as L
from labsuite.archive import naming
from labsuite.archive.reader import STATUS_INCOMPLETE, open_session
from labsuite.archive.recorder import RecorderSettings
from labsuite.archive.writer import SessionWriter
from labsuite.errors import ArchiveError
from labsuite.lab import outcome as oc
from labsuite.streams.contracts import imu_spec

N_WRITERS = 20


def _create_at_once(out_dir: str, barrier, results, fixed_name: str | None) -> None:
    """One process: wait for the others, then name and create a session file the real way."""
    barrier.wait()
    try:
        settings = RecorderSettings(participant_id="P01", out_dir=Path(out_dir),
                                    path=Path(out_dir) / fixed_name if fixed_name else None)
        path = settings.session_path()
        w = SessionWriter(path, participant_id="P01", settings=None)
        w.close()
        results.put(("ok", str(path)))
    except ArchiveError as exc:
        results.put(("refused", str(exc)))


def _race(tmp_path: Path, fixed_name: str | None) -> list[tuple[str, str]]:
    # fork: the children start with h5py, numba and pylsl imported (20 spawned interpreters
    # importing them took 100 s on a loaded 2-core machine); each is still its own process
    import numba  # noqa: F401  (the writer's header names its version)
    import pylsl  # noqa: F401

    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(N_WRITERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_create_at_once, args=(str(tmp_path), barrier, results, fixed_name))
             for _ in range(N_WRITERS)]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return out


def test_twenty_processes_at_the_same_instant_get_twenty_distinct_files(tmp_path):
    out = _race(tmp_path, None)
    assert [kind for kind, _ in out] == ["ok"] * N_WRITERS, out
    paths = {Path(p) for _, p in out}
    assert len(paths) == N_WRITERS
    assert sorted(paths) == sorted(tmp_path.glob("P01_*.h5"))
    stamps = {re.match(r"P01_(\d{8}T\d{6}\.\d{3}Z)_[0-9a-f]{6}\.h5$", p.name)[1] for p in paths}
    print(f"{N_WRITERS} files, {len(stamps)} distinct millisecond stamps")
    for p in paths:
        with open_session(p) as s:
            assert s.complete and s.participant_id == "P01"


def test_one_name_given_to_twenty_processes_is_created_once_and_never_overwritten(tmp_path):
    name = naming.session_file_name("P01", suffix="fixed")
    out = _race(tmp_path, name)
    kinds = [kind for kind, _ in out]
    assert kinds.count("ok") == 1, out
    refusals = [text for kind, text in out if kind == "refused"]
    assert len(refusals) == N_WRITERS - 1
    assert all("exists already" in t and "never overwritten" in t for t in refusals)
    before = (tmp_path / name).read_bytes()
    with pytest.raises(ArchiveError, match="exists already"):
        SessionWriter(tmp_path / name, participant_id="P01")
    assert (tmp_path / name).read_bytes() == before


def test_names_carry_milliseconds_and_a_suffix_and_parts_sit_beside_the_first(tmp_path):
    import datetime as dt

    t = dt.datetime(2026, 11, 24, 10, 15, 0, 123456, tzinfo=dt.UTC)
    name = naming.session_file_name("P01", 2, now=t, suffix="a1b2c3")
    assert name == "P01_s2_20261124T101500.123Z_a1b2c3.h5"
    first = tmp_path / "P01_20261124T101500.123Z_a1b2c3.h5"
    assert naming.part_path(first, 1) == first
    assert naming.part_path(first, 12).name == "P01_20261124T101500.123Z_a1b2c3.part12.h5"
    assert naming.split_part(naming.part_path(first, 12)) == (first, 12)
    with pytest.raises(Exception, match="participant"):
        naming.session_file_name("../etc")


def _part(path: Path, part: int, first: Path, t0: float, n: int, rate: float = 100.0) -> None:
    attrs = {L.PART: part, L.FIRST_FILE: first.name} if part > 1 else {}
    w = SessionWriter(path, participant_id="P01", **attrs)
    h = w.add_stream(imu_spec("imu-x", location="tibia", side="left", rate_hz=rate))
    ts = t0 + np.arange(n) / rate
    w.append(h, ts, np.full((n, 6), float(part)))
    w.log_event("connected", f"part {part}", source_id="imu-x", timestamp=t0)
    w.close()


def test_a_session_in_parts_reads_as_one_with_its_gap(tmp_path):
    first = tmp_path / naming.session_file_name("P01", suffix="abc123")
    _part(first, 1, first, 100.0, 500)  # 100.00 .. 104.99 s
    _part(naming.part_path(first, 2), 2, first, 106.5, 300)  # 106.50 .. 109.49 s
    for opened in (first, naming.part_path(first, 2)):  # any file of the set opens the set
        with open_session(opened) as s:
            assert s.path == first
            sd = s.stream("imu-x")
            assert sd.n_samples == 800 and list(np.unique(sd.data[:, 0])) == [1.0, 2.0]
            assert np.all(np.diff(sd.timestamps) > 0)
            (gap,) = s.recording_gaps
            assert gap.after_part == 1 and gap.length_s == pytest.approx(1.5, abs=1e-6)
            assert s.missing_s == pytest.approx(1.5, abs=1e-6)
            assert [p.part for p in s.parts] == [1, 2] and s.status == STATUS_INCOMPLETE
            assert not s.complete and [e["detail"] for e in s.events] == ["part 1", "part 2"]
            assert any("2 parts" in n for n in s.notes)
    with open_session(first, parts=False) as s:
        assert s.stream("imu-x").n_samples == 500 and s.complete


def test_the_outcome_rules():
    whole = oc.Recording(parts=1)
    gap = oc.Recording(parts=2, missing_s=1.2, problems=["recording incomplete: 1.20 s missing"])
    assert oc.classify("completed", 0, whole).code == 0
    assert oc.classify("completed", 0, None).code == 0  # --no-record
    assert oc.classify("completed", 0, gap).name == oc.RECORDING_INCOMPLETE
    assert oc.classify("completed", 1, whole).name == oc.STOPPED_SAFETY  # resumed after a stop
    assert oc.classify("emergency_stop", 1, gap).code == 5  # lost data is said first
    assert oc.classify("pain_stop", 0, whole).code == 3
    assert oc.classify("safety_stop:no_contact", 1, whole).code == 4
    assert "completed" not in oc.classify("completed", 0, gap).detail
    assert sorted(oc.EXIT_CODES.values()) == [0, 3, 4, 5, 6]


# ---- real runs ---------------------------------------------------------------------------------

SHORT = """\
schema: labsuite-protocol/1
name: integrity
speed_m_s: 2.5
safety: {accel_m_s2: 1.5, stop_decel_m_s2: 3.0, force_timeout_s: 2.0, device_resume_timeout_s: 60}
checkins: {at_start: false, at_stage_boundaries: false}
simulation: {mode: run, preferred_cadence_spm: 165}
stages:
  - {name: base, kind: baseline, duration_s: DURATION, measure_last_steps: 10}
"""


def _protocol(tmp_path: Path, duration_s: float) -> Path:
    path = tmp_path / "short.yaml"
    path.write_text(SHORT.replace("DURATION", f"{duration_s:g}"))
    return path


def _run(tmp_path: Path, protocol: Path, participant: str, *extra: str) -> subprocess.Popen:
    # stderr to a file: liblsl's log lines must never fill a pipe nobody reads
    with (tmp_path / f"{participant}-{time.monotonic_ns()}.err").open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "labsuite", "run", str(protocol), "--participant", participant,
             "--simulate", "--headless", "--out", str(tmp_path / "out"), "--connect-timeout", "120",
             "--auto-start", *extra], stdout=subprocess.PIPE, stderr=err, text=True, env=dict(os.environ))


def _stop(proc: subprocess.Popen) -> None:
    """A run a failed test leaves behind stops like at Ctrl-C (its roles with it)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def _file_of(stdout: str) -> Path:
    m = re.search(r"^session file: (.+)$", stdout, re.M)
    assert m, stdout[-2000:]
    return Path(m[1])


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_two_sessions_of_one_participant_started_at_once(tmp_path):
    protocol = _protocol(tmp_path, 8)
    procs = [_run(tmp_path, protocol, "P05", "--quiet") for _ in range(2)]
    try:
        outs = [p.communicate(timeout=420) for p in procs]
    finally:
        for p in procs:
            _stop(p)
    files = []
    for p, (out, _) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-2000:]
        assert "outcome: completed (exit code 0)" in out
        files.append(_file_of(out))
    assert files[0] != files[1]
    assert sorted(files) == sorted((tmp_path / "out").glob("P05_*.h5"))
    for f, (out, _) in zip(files, outs, strict=True):
        with open_session(f) as s:
            assert s.complete and s.outcome[:2] == ("completed", 0)
            assert [st.end_reason for st in s.stages] == ["time"]
            lab = re.search(r"session (run-[0-9a-f]{8}): starting", out) or re.search(
                r"labsuite-session-(run-[0-9a-f]{8})-", json.dumps(list(s.streams)))
            assert lab and all(lab[1] in sid for sid in s.streams if "labsuite-s" in sid)


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_killing_the_recorder_continues_the_session_in_a_part_file_and_says_so(tmp_path):
    protocol = _protocol(tmp_path, 16)
    proc = _run(tmp_path, protocol, "P06", "--auto-resume")
    lines: list[str] = []
    killed = threading.Event()

    def kill(pid: int) -> None:
        time.sleep(4.0)  # the belt at speed, the participant running
        os.kill(pid, signal.SIGKILL)
        killed.set()

    def read() -> None:
        assert proc.stdout is not None
        pid = None
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"recorder: started \(pid (\d+)\)", line)
            if m and pid is None:
                pid = int(m[1])
            if line.startswith("== stage 1") and pid is not None and not killed.is_set():
                threading.Thread(target=kill, args=(pid,), daemon=True).start()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=420)
        reader.join(10)
    finally:
        _stop(proc)
    out = "".join(lines)
    assert killed.is_set(), out[-3000:]
    assert proc.returncode == oc.EXIT_CODES[oc.RECORDING_INCOMPLETE], out[-3000:]
    assert "completed" not in out
    assert "outcome: recording_incomplete (exit code 5)" in out
    first = _file_of(out)
    second = naming.part_path(first, 2)
    assert f"{first}: part 1:" in out and f"{second}: part 2:" in out
    with open_session(first) as s:
        assert [p.part for p in s.parts] == [1, 2]
        assert s.parts[0].status == "cut short" and s.parts[1].status == "complete"
        (gap,) = s.recording_gaps
        assert 0 < gap.length_s < 30
        assert s.outcome[:2] == ("recording_incomplete", 5)
        markers = [json.loads(t) for t in s.markers["text"]]
        (rg,) = [m for m in markers if m["event"] == "recording_gap"]
        assert rg["part"] == 2 and rg["file"] == second.name and rg["gap_s"] > 0
        assert any(e["kind"] == L.EVENT_RECORDING_RESUMED for e in s.events)
        # the protocol still ran to its end, recorded across both parts
        assert [st.name for st in s.stages] == ["base"]
        assert any(m["event"] == "session_start" for m in markers)
        assert any(m["event"] == "session_end" for m in markers)
        missed = [json.loads(t) for t in rg["missed"]]
        if rg["gap_s"] > 2.0:  # not recording again within 2 s: the belt was stopped, and said so
            assert any(m["event"] == "safety_stop" and m["device"] == "recorder" for m in missed)
            assert any(m["event"] == "resumed" for m in markers)  # --auto-resume
        print(f"recorder killed: recording again after {rg['gap_s']:.2f} s (session's view); "
              f"{gap.length_s:.2f} s missing in the file")
