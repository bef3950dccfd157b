"""`labsuite run --gui` end to end on the simulated lab, offscreen: the windows join as a role."""

from __future__ import annotations

import os
import subprocess
import sys

from labsuite.archive.reader import open_session

PROTOCOL = """schema: labsuite-protocol/1
name: gui-run
speed_m_s: 3.0
stages:
  - {name: base, kind: baseline, duration_s: 15}
"""


def test_run_with_gui_completes_and_writes_the_session(tmp_path, uid):
    proto = tmp_path / "gui.yaml"
    proto.write_text(PROTOCOL)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run(
        [sys.executable, "-m", "labsuite", "run", str(proto), "--participant", "G01", "--simulate",
         "--gui", "--out", str(tmp_path / "s"), "--quiet", "--lab-id", uid, "--pain-script", "0",
         "--auto-start"],
        capture_output=True, text=True, timeout=110, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "session ended: completed" in out.stdout
    files = list((tmp_path / "s").glob("G01_*.h5"))
    assert len(files) == 1
    with open_session(files[0]) as session:
        assert session.complete
        assert len(session.steps) > 20
        assert [s.name for s in session.stages] == ["base"]
