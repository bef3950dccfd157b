"""The fast subset of scripts/fuzz_inputs.py: a few dozen damaged and hostile inputs, every reader.

Session files cut and flipped and broken, C3D and text force files, protocol/lab/calibration
YAML, device frames; every command in a child process under a 10 s watchdog. The big run is the
script itself (docs/archive.md quotes it).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_inputs.py"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_fuzz_finds_no_traceback_no_hang_and_no_damage_called_fine(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--work", str(tmp_path)],
                         capture_output=True, text=True, timeout=880)
    out = res.stdout
    m = re.search(r"(\d+) file cases \((\d+) command runs\) \+ (\d+) device frames", out)
    assert m, out + res.stderr
    cases, runs, frames = map(int, m.groups())
    assert cases >= 40 and runs >= 150 and frames >= 1000
    assert "tracebacks: 0   hangs (> 10 s): 0   damaged files reported as fine: 0" in out, out
    assert res.returncode == 0, out + res.stderr[-2000:]
    # the damaged inputs were refused with messages, not silently accepted
    refused = int(re.search(r"refused with a message: (\d+) command runs", out).group(1))
    assert refused > cases
