"""Fuzz every input labsuite reads and count what went wrong: tracebacks, hangs, damage called fine.

    python scripts/fuzz_inputs.py                 # the big run (several hundred cases)
    python scripts/fuzz_inputs.py --quick         # a few dozen cases (tests/test_fuzz_inputs.py)

Inputs, each mutated many ways (seeded, so a run is repeatable):
  * session files (a 20 s simulated session written by SessionWriter, the processor's steps
    included): cut at many points, bytes flipped (anywhere, or in the first 4 KiB where HDF5
    keeps its metadata), groups dropped, format version 99, committed counts and timestamps
    broken; read by ``inspect``, ``report``, ``report --programme``, ``export --c3d --csv --xdf``
    and ``replay`` (the last at speed 100 under a unique source prefix);
  * the RBDS C3D file (cut, flipped; ``analyze``) and the RBDS text force file (cut mid-line,
    flipped, a non-number; ``analyze``);
  * protocol, lab and calibration YAML (alias bomb, deep nesting, cut, flipped; ``validate``,
    ``drivers check``, ``calibrate show``);
  * device frames fed to the serial plate, x-IMU3, Bertec and QTM decoders (random bytes,
    valid frames with flipped bytes, cut frames).
Every case runs in a child process through ``labsuite.cli.main``, with a watchdog
(faulthandler) that ends the child if one command takes longer than ``--timeout`` (10 s). The
child is a fork of this process after it imported the readers' modules and compiled the kernels
once (``--fresh`` starts a new interpreter per case instead: the same counts, ~3.5x the CPU).

Counted: cases; tracebacks (an exception other than a labsuite error reached the top, or a
crash); hangs (the watchdog fired); damaged files reported as fine (a file known to be damaged,
e.g. cut short, that a command accepted with exit code 0, or a file with flipped bytes that
``inspect`` called fine although its summary or anything it reads (samples, timestamps, clock
offsets, steps, markers, stages, events, attributes) differs from the original). Files with
flipped bytes that read back identical to the original (the bytes were unused) are counted
apart, as are refusals (clean errors) and the slowest command. Exit code 1 when any of the three
counts is not zero.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RBDS_C3D = SHARED_DATA / "rbds" / "RBDS001runT35.c3d"
RBDS_TXT = SHARED_DATA / "rbds" / "RBDS008runT35forces.txt"
RBDS_MAP = ["--rate-hz", "300", "--map", "fz=Fy,fx=Fx,fy=-Fz,copx=COPx,copy=-COPz", "--length-unit", "mm"]

DAMAGED, UNKNOWN, FINE = "damaged", "unknown", "fine"


# ---- inputs ------------------------------------------------------------------------------------

def make_session(path: Path, duration_s: float = 20.0, seed: int = 1) -> Path:
    """Write a realistic session file: two belt plates, two IMUs, markers with stages, steps."""
    from labsuite.archive.writer import SessionWriter
    from labsuite.drivers.sim.gait import ParticipantSettings, simulate_offline
    from labsuite.drivers.sim.lab import PLATE_ORIGIN_M, belt_corners
    from labsuite.plates import lab_to_plate
    from labsuite.realtime.processor import GRAVITY_M_S2, PlateGeometry, ProcessorSettings, process_arrays
    from labsuite.stages import StageRecord
    from labsuite.streams.contracts import force_plate_spec, imu_spec, markers_spec
    from labsuite.streams.messages import marker

    rec = simulate_offline(ParticipantSettings(mass_kg=70.0, seed=seed), duration_s)
    t0 = 1000.0
    w = SessionWriter(path, participant_id="FUZZ1", mass_kg=70.0, protocol_text="name: fuzz\n")
    plates = {}
    streams = {}
    for belt in rec.belts:
        corners = belt_corners(belt)
        spec = force_plate_spec(f"fuzz-fp-{belt}", belt=belt, corners_m=corners,
                                origin_m=tuple(PLATE_ORIGIN_M), calibration_id=f"fuzz-{belt}",
                                rate_hz=rec.plate_rate_hz)
        ch = lab_to_plate(rec.grf_n[belt], rec.cop_m[belt], rec.tz_nm[belt], corners, PLATE_ORIGIN_M)
        plates[belt] = (w.add_stream(spec), ch)
        streams[belt] = (rec.t_plate_s, ch)
    imus = {side: (w.add_stream(imu_spec(f"fuzz-imu-{side}", location="tibia", side=side,
                                         rate_hz=rec.imu_rate_hz)), rec.imu[side]) for side in rec.imu}
    mk = w.add_stream(markers_spec("fuzz-markers"))
    for h, _ in [*plates.values(), *imus.values()]:
        w.add_clock_offset(h, t0, 0.001)
    chunk = 250
    for k in range(0, len(rec.t_plate_s), chunk):
        for h, ch in plates.values():
            w.append(h, t0 + rec.t_plate_s[k:k + chunk], ch[k:k + chunk])
        for h, data in imus.values():
            w.append(h, t0 + rec.t_imu_s[k:k + chunk], data[k:k + chunk])
    half = duration_s / 2
    for st in (StageRecord(0, "baseline", "baseline", t0, t0 + half, end_reason="time"),
               StageRecord(1, "cadence-up", "cadence", t0 + half, t0 + duration_s, target_cadence_spm=170.0,
                           end_reason="time")):
        w.append(mk, [st.start_s], [[marker("stage_start", stage=st.name)]])
        w.append(mk, [st.end_s], [[marker("stage_end", **st.to_marker_fields())]])
    geoms = tuple(PlateGeometry.from_arrays(b, belt_corners(b), PLATE_ORIGIN_M) for b in rec.belts)
    settings = ProcessorSettings(rate_hz=rec.plate_rate_hz, plates=geoms, layout="split",
                                 body_weight_n=70.0 * GRAVITY_M_S2)
    steps = process_arrays(settings, streams, lab_frame=False)
    for name in ("strike_s", "toe_off_s"):
        steps[name] += t0
    w.append_steps(steps)
    w.log_event("connected", "fuzz session", source_id="fuzz-fp-left", timestamp=t0)
    w.close()
    return path


def session_cases(src: Path, work: Path, rng: np.random.Generator, quick: bool) -> list[dict[str, Any]]:
    """Mutated copies of ``src``: (name, path, truth)."""
    import h5py

    data = src.read_bytes()
    size = len(data)
    cases: list[dict[str, Any]] = [{"name": "session original", "path": src, "truth": FINE}]

    def save(name: str, content: bytes, truth: str) -> None:
        p = work / f"{name.replace(' ', '_')}.h5"
        p.write_bytes(content)
        cases.append({"name": f"session {name}", "path": p, "truth": truth})

    fractions = [0.1, 0.5, 0.9, 0.999] if quick else [*np.linspace(0.02, 0.98, 33), 0.99, 0.995, 0.999]
    for frac in fractions:
        save(f"cut {100 * frac:.1f}%", data[: int(size * frac)], DAMAGED)
    save("cut last byte", data[:-1], DAMAGED)
    for n_flip, region, reps in ((200, size, 2 if quick else 12), (10, 4096, 2 if quick else 12),
                                 (1, 4096, 1 if quick else 12), (1, size, 0 if quick else 8)):
        for r in range(reps):
            buf = bytearray(data)
            for pos in rng.choice(region, size=n_flip, replace=False):
                buf[pos] ^= int(rng.integers(1, 256))
            save(f"flip {n_flip} in first {region} bytes #{r}", bytes(buf), UNKNOWN)
            cases[-1]["original"] = src

    def edited(name: str, edit: Any, truth: str) -> None:
        p = work / f"{name.replace(' ', '_')}.h5"
        shutil.copy(src, p)
        with h5py.File(p, "r+") as f:
            edit(f)
        cases.append({"name": f"session {name}", "path": p, "truth": truth})

    for group in ("streams", "steps", "markers", "stages", "events", "calibration"):
        edited(f"no group {group}", lambda f, g=group: f.__delitem__(g), DAMAGED)
    edited("no groups at all", lambda f: [f.__delitem__(g) for g in list(f)], DAMAGED)
    edited("format version 99", lambda f: f.attrs.__setitem__("format_version", 99), DAMAGED)
    edited("format version text", lambda f: f.attrs.__setitem__("format_version", "one"), DAMAGED)
    edited("no format attribute", lambda f: f.attrs.__delitem__("format"), DAMAGED)
    fp, imu = "streams/fuzz-fp-left", "streams/fuzz-imu-left"
    edited("committed huge", lambda f: f["streams/fuzz-fp-left/committed"].__setitem__(0, 10**12), DAMAGED)
    edited("committed negative", lambda f: f["steps/committed"].__setitem__(0, -5), DAMAGED)
    edited("timestamp NaN", lambda f: f[f"{fp}/time_stamps"].__setitem__(5000, np.nan), DAMAGED)
    edited("time goes back", lambda f: f[f"{imu}/time_stamps"].__setitem__(7000, 1.0), DAMAGED)
    edited("text end beyond", lambda f: f["streams/fuzz-markers/text_end"].__setitem__(1, 10**9), DAMAGED)
    edited("no time_series", lambda f: f["streams/fuzz-fp-right"].__delitem__("time_series"), DAMAGED)
    edited("spec not json", lambda f: f[imu].attrs.__setitem__("spec_json", "{x"), DAMAGED)
    edited("complete but flagged", lambda f: f.attrs.__setitem__("complete", True), FINE)
    return cases


def file_cases(work: Path, rng: np.random.Generator, quick: bool) -> list[dict[str, Any]]:
    """Mutated C3D and text force files."""
    cases: list[dict[str, Any]] = []
    c3d = RBDS_C3D.read_bytes()
    for frac in ([0.1, 0.5, 0.9] if quick else [0.005, 0.05, *np.linspace(0.1, 0.9, 9), 0.99, 0.999]):
        p = work / f"cut_{100 * frac:.1f}.c3d"
        p.write_bytes(c3d[: int(len(c3d) * frac)])
        cases.append({"name": f"c3d cut {100 * frac:.1f}%", "path": p, "truth": DAMAGED, "kind": "c3d"})
    for r in range(2 if quick else 15):
        buf = bytearray(c3d)
        region = 512 * 12 if r % 2 else len(c3d)  # header and parameters, or anywhere
        for pos in rng.choice(region, size=20, replace=False):
            buf[pos] ^= int(rng.integers(1, 256))
        p = work / f"flip_{r}.c3d"
        p.write_bytes(bytes(buf))
        cases.append({"name": f"c3d flip 20 #{r}", "path": p, "truth": UNKNOWN, "kind": "c3d"})
    txt = RBDS_TXT.read_bytes()
    lines = txt.split(b"\n")
    variants = {
        "cut mid-line": txt[: len(txt) // 2 + 7],
        "header only": lines[0] + b"\n",
        "a word in a number": b"\n".join([*lines[:500], lines[500].replace(b"\t", b"\tx", 1), *lines[501:]]),
        "binary junk": bytes(rng.integers(0, 256, 4096, dtype=np.uint8)),
        "empty": b"",
    }
    if not quick:
        for r in range(6):
            buf = bytearray(txt)
            for pos in rng.choice(len(txt), size=50, replace=False):
                buf[pos] = int(rng.integers(32, 127))
            variants[f"flip 50 #{r}"] = bytes(buf)
    for name, content in variants.items():
        p = work / f"forces_{name.replace(' ', '_')}.txt"
        p.write_bytes(content)
        cases.append({"name": f"text {name}", "path": p, "truth": UNKNOWN, "kind": "text"})
    return cases


def yaml_cases(work: Path, rng: np.random.Generator, quick: bool) -> list[dict[str, Any]]:
    """Mutated protocol, lab and calibration files."""
    import re

    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))
    lab_doc = (REPO / "docs" / "devices.md").read_text(encoding="utf-8")
    match = re.search(r"```yaml\n(schema: labsuite-lab/1.*?)```", lab_doc, re.S)
    assert match, "docs/devices.md lost its example lab file"
    lab = match.group(1).replace("calibration: calibration/", f"calibration: {REPO / 'calibration'}/")
    sources = {"protocol": (REPO / "protocols" / "demo.yaml").read_text(encoding="utf-8"), "lab": lab,
               "calibration": (REPO / "calibration" / "example-left.yaml").read_text(encoding="utf-8")}
    cases: list[dict[str, Any]] = []
    for kind, text in sources.items():
        variants = {"original": text, "alias bomb": bomb, "deep": "stages: " + "[" * 5000 + "]" * 5000,
                    "recursive alias": "a: &a [1, *a]\n", "cut": text[: len(text) // 2],
                    "huge": text + "# " + "x" * 400_000 + "\n", "tabs": text.replace("  ", "\t"),
                    "exponent": text.replace("duration_s: 30", "duration_s: 1e9")}
        for r in range(2 if quick else 10):
            buf = bytearray(text.encode())
            for pos in rng.choice(len(buf), size=8, replace=False):
                buf[pos] = int(rng.integers(32, 127))
            variants[f"flip 8 #{r}"] = buf.decode("ascii", errors="replace")
        for name, content in variants.items():
            p = work / f"{kind}_{name.replace(' ', '_').replace('#', '')}.yaml"
            p.write_text(content, encoding="utf-8")
            cases.append({"name": f"{kind} {name}", "path": p, "kind": kind,
                          "truth": FINE if name == "original" else UNKNOWN})
    return cases


# ---- commands ----------------------------------------------------------------------------------

def commands_for(case: dict[str, Any], out: Path, n: int) -> list[list[str]]:
    """The labsuite commands (argv after ``labsuite``) that read this case's file."""
    p = str(case["path"])
    kind = case.get("kind", "session")
    if kind == "session":
        prog = out / f"programme_{n}"
        prog.mkdir(exist_ok=True)
        shutil.copy(p, prog / Path(p).name)
        return [["inspect", "--json", p], ["report", p, "--out", str(out / f"r{n}.html")],
                ["report", "--programme", str(prog), "--out", str(out / f"p{n}.html")],
                ["export", p, "--c3d", str(out / f"e{n}.c3d")], ["export", p, "--csv", str(out / f"csv{n}")],
                ["export", p, "--xdf", str(out / f"e{n}.xdf")],
                ["replay", p, "--speed", "100", "--lead-s", "0", "--quiet",
                 "--source-prefix", f"fuzz{os.getpid()}-{n}-"]]
    if kind == "c3d":
        return [["analyze", p, "--mass-kg", "62"]]
    if kind == "text":
        return [["analyze", p, *RBDS_MAP]]
    if kind == "protocol":
        return [["validate", p]]
    if kind == "lab":
        return [["drivers", "check", p]]
    return [["calibrate", "show", p]]


def child_main(argv_json: str, timeout_s: float) -> int:
    """Run commands in this process, one watchdog each; print one JSON line per command."""
    import faulthandler

    os.environ.setdefault("LSLAPICFG", str(REPO / "labsuite" / "data" / "lsl_local.cfg"))
    from labsuite.cli import main

    for argv in json.loads(argv_json):
        print(json.dumps({"start": argv}), flush=True)
        faulthandler.dump_traceback_later(timeout_s, exit=True)
        out, err = io.StringIO(), io.StringIO()
        t = time.perf_counter()
        tb = ""
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(argv)
        except SystemExit as exc:  # argparse usage errors
            rc = exc.code if isinstance(exc.code, int) else 2
        except BaseException:  # anything else reaching the top is a finding
            rc, tb = 99, traceback.format_exc()
        faulthandler.cancel_dump_traceback_later()
        print(json.dumps({"argv": argv, "rc": rc, "s": time.perf_counter() - t, "traceback": tb,
                          "stderr": err.getvalue()[-400:], "stdout": out.getvalue()[-20000:]}), flush=True)
    return 0


# What the readers import, loaded once in the parent so that every forked child starts warm (the
# parent also compiled the processor's kernels in make_session). Nothing here starts a thread.
WARM_MODULES = ("h5py", "matplotlib", "matplotlib.backends.backend_svg", "pylsl", "ezc3d", "yaml",
                "labsuite.archive.reader", "labsuite.report", "labsuite.realtime.processor")


def warm_up() -> None:
    """Import the readers' modules in this process (before the first fork)."""
    import importlib

    for name in WARM_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    from labsuite import cli

    cli.build_parser()  # imports every command module


def _run_forked(argvs: list[list[str]], timeout_s: float, deadline_s: float) -> tuple[str, str, int | None]:
    """child_main in a fork of this (warm) process; (stdout, stderr, exit status or None if killed)."""
    import selectors
    import signal

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: its own stdout/stderr pipes, then the commands
        status = 99
        try:
            os.close(out_r)
            os.close(err_r)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            status = child_main(json.dumps(argvs), timeout_s)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)
    os.close(out_w)
    os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    sel = selectors.DefaultSelector()
    for fd in chunks:
        sel.register(fd, selectors.EVENT_READ)
    end = time.monotonic() + deadline_s
    killed = False
    while sel.get_map():
        left = end - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            killed = True
            break
        for key, _ in sel.select(timeout=min(left, 1.0)):
            data = os.read(key.fd, 65536)
            if data:
                chunks[key.fd].append(data)
            else:
                sel.unregister(key.fd)
    sel.close()
    os.close(out_r)
    os.close(err_r)
    _, wait_status = os.waitpid(pid, 0)
    code = None if killed else os.waitstatus_to_exitcode(wait_status)
    stdout, stderr = (b"".join(chunks[fd]).decode(errors="replace") for fd in (out_r, err_r))
    return stdout, stderr, code


def run_case(case: dict[str, Any], out: Path, n: int, timeout_s: float,
             fork: bool = False) -> list[dict[str, Any]]:
    """Run a case's commands in a child process; return one result per command.

    With ``fork`` the child is a fork of this process (warm: see :func:`warm_up`), otherwise a fresh
    interpreter; both run :func:`child_main` under the same per-command watchdog.
    """
    argvs = commands_for(case, out, n)
    deadline_s = timeout_s * len(argvs) + 60
    hang = [{"argv": argvs[-1], "rc": None, "s": timeout_s, "hang": True, "traceback": "",
             "stderr": "the child kept running past the case's deadline", "stdout": ""}]
    if fork:
        stdout, stderr, returncode = _run_forked(argvs, timeout_s, deadline_s)
        if returncode is None:
            return hang
        proc = subprocess.CompletedProcess(argvs, returncode, stdout, stderr)
    else:
        child = [sys.executable, __file__, "--child", json.dumps(argvs), "--timeout", str(timeout_s)]
        try:
            proc = subprocess.run(child, capture_output=True, text=True, timeout=deadline_s)
        except subprocess.TimeoutExpired:  # the child (or something it left behind) kept running
            return hang
    results, started = [], None
    for line in proc.stdout.splitlines():
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        if "start" in obj:
            started = obj["start"]
        else:
            results.append(obj)
            started = None
    if started is not None:  # the child died inside this command
        hang = "Timeout (" in proc.stderr
        results.append({"argv": started, "rc": None, "s": timeout_s if hang else 0.0, "hang": hang,
                        "traceback": "" if hang else f"child died (exit {proc.returncode}): "
                        f"{proc.stderr[-400:]}", "stderr": proc.stderr[-400:], "stdout": ""})
    return results


def device_cases(rng: np.random.Generator, quick: bool) -> dict[str, int]:
    """Feed the device decoders random and mutated frames in this process; count outcomes."""
    from labsuite.drivers.bertec import FEEDBACK_FORMAT, FEEDBACK_SIZE, decode_feedback
    from labsuite.drivers.qtm import parse_force_frame
    from labsuite.drivers.serial_plate import FrameParser, encode_frame
    from labsuite.drivers.ximu3 import decode_inertial
    from labsuite.errors import LabsuiteError

    n = 300 if quick else 5000
    counts = {"cases": 0, "tracebacks": 0, "refused": 0}
    findings: list[str] = []

    def attempt(name: str, fn: Any, data: bytes) -> None:
        counts["cases"] += 1
        try:
            fn(data)
        except LabsuiteError:
            counts["refused"] += 1
        except Exception as exc:  # a finding
            counts["tracebacks"] += 1
            if len(findings) < 10:
                findings.append(f"{name}: {type(exc).__name__}: {exc} on {data[:24].hex()}")

    def mutate(frame: bytes) -> bytes:
        buf = bytearray(frame)
        if rng.random() < 0.3 and len(buf) > 1:
            return bytes(buf[: int(rng.integers(0, len(buf)))])
        for pos in rng.choice(len(buf), size=min(len(buf), int(rng.integers(1, 4))), replace=False):
            buf[pos] ^= int(rng.integers(1, 256))
        return bytes(buf)

    good_plate = encode_frame(7, np.arange(8, dtype=np.int32))
    parser = FrameParser(8)
    for _ in range(n):
        attempt("serial_plate FrameParser.feed", parser.feed,
                mutate(good_plate * 3) if rng.random() < 0.7 else rng.bytes(int(rng.integers(0, 200))))
    good_imu = b"I,123456,1.0,2.0,3.0,0.1,0.2,0.98\r"
    for _ in range(n):
        attempt("ximu3 decode_inertial", decode_inertial,
                mutate(good_imu) if rng.random() < 0.7 else rng.bytes(int(rng.integers(0, 60))))
    good_bertec = bytes([FEEDBACK_FORMAT]) + bytes(FEEDBACK_SIZE - 1)
    for _ in range(n):
        attempt("bertec decode_feedback", decode_feedback,
                mutate(good_bertec) if rng.random() < 0.7 else rng.bytes(FEEDBACK_SIZE))
    import struct

    body = struct.pack("<i", 1) + struct.pack("<iii", 1, 2, 100) + np.zeros(18, dtype="<f4").tobytes()
    good_qtm = struct.pack("<II", 8 + len(body), 9) + body
    for _ in range(n):
        blob = mutate(good_qtm) if rng.random() < 0.7 else rng.bytes(int(rng.integers(8, 120)))
        attempt("qtm parse_force_frame", lambda d: parse_force_frame(d, 8, 1) if len(d) >= 12 else None, blob)
    counts["findings"] = findings  # type: ignore[assignment]
    return counts


# ---- judging -----------------------------------------------------------------------------------

def _summary_key(stdout: str) -> Any:
    try:
        s = json.loads(stdout)
    except json.JSONDecodeError:
        return None
    s.pop("path", None)
    for part in s.get("parts") or []:  # each part names its file: the file name is no data
        if isinstance(part, dict):
            part.pop("path", None)
    return s


def _label(argv: list[str]) -> str:
    """A command's name and its first option: ``export --csv``, ``report --programme``."""
    return " ".join([argv[0], *[a for a in argv[1:] if a.startswith("--")][:1]])


def same_data(a: Path, b: Path) -> bool:
    """True when two session files give the same streams, steps, markers, stages and events."""
    from labsuite.archive.reader import open_session

    with open_session(a, allow_damaged=True) as x, open_session(b, allow_damaged=True) as y:
        if x.status != y.status or set(x.streams) != set(y.streams) or x.attrs != y.attrs:
            return False
        for sid, sd in x.streams.items():
            other = y.streams[sid]
            if not (np.array_equal(sd.timestamps_raw, other.timestamps_raw)
                    and np.array_equal(np.asarray(sd.data), np.asarray(other.data))
                    and np.array_equal(sd.clock_offsets, other.clock_offsets, equal_nan=True)):
                return False
        return (all(np.array_equal(x.steps[n], y.steps[n], equal_nan=True) for n in x.steps.dtype.names or ())
                and list(x.markers["text"]) == list(y.markers["text"]) and x.stages == y.stages
                and x.events == y.events and x.calibration == y.calibration)


def judge(case: dict[str, Any], results: list[dict[str, Any]], baseline: Any) -> dict[str, Any]:
    """Classify one case's command results."""
    verdict = {"tracebacks": [], "hangs": [], "fine_but_damaged": [], "value_only": False, "refused": 0}
    for r in results:
        cmd = _label(r["argv"])
        if r.get("hang"):
            verdict["hangs"].append(cmd)
        elif r["traceback"] or "Traceback (most recent call last)" in r["stderr"]:
            verdict["tracebacks"].append(f"{cmd}: {(r['traceback'] or r['stderr']).strip().splitlines()[-1]}")
        elif r["rc"] not in (0, None):
            verdict["refused"] += 1
    kind = case.get("kind", "session")
    for r in results:
        if r.get("hang") or r["traceback"]:
            continue
        cmd = _label(r["argv"])
        accepted = r["rc"] == 0
        if case["truth"] == DAMAGED and accepted:
            verdict["fine_but_damaged"].append(cmd)
        elif case["truth"] == UNKNOWN and kind == "session" and r["argv"][0] == "inspect" and accepted:
            # accepted as fine: then everything it reads must be what the original holds
            if _summary_key(r["stdout"]) != baseline or not same_data(case["path"], case["original"]):
                verdict["fine_but_damaged"].append(cmd)
            else:
                verdict["value_only"] = True
    return verdict


def main() -> int:
    """Run the fuzz campaign and print the counts."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few dozen cases (the regular test)")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds allowed per command (10)")
    ap.add_argument("--work", type=Path, default=None, help="keep the mutated files here")
    ap.add_argument("--json", type=Path, default=None, help="write every case's outcome here")
    ap.add_argument("--only", default=None, metavar="KIND",
                    help="only cases of one kind: session, c3d, text, protocol, lab, calibration")
    ap.add_argument("--fresh", action="store_true",
                    help="a fresh interpreter per case instead of a fork of this warm process "
                    "(slower; the default on systems without fork)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        return child_main(args.child, args.timeout)
    os.environ.setdefault("LSLAPICFG", str(REPO / "labsuite" / "data" / "lsl_local.cfg"))
    rng = np.random.default_rng(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="labsuite-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    out.mkdir(exist_ok=True)
    t_start = time.perf_counter()
    src = make_session(work / "FUZZ1_original.h5")
    cases = session_cases(src, work, rng, args.quick) + file_cases(work, rng, args.quick) + \
        yaml_cases(work, rng, args.quick)
    if args.only:
        cases = [c for c in cases if c["name"].split()[0] == args.only]
    totals = {"cases": 0, "tracebacks": 0, "hangs": 0, "fine_but_damaged": 0, "value_only": 0,
              "refused": 0, "commands": 0}
    slowest = (0.0, "")
    log = []
    baseline = None
    fork = hasattr(os, "fork") and not args.fresh
    if fork:
        warm_up()
    for n, case in enumerate(cases):
        results = run_case(case, out, n, args.timeout, fork=fork)
        if n == 0:
            baseline = _summary_key(results[0]["stdout"])
        v = judge(case, results, baseline)
        totals["cases"] += 1
        totals["commands"] += len(results)
        for key in ("tracebacks", "hangs", "fine_but_damaged"):
            totals[key] += len(v[key])
        totals["refused"] += v["refused"]
        totals["value_only"] += int(v["value_only"])
        for r in results:
            if r["s"] > slowest[0]:
                slowest = (r["s"], f"{_label(r['argv'])} on {case['name']}")
        bad = v["tracebacks"] + v["hangs"] + [f"accepted: {c}" for c in v["fine_but_damaged"]]
        if bad:
            print(f"  {case['name']}: " + "; ".join(bad), flush=True)
        log.append({"case": case["name"], **v, "seconds": [round(r["s"], 3) for r in results]})
    dev = device_cases(rng, args.quick)
    for f in dev.pop("findings"):  # type: ignore[attr-defined]
        print(f"  device frames: {f}")
    print(f"fuzz_inputs (seed {args.seed}{', quick' if args.quick else ''}): {totals['cases']} file cases "
          f"({totals['commands']} command runs) + {dev['cases']} device frames in "
          f"{time.perf_counter() - t_start:.0f} s")
    print(f"  tracebacks: {totals['tracebacks'] + dev['tracebacks']}   hangs (> {args.timeout:g} s): "
          f"{totals['hangs']}   damaged files reported as fine: {totals['fine_but_damaged']}")
    print(f"  refused with a message: {totals['refused']} command runs, {dev['refused']} device frames;"
          f"  flipped files read back identical to the original (the bytes were unused): "
          f"{totals['value_only']};  slowest command: {slowest[0]:.2f} s ({slowest[1]})")
    if args.json:
        args.json.write_text(json.dumps({"totals": totals, "devices": dev, "cases": log}, indent=1))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if totals["tracebacks"] + dev["tracebacks"] + totals["hangs"] + totals["fine_but_damaged"] else 0


if __name__ == "__main__":
    sys.exit(main())
