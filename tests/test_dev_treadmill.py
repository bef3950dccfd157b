"""Treadmill hard ceilings: no option, lab file or setting sends more than the model allows.

Covers the Bertec (CLI over a TCP emulator, lab files, Python settings) and the simulated treadmill.
"""

from __future__ import annotations

import time

import pytest
from emulators.bertec import BertecEmulator

from labsuite.cli import main
from labsuite.drivers.bertec import BertecSettings, BertecTreadmill
from labsuite.drivers.sim.lab import SimLabSettings, SimTreadmill
from labsuite.drivers.treadmill import (
    BERTEC_TREADMILL,
    SIMULATED_TREADMILL,
    TreadmillDriver,
    TreadmillSettings,
)
from labsuite.errors import ConfigError
from labsuite.labconfig import parse_lab_config


def _wait_for(cond, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_the_cli_cannot_raise_the_bertec_ceiling(capsys):
    with BertecEmulator() as emu:
        assert main(["treadmill", "--bertec", emu.address, "--max-speed", "25", "speed", "25"]) == 1
        err = capsys.readouterr().err
        assert ("--max-speed: treadmill settings max_speed_m_s = 25 m/s: above the hard limit of the "
                "Bertec instrumented treadmill (6.5 m/s)") in err
        assert main(["treadmill", "--bertec", emu.address, "--max-speed", "6.5", "speed", "7"]) == 1
        assert "hard ceiling of 6.5 m/s" in capsys.readouterr().err
        assert main(["treadmill", "--bertec", emu.address, "--accel", "40", "stop"]) == 1
        assert "--accel: treadmill settings default_accel_m_s2" in capsys.readouterr().err
        assert main(["treadmill", "--bertec", emu.address, "--max-speed", "6.5", "speed", "6.5"]) == 0
        _wait_for(lambda: len(emu.commands) == 1)
        assert emu.commands[0].speeds_mm_s == (6500,) * 4
        assert emu.violations == []


@pytest.mark.parametrize(("field", "value"), [
    ("max_speed_m_s", 8.0), ("max_speed_m_s", 6.6), ("max_incline_deg", 20.0), ("max_reverse_m_s", 2.0),
])
def test_a_lab_file_cannot_raise_the_bertec_ceiling(tmp_path, field, value):
    # max_reverse_m_s 2.0 is the ceiling itself: accepted
    text = f"""schema: labsuite-lab/1
lab_id: lab-a
devices:
  - {{kind: bertec_treadmill, name: tm, host: 10.0.0.2, {field}: {value}}}
"""
    if field == "max_reverse_m_s":
        config = parse_lab_config(text, tmp_path / "lab.yaml")
        assert config.build_driver("tm").settings.max_reverse_m_s == 2.0
        return
    with pytest.raises(ConfigError, match=rf"lab\.yaml: devices\[0\]: treadmill settings {field} = "
                                          rf"{value:g} .*hard limit of the Bertec instrumented treadmill"):
        parse_lab_config(text, tmp_path / "lab.yaml")


def test_every_treadmill_driver_checks_its_settings_against_its_own_model(uid):
    # Settings that do not name the model are still held to the driver's ceiling.
    loose = TreadmillSettings(source_id=uid, max_speed_m_s=25.0)
    with pytest.raises(ConfigError, match=r"max_speed_m_s = 25 m/s: above the hard limit of the Bertec"):
        BertecTreadmill(BertecSettings(host="10.0.0.2", treadmill=loose))
    with pytest.raises(ConfigError, match="hard limit of the labsuite simulated instrumented treadmill"):
        TreadmillSettings(source_id=uid, manufacturer=SIMULATED_TREADMILL.manufacturer,
                          model=SIMULATED_TREADMILL.model, max_speed_m_s=6.6)
    with pytest.raises(ConfigError, match=r"emergency_decel_m_s2 = 12 m/s\^2: above the hard limit"):
        TreadmillSettings(source_id=uid, manufacturer="Bertec", model="instrumented treadmill",
                          emergency_decel_m_s2=12.0)

    class Unrated(TreadmillDriver):
        def _connect(self) -> None: ...
        def _disconnect(self) -> None: ...
        def _send_belt_command(self, *args: float) -> None: ...

    with pytest.raises(ConfigError, match="must declare MODEL"):
        Unrated(TreadmillSettings(source_id=uid))
    assert BertecTreadmill.MODEL is BERTEC_TREADMILL and SimTreadmill.MODEL is SIMULATED_TREADMILL


def test_the_simulated_treadmill_never_exceeds_its_ceiling():
    drv = SimTreadmill(SimLabSettings(lab_id="ceiling", initial_speed_m_s=0.0))
    drv.open()
    try:
        drv.handle_command({"cmd": "speed", "right_m_s": 25.0, "left_m_s": 25.0, "accel_m_s2": 50.0})
        assert drv.last_command is not None
        assert (drv.last_command.right_m_s, drv.last_command.accel_m_s2) == (5.0, 2.0)  # its settings
        # Settings forced past every check still cannot send more than the model's ceiling.
        object.__setattr__(drv.settings, "max_speed_m_s", 25.0)
        object.__setattr__(drv.settings, "emergency_decel_m_s2", 40.0)
        drv.handle_command({"cmd": "speed", "right_m_s": 25.0, "left_m_s": 25.0})
        assert drv.last_command.right_m_s == SIMULATED_TREADMILL.max_speed_m_s == 6.5
        drv.handle_command({"cmd": "emergency_stop"})
        assert drv.last_command.accel_m_s2 == SIMULATED_TREADMILL.max_accel_m_s2
    finally:
        drv.close()
