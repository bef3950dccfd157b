"""The foundation's commands as a user runs them: help, streams, simulate options, LSL scope."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pylsl

from labsuite.cli import build_parser, main
from labsuite.lslconfig import ENV_VAR, machine_scope_config_path, use_machine_scope
from labsuite.streams import contracts as c


def _labsuite(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labsuite", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or dict(os.environ))


def test_help_lists_the_foundation_commands():
    names = set(build_parser()._subparsers._group_actions[0].choices)
    assert {"simulate", "streams"} <= names
    out = _labsuite("--help")
    assert out.returncode == 0 and "simulate" in out.stdout


def test_machine_scope_config_is_used_unless_the_user_set_one(monkeypatch):
    cfg = machine_scope_config_path().read_text()
    assert "ResolveScope = machine" in cfg and "KnownPeers = {127.0.0.1}" in cfg
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert use_machine_scope() == str(machine_scope_config_path())
    assert os.environ[ENV_VAR] == str(machine_scope_config_path())
    monkeypatch.setenv(ENV_VAR, "/somewhere/lab.cfg")
    assert use_machine_scope() == "/somewhere/lab.cfg"


def test_streams_lists_visible_streams_with_measured_rate(uid):
    spec = c.imu_spec(f"{uid}-imu", location="left distal tibia", side="left", rate_hz=200.0,
                      name=f"imu-{uid}")
    outlet = pylsl.StreamOutlet(spec.to_info())
    stop = time.monotonic() + 15
    import threading

    def pump() -> None:
        t0 = pylsl.local_clock()
        k = 0
        while time.monotonic() < stop:
            due = int((pylsl.local_clock() - t0) * 200)
            if due > k:
                outlet.push_chunk(np.zeros((due - k, 6), np.float32), t0 + np.arange(k, due) / 200)
                k = due
            time.sleep(0.01)

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    out = _labsuite("streams", "--measure-s", "3", "--type", "IMU")
    th.join()
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith(f"imu-{uid}"))
    cells = row.split()
    assert cells[1] == "IMU" and cells[2] == spec.source_id and cells[3] == "6" and cells[4] == "200"
    assert abs(float(cells[5]) / 200 - 1) < 0.02  # measured over 3 s while the client connects


def test_streams_says_so_when_nothing_is_visible():
    out = _labsuite("streams", "--type", "NoSuchType", "--wait-s", "0.3", "--measure-s", "0.1")
    assert out.returncode == 1 and "no LSL streams visible" in out.stdout


def test_bad_options_get_a_clear_error_not_a_traceback(capsys):
    assert main(["simulate", "--duration", "-1"]) == 1
    err = capsys.readouterr().err
    assert "--duration" in err and "Traceback" not in err
    assert main(["simulate", "--mass-kg", "5", "--duration", "1"]) == 1
    assert "mass_kg" in capsys.readouterr().err
    assert main(["simulate", "--plate-rate-hz", "1234", "--duration", "1"]) == 1
    assert "plate_rate_hz" in capsys.readouterr().err


def test_simulate_walking_single_belt_at_2khz(uid):
    proc = subprocess.Popen([sys.executable, "-m", "labsuite", "simulate", "--duration", "9", "--mode",
                             "walk", "--single-belt", "--plate-rate-hz", "2000", "--lab-id", uid,
                             "--no-view", "--mass-kg", "80"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        found = pylsl.resolve_byprop("source_id", f"labsuite-sim-{uid}-fp-single", 1, 15.0)
        assert found
        inlet = pylsl.StreamInlet(found[0], max_buflen=10)
        assert inlet.info(timeout=10).nominal_srate() == 2000.0
        inlet.open_stream(timeout=10)
        time.sleep(2.0)  # the first moments: devices up before the participant's first steps
        inlet.pull_chunk(timeout=0.0, max_samples=100_000)
        time.sleep(3.0)
        data, ts = inlet.pull_chunk(timeout=0.0, max_samples=100_000)
        fz = np.asarray(data)[:, 2]
        weight = 80 * 9.81
        # Walking on one plate: double support keeps the plate loaded (no flight phase), with
        # the two M-shaped peaks above body weight.
        assert len(ts) > 5000
        assert fz.min() > 0.2 * weight
        assert fz.max() > 1.05 * weight
    finally:
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


def test_output_into_a_closed_pipe_is_not_a_traceback():
    """`labsuite ... | head` that stops reading: exit 141 (as for SIGPIPE), nothing on stderr."""
    import subprocess
    import sys
    from pathlib import Path

    protocol = Path(__file__).resolve().parents[1] / "protocols" / "willy2016_cadence_programme.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "labsuite", "validate", str(protocol)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first byte
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err, err
