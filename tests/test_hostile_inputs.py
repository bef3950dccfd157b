"""Truncated or odd input files and impossible options get a clear message and a documented exit code.

Real files: the RBDS C3D cut at 10/50/90 % of its bytes, the RBDS text file with impossible rates;
real `labsuite record` runs with bad --out folders (no LSL stream is needed to refuse those).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

RBDS008_MAP = ["--map", "fz=Fy,fx=Fx,fy=-Fz,copx=COPx,copy=-COPz", "--length-unit", "mm"]


def _labsuite(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "labsuite", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_a_truncated_c3d_is_refused_with_what_is_missing(tmp_path, shared_data, fraction):
    src = (shared_data / "rbds" / "RBDS001runT35.c3d").read_bytes()
    cut = tmp_path / "cut.c3d"
    cut.write_bytes(src[: int(len(src) * fraction)])
    res = _labsuite("analyze", cut, "--mass-kg", 62)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "announces 4500 frames" in res.stderr and "cut short" in res.stderr
    assert res.stdout == ""
    # replay reads C3D files with the same loader
    res = _labsuite("replay", cut)
    assert res.returncode == 1 and "cut short" in res.stderr


def test_the_complete_c3d_still_loads(shared_data):
    from labsuite.realtime.files import load_c3d

    data = load_c3d(shared_data / "rbds" / "RBDS001runT35.c3d")
    assert len(data.streams["single"][0]) == 9000


@pytest.mark.parametrize("rate", ["1e9", "1e6", "-5", "nan"])
def test_impossible_rates_are_refused(shared_data, rate):
    res = _labsuite("analyze", shared_data / "rbds" / "RBDS008runT35forces.txt", "--rate-hz", rate,
                    *RBDS008_MAP)
    assert res.returncode == 1 and "Traceback" not in res.stderr and "--rate-hz" in res.stderr


def test_a_rate_that_makes_the_file_too_short_is_refused(shared_data):
    res = _labsuite("analyze", shared_data / "rbds" / "RBDS008runT35forces.txt", "--rate-hz", "50000",
                    *RBDS008_MAP)
    assert res.returncode == 1 and "too short to hold one step" in res.stderr


def test_no_steps_found_has_its_own_exit_code_and_message(shared_data, tmp_path):
    # ten times the real rate: every contact lasts 22 ms, below the minimum contact time
    out = tmp_path / "steps.csv"
    res = _labsuite("analyze", shared_data / "rbds" / "RBDS008runT35forces.txt", "--rate-hz", "3000",
                    *RBDS008_MAP, "--out", out)
    assert res.returncode == 4, res.stderr
    assert "no steps found" in res.stderr and "--rate-hz" in res.stderr
    assert out.read_text().count("\n") == 1  # the header row, so scripts still get a table


def test_record_out_naming_a_file_a_path_under_a_file_or_proc(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, expected in ((afile, "is a file"), (afile / "sub", "which is a file"),
                          ("/proc", "virtual file system"), ("/proc/labsuite", "virtual file system")):
        res = _labsuite("record", "--out", out, "--participant", "P1", "--duration", 1, "--wait-s", 0.2,
                        "--processor", "off", timeout=60)
        assert res.returncode == 1, (out, res.stderr)
        assert expected in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert afile.read_text() == "x"


def test_record_with_nothing_recorded_exits_4(tmp_path, uid):
    res = _labsuite("record", "--out", tmp_path, "--participant", "P1", "--duration", 1, "--wait-s", 0.2,
                    "--processor", "off", "--streams", f"{uid}-never-published", "--quiet", timeout=60)
    assert res.returncode == 4, res.stderr
    assert "nothing recorded" in res.stderr
    assert len(list(tmp_path.glob("P1_*.h5"))) == 1  # the (empty) file is kept and named


def test_a_c3d_that_crashes_or_hangs_ezc3d_is_refused_in_bounded_time(tmp_path, shared_data):
    """Seeded flips in the header/parameter blocks that made ezc3d segfault or spin (fuzz_inputs)."""
    src = (shared_data / "rbds" / "RBDS001runT35.c3d").read_bytes()
    rng = np.random.default_rng(3)
    outcomes = []
    for r in range(22):
        buf = bytearray(src)
        region = 512 * 12 if r % 2 else len(src)
        for pos in rng.choice(region, size=20, replace=False):
            buf[pos] ^= int(rng.integers(1, 256))
        if r not in (1, 3, 21):  # the cases found: 1 crashed ezc3d (SIGSEGV), 3 and 21 hung it
            continue
        p = tmp_path / f"f{r}.c3d"
        p.write_bytes(bytes(buf))
        res = _labsuite("analyze", p, "--mass-kg", 62, timeout=60)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        outcomes.append(res.stderr)
    assert any("crashed reading" in o for o in outcomes), outcomes
    assert any("did not finish reading" in o for o in outcomes), outcomes
