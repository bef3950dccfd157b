"""Lab files: the documented example loads; errors name file, line, field and expectation; drivers."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from emulators.bertec import BertecEmulator

from labsuite.cli import main
from labsuite.drivers.bertec import BertecTreadmill
from labsuite.drivers.registry import DRIVERS, driver_info
from labsuite.drivers.serial_plate import SerialPlateDriver
from labsuite.errors import ConfigError
from labsuite.labconfig import DEVICE_KINDS, load_lab_config, parse_lab_config, run_lab_device

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "devices.md"


def _doc_lab_text() -> str:
    text = DOC.read_text()
    block = re.search(r"```yaml\n(schema: labsuite-lab/1.*?)```", text, re.S)
    assert block, "docs/devices.md lost its example lab file"
    return block.group(1).replace("calibration: calibration/", f"calibration: {REPO / 'calibration'}/")


def test_documented_example_lab_file_is_valid(tmp_path):
    lab = tmp_path / "lab.yaml"
    lab.write_text(_doc_lab_text())
    config = load_lab_config(lab)
    assert config.device_names == ("treadmill", "fp-left", "fp-right", "imu-left", "camera", "fp-spare")
    assert {d.kind for d in config.model.devices} == set(DEVICE_KINDS)
    assert config.source_id("fp-left") == "labsuite-gaitlab-1-fp-left"
    assert config.command_source_id("treadmill") == "labsuite-session-gaitlab-1-commands"
    assert config.command_source_id("fp-left") is None
    assert config.calibrations["fp-left"].calibration_id == "example-left-2026-06"
    roles = config.roles(session_dir=tmp_path)
    assert [r.name for r in roles][:2] == ["device-treadmill", "device-fp-left"]
    assert roles[0].target is run_lab_device and roles[0].kwargs["lab_file"] == str(lab)
    assert all(r.restart for r in roles)
    # Building needs no device: drivers open only when run.
    tm = config.build_driver("treadmill")
    assert isinstance(tm, BertecTreadmill) and tm.settings.max_speed_m_s == 4.0
    fp = config.build_driver("fp-left")
    assert isinstance(fp, SerialPlateDriver)
    spec = fp.stream_specs()[0]
    assert spec.source_id == "labsuite-gaitlab-1-fp-left"
    assert spec.setup["force_platform"]["calibration_id"] == "example-left-2026-06"


GOOD = """schema: labsuite-lab/1
lab_id: lab-a
devices:
  - kind: serial_plate
    name: fp-left
    port: /dev/ttyUSB0
    belt: left
    calibration: CAL
"""


@pytest.mark.parametrize(("edit", "pattern"), [
    (lambda t: t.replace("belt: left", "belt: middle"), r"lab\.yaml:7: devices\[0\]\.belt: Input should be"),
    (lambda t: t.replace("kind: serial_plate", "kind: kistler_usb"), r"devices\[0\]: .*kistler_usb"),
    (lambda t: t.replace("    port: /dev/ttyUSB0\n", ""), r"devices\[0\]\.port: required field is missing"),
    (lambda t: t.replace("name: fp-left", "name: fp left/../x"), r"devices\[0\]\.name: String should match"),
    (lambda t: t + "    colour: red\n", r"lab\.yaml:9: devices\[0\]\.colour: unknown key"),
    (lambda t: t.replace("lab_id: lab-a", "lab_id: lab-a\nlab_id: lab-b"), r"duplicate key 'lab_id'"),
    (lambda t: t + t[t.index("  - kind"):], r"names must be unique; repeated: \['fp-left'\]"),
    (lambda t: t.replace("CAL", "missing.yaml"),
     r"devices\[0\]\.calibration: file .*missing\.yaml' not found"),
    (lambda t: t.replace("schema: labsuite-lab/1", "schema: labsuite-lab/9"), r"schema: Input should be"),
])
def test_bad_lab_files_are_located(tmp_path, edit, pattern):
    text = edit(GOOD).replace("CAL", str(REPO / "calibration" / "example-left.yaml"))
    with pytest.raises(ConfigError, match=pattern):
        parse_lab_config(text, tmp_path / "lab.yaml")


def test_treadmill_limits_are_checked_across_fields(tmp_path):
    text = """schema: labsuite-lab/1
lab_id: lab-a
devices:
  - {kind: bertec_treadmill, name: tm, host: 10.0.0.2, default_accel_m_s2: 3.0, max_accel_m_s2: 2.0}
"""
    with pytest.raises(ConfigError, match=r"devices\[0\]: treadmill settings default_accel_m_s2"):
        parse_lab_config(text, tmp_path / "lab.yaml")


def test_qtm_plate_needs_a_6x6_matrix(tmp_path):
    eight = REPO / "calibration" / "example-8ch.yaml"
    text = f"""schema: labsuite-lab/1
lab_id: lab-a
devices:
  - {{kind: qtm_plate, name: fp, host: h, belt: single, calibration: {eight}}}
"""
    with pytest.raises(ConfigError, match="QTM sends 6 force/moment channels"):
        parse_lab_config(text, tmp_path / "lab.yaml")


def test_calibration_age_warning(tmp_path):
    import datetime as dt

    text = GOOD.replace("CAL", str(REPO / "calibration" / "example-left.yaml")).replace(
        "devices:", "calibration_max_age_days: 30\ndevices:")
    config = parse_lab_config(text, tmp_path / "lab.yaml")
    assert config.calibration_warnings(today=dt.date(2026, 6, 20)) == []
    warnings = config.calibration_warnings(today=dt.date(2026, 8, 1))
    assert len(warnings) == 1 and "device 'fp-left'" in warnings[0] and "limit is 30 days" in warnings[0]


def test_drivers_list_and_check(tmp_path, capsys):
    assert main(["drivers", "list"]) == 0
    out = capsys.readouterr().out
    for info in DRIVERS:
        assert info.kind in out
    assert "pip install" in out or all(d.available()[0] for d in DRIVERS)
    lab = tmp_path / "lab.yaml"
    lab.write_text(_doc_lab_text())
    assert main(["drivers", "check", str(lab)]) == 0
    out = capsys.readouterr().out
    assert "fp-left: serial_plate, stream labsuite-gaitlab-1-fp-left, calibration example-left-2026-06" in out
    lab.write_text(_doc_lab_text().replace("rate_hz: 400", "rate_hz: -1"))
    assert main(["drivers", "check", str(lab)]) == 1
    assert re.search(r"lab\.yaml:\d+: devices\[3\]\.rate_hz", capsys.readouterr().err)
    with pytest.raises(ConfigError, match="unknown driver kind"):
        driver_info("teleporter")


def test_run_lab_device_role_drives_the_treadmill_from_the_lab_file(tmp_path):
    """The Supervisor's target runs a lab device until stopped (here in a thread, not a process)."""
    with BertecEmulator(incline_deg=2.0) as emu:
        lab = tmp_path / "lab.yaml"
        lab.write_text(f"""schema: labsuite-lab/1
lab_id: {tmp_path.name[-16:].replace('_', '-')}
devices:
  - {{kind: bertec_treadmill, name: tm, host: 127.0.0.1, port: {emu.port}}}
""")
        stop = threading.Event()
        thread = threading.Thread(target=run_lab_device, kwargs={"stop": stop, "lab_file": str(lab),
                                                                 "device": "tm"}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while emu.feedback_sent < 20 or emu.connections < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stop.set()
        thread.join(timeout=15)
        assert not thread.is_alive()
        assert emu.violations == []
