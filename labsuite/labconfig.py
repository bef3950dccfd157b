"""Lab configuration: the YAML file naming a lab's devices, their connection settings and calibrations.

Read before a session starts (``labsuite run PROTOCOL --lab lab.yaml``): validated like protocol
files (errors name file, line, field path and what was expected), then turned into Driver objects
or Supervisor roles, one process per device. ``docs/devices.md`` documents every device kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from labsuite import ids
from labsuite.errors import ConfigError
from labsuite.yamlfile import format_path, node_positions, parse_yaml, read_text

if TYPE_CHECKING:
    from labsuite.calibration import PlateCalibration
    from labsuite.drivers.base import Driver

SCHEMA_ID = "labsuite-lab/1"
DEFAULT_CALIBRATION_MAX_AGE_DAYS = 365

M = TypeVar("M", bound=BaseModel)


# ---- YAML files with located errors (shared with calibration files) ------------------------

def parse_yaml_model(text: str, file: str, model: type[M], *, what: str) -> M:
    """Parse YAML ``text`` and validate it as ``model``; ConfigError listing every problem.

    Each problem reads ``file:line: field.path: what was expected (got ...)``.
    """
    try:
        node, data = parse_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        msg = " ".join(x for x in (exc.context, exc.problem) if x)
        raise ConfigError(f"{file}{line}: invalid {what}: YAML syntax error: {msg}") from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{file}: invalid {what}: expected a mapping of keys, got {got}")
    positions = {path: line for path, (line, _col) in node_positions(node).items()}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = [p for p in err["loc"] if not (isinstance(p, str) and (
                p.startswith(("literal[", "function-")) or p in _KIND_TAGS))]
            loc = ["schema" if p == "schema_" else p for p in loc]
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                msg = "required field is missing"
            elif err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling against docs/devices.md)"
            elif "input" in err and not isinstance(err["input"], (dict, list)):
                msg = f"{msg} (got {err['input']!r})"
            probe = tuple(loc)
            while probe and probe not in positions:
                probe = probe[:-1]
            line_no = positions.get(probe, 0)
            where = f"{file}:{line_no}" if line_no else file
            problems.append(f"{where}: {format_path(loc) or '(top level)'}: {msg}")
        unique = list(dict.fromkeys(problems))
        raise ConfigError(f"{file}: invalid {what} ({len(unique)} problem"
                          f"{'s' if len(unique) != 1 else ''})\n  " + "\n  ".join(unique)) from None


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
        from labsuite.drivers.registry import build_driver

        return build_driver(self, self.device(name), session_dir=session_dir)

    def build_drivers(self, *, session_dir: str | Path | None = None) -> dict[str, Driver]:
        """Build every device's Driver, by device name."""
        return {n: self.build_driver(n, session_dir=session_dir) for n in self.device_names}

    def command_source_id(self, name: str) -> str | None:
        """The command stream a device listens to (the treadmill), or None."""
        return (self.session_commands_source_id
                if isinstance(self.device(name), BertecTreadmillDevice) else None)

    def roles(self, *, session_dir: str | Path | None = None) -> list[tuple[str, Any, dict[str, Any]]]:
        """One Supervisor role per device as (name, target, kwargs), like ``sim_lab_roles``."""
        return [(f"device-{n}", run_lab_device,
                 {"lab_file": str(self.file), "device": n,
                  "session_dir": None if session_dir is None else str(session_dir)})
                for n in self.device_names]


def parse_lab_config(text: str, file: str | Path) -> LabConfig:
    """Validate lab ``text`` (calibration paths relative to ``file``'s folder) and load calibrations."""
    from labsuite.calibration import load_calibration

    path = Path(file)
    model = parse_yaml_model(text, str(path), LabModel, what="lab file")
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
            _treadmill_settings(model.lab_id, dev, f"{path}: devices[{i}]")
        if isinstance(dev, NIDAQPlateDevice) and not dev.min_voltage_v < dev.max_voltage_v:
            raise ConfigError(f"{path}: devices[{i}].min_voltage_v: expected < max_voltage_v")
    return LabConfig(path, model, cals)


def load_lab_config(path: str | Path) -> LabConfig:
    """Read and validate a lab file; ConfigError naming file, line, field path and expectation."""
    p = Path(path)
    return parse_lab_config(read_text(p, "lab file"), p)


def _treadmill_settings(lab_id: str, dev: BertecTreadmillDevice, where: str) -> Any:
    from labsuite.drivers.treadmill import TreadmillSettings

    try:
        return TreadmillSettings(
            source_id=ids.device_source_id(lab_id, dev.name), name=f"labsuite-{dev.name}",
            manufacturer="Bertec", model="instrumented treadmill", state_rate_hz=dev.state_rate_hz,
            max_speed_m_s=dev.max_speed_m_s, max_reverse_m_s=dev.max_reverse_m_s,
            default_accel_m_s2=dev.default_accel_m_s2, max_accel_m_s2=dev.max_accel_m_s2,
            stop_decel_m_s2=dev.stop_decel_m_s2, emergency_decel_m_s2=dev.emergency_decel_m_s2,
            min_incline_deg=dev.min_incline_deg, max_incline_deg=dev.max_incline_deg)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def run_lab_device(stop: Any, lab_file: str, device: str, session_dir: str | None = None) -> None:
    """Device role for the Supervisor: run one device of a lab file until ``stop`` is set."""
    import threading

    from labsuite.drivers.base import DriverRunner

    config = load_lab_config(lab_file)
    driver = config.build_driver(device, session_dir=session_dir)
    runner = DriverRunner(driver, command_source_id=config.command_source_id(device))
    threading.Thread(target=lambda: (stop.wait(), runner.stop()), daemon=True).start()
    runner.run()
