"""Lab configuration: the YAML file naming a lab's devices, their connection settings and calibrations.

Read before a session starts (``labsuite run PROTOCOL --lab lab.yaml``): validated like protocol
files (errors name file, line, field path and what was expected), then turned into Driver objects
or Supervisor roles, one process per device. ``docs/devices.md`` documents every device kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from labsuite import ids
from labsuite.drivers.registry import build_driver, treadmill_settings
from labsuite.errors import ConfigError
from labsuite.processes import RoleSpec
from labsuite.yamlfile import read_text
from labsuite.yamlmodel import parse_yaml_model

if TYPE_CHECKING:
    from labsuite.calibration import PlateCalibration
    from labsuite.drivers.base import Driver

SCHEMA_ID = "labsuite-lab/1"
DEFAULT_CALIBRATION_MAX_AGE_DAYS = 365


# ---- lab file schema ---------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_Name = Annotated[str, Field(pattern=ids.DEVICE_NAME_PATTERN)]
_LabId = Annotated[str, Field(pattern=ids.LAB_ID_PATTERN)]
_Rate = Annotated[float, Field(gt=0, le=100_000)]
_Port = Annotated[int, Field(gt=0, lt=65536)]
_Belt = Literal["left", "right", "single"]


class BertecTreadmillDevice(_Strict):
    """A Bertec treadmill's belt controller (TCP remote control)."""

    kind: Literal["bertec_treadmill"]
    name: _Name
    host: Annotated[str, Field(min_length=1)]
    port: _Port = 4000
    state_rate_hz: _Rate = 50.0
    max_speed_m_s: Annotated[float, Field(gt=0, le=8)] = 3.0
    max_reverse_m_s: Annotated[float, Field(ge=0, le=2)] = 0.0
    default_accel_m_s2: Annotated[float, Field(gt=0, le=5)] = 0.5
    max_accel_m_s2: Annotated[float, Field(gt=0, le=5)] = 2.0
    stop_decel_m_s2: Annotated[float, Field(gt=0, le=5)] = 1.0
    emergency_decel_m_s2: Annotated[float, Field(gt=0, le=10)] = 3.0
    min_incline_deg: Annotated[float, Field(ge=-15, le=30)] = 0.0
    max_incline_deg: Annotated[float, Field(ge=-15, le=30)] = 15.0


class _PlateDevice(_Strict):
    name: _Name
    belt: _Belt
    calibration: Annotated[str, Field(min_length=1)]
    rate_hz: _Rate = 1000.0
    tare_s: Annotated[float, Field(gt=0, le=30)] = 1.0


class SerialPlateDevice(_PlateDevice):
    """A force-plate amplifier streaming LSFP frames over a serial port (docs/devices.md)."""

    kind: Literal["serial_plate"]
    port: Annotated[str, Field(min_length=1)]
    baudrate: Annotated[int, Field(gt=0)] = 921600


class QTMPlateDevice(_PlateDevice):
    """A force plate read through Qualisys Track Manager's real-time server."""

    kind: Literal["qtm_plate"]
    host: Annotated[str, Field(min_length=1)]
    port: _Port = 22223
    plate_id: Annotated[int, Field(ge=1)] = 1
    protocol_version: str = "1.22"


class NIDAQPlateDevice(_PlateDevice):
    """An analog force plate read through an NI DAQ (needs the nidaqmx extra)."""

    kind: Literal["nidaq_plate"]
    channels: Annotated[str, Field(min_length=1)]
    min_voltage_v: float = -10.0
    max_voltage_v: float = 10.0
    terminal: Literal["differential", "rse", "nrse"] = "differential"


class XIMU3Device(_Strict):
    """An x-IMU3 on a serial port, mounted on a tibia."""

    kind: Literal["ximu3"]
    name: _Name
    port: Annotated[str, Field(min_length=1)]
    baudrate: Annotated[int, Field(gt=0)] = 115200
    side: Literal["left", "right"]
    location: str = ""
    rate_hz: _Rate = 400.0


class CameraDevice(_Strict):
    """An OpenCV capture source (index, device path or URL) recorded next to the session."""

    kind: Literal["camera"]
    name: _Name
    source: int | Annotated[str, Field(min_length=1)]
    rate_hz: _Rate = 30.0
    fourcc: Annotated[str, Field(min_length=4, max_length=4)] = "MJPG"


Device = Annotated[BertecTreadmillDevice | SerialPlateDevice | QTMPlateDevice | NIDAQPlateDevice
                   | XIMU3Device | CameraDevice, Field(discriminator="kind")]
_KIND_TAGS = {"bertec_treadmill", "serial_plate", "qtm_plate", "nidaq_plate", "ximu3", "camera"}
DEVICE_KINDS = tuple(sorted(_KIND_TAGS))


class LabModel(_Strict):
    """The lab file (schema ``labsuite-lab/1``)."""

    schema_: Literal["labsuite-lab/1"] = Field(alias="schema")
    lab_id: _LabId
    calibration_max_age_days: Annotated[int, Field(ge=1, le=3650)] = DEFAULT_CALIBRATION_MAX_AGE_DAYS
    devices: Annotated[list[Device], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> LabModel:
        names = [d.name for d in self.devices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"devices: names must be unique; repeated: {dupes}")
        if sum(isinstance(d, BertecTreadmillDevice) for d in self.devices) > 1:
            raise ValueError("devices: expected at most one treadmill")
        return self


# ---- the loaded configuration -------------------------------------------------------------

@dataclass(frozen=True)
class LabConfig:
    """A validated lab file: devices, calibrations (loaded and checked) and stream ids."""

    file: Path
    model: LabModel
    calibrations: dict[str, PlateCalibration]

    @property
    def lab_id(self) -> str:
        """The lab's id (part of every source_id)."""
        return self.model.lab_id

    @property
    def device_names(self) -> tuple[str, ...]:
        """Device names in file order."""
        return tuple(d.name for d in self.model.devices)

    @property
    def session_commands_source_id(self) -> str:
        """Where the session publishes treadmill commands and its heartbeat (as the simulated lab)."""
        return ids.commands_source_id(self.lab_id)

    def device(self, name: str) -> Any:
        """The validated settings of one device; ConfigError listing the names if unknown."""
        for d in self.model.devices:
            if d.name == name:
                return d
        raise ConfigError(f"{self.file}: no device named {name!r}; the lab has {list(self.device_names)}")

    def source_id(self, name: str) -> str:
        """The stable source_id of a device's stream."""
        self.device(name)
        return ids.device_source_id(self.lab_id, name)

    def calibration_warnings(self, today: Any = None) -> list[str]:
        """Warnings for calibrations older than the lab's ``calibration_max_age_days``."""
        out = []
        for name, cal in self.calibrations.items():
            text = cal.age_warning(self.model.calibration_max_age_days, today)
            if text:
                out.append(f"device {name!r}: {text}")
        return out

    def build_driver(self, name: str, *, session_dir: str | Path | None = None) -> Driver:
        """Build the Driver of one device; ``session_dir`` is where cameras write their video."""
        return build_driver(self.device(name), lab_id=self.lab_id, where=f"{self.file}: device {name!r}",
                            calibration=self.calibrations.get(name), session_dir=session_dir)

    def build_drivers(self, *, session_dir: str | Path | None = None) -> dict[str, Driver]:
        """Build every device's Driver, by device name."""
        return {n: self.build_driver(n, session_dir=session_dir) for n in self.device_names}

    def command_source_id(self, name: str) -> str | None:
        """The command stream a device listens to (the treadmill), or None."""
        return (self.session_commands_source_id
                if isinstance(self.device(name), BertecTreadmillDevice) else None)

    def roles(self, *, session_dir: str | Path | None = None) -> list[RoleSpec]:
        """One restartable Supervisor role per device, like ``sim_lab_roles``."""
        return [RoleSpec(f"device-{n}", run_lab_device,
                         {"lab_file": str(self.file), "device": n,
                          "session_dir": None if session_dir is None else str(session_dir)})
                for n in self.device_names]


def parse_lab_config(text: str, file: str | Path) -> LabConfig:
    """Validate lab ``text`` (calibration paths relative to ``file``'s folder) and load calibrations."""
    from labsuite.calibration import load_calibration

    path = Path(file)
    model = parse_yaml_model(text, str(path), LabModel, what="lab file", tags=_KIND_TAGS)
    cals = {}
    for i, dev in enumerate(model.devices):
        cal_file = getattr(dev, "calibration", None)
        if cal_file is None:
            continue
        cal_path = Path(cal_file)
        if not cal_path.is_absolute():
            cal_path = path.parent / cal_path
        if not cal_path.exists():
            raise ConfigError(f"{path}: devices[{i}].calibration: file {str(cal_path)!r} not found "
                              "(paths are relative to the lab file's folder)")
        cal = load_calibration(cal_path)
        if dev.kind == "qtm_plate" and cal.n_inputs != 6:
            raise ConfigError(f"{path}: devices[{i}].calibration: QTM sends 6 force/moment "
                              f"channels; expected a 6x6 matrix in {cal_path}, got 6x{cal.n_inputs}")
        cals[dev.name] = cal
    for i, dev in enumerate(model.devices):
        if isinstance(dev, BertecTreadmillDevice):
            treadmill_settings(model.lab_id, dev, f"{path}: devices[{i}]")
        if isinstance(dev, NIDAQPlateDevice) and not dev.min_voltage_v < dev.max_voltage_v:
            raise ConfigError(f"{path}: devices[{i}].min_voltage_v: expected < max_voltage_v")
    return LabConfig(path, model, cals)


def load_lab_config(path: str | Path) -> LabConfig:
    """Read and validate a lab file; ConfigError naming file, line, field path and expectation."""
    p = Path(path)
    return parse_lab_config(read_text(p, "lab file"), p)


def run_lab_device(stop: Any, lab_file: str, device: str, session_dir: str | None = None) -> None:
    """Device role for the Supervisor: run one device of a lab file until ``stop`` is set."""
    import threading

    from labsuite.drivers.base import DriverRunner

    config = load_lab_config(lab_file)
    driver = config.build_driver(device, session_dir=session_dir)
    runner = DriverRunner(driver, command_source_id=config.command_source_id(device))
    threading.Thread(target=lambda: (stop.wait(), runner.stop()), daemon=True).start()
    runner.run()
