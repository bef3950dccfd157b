"""The drivers labsuite knows: what ``labsuite drivers list`` shows and how a lab file builds them.

Each entry names a device kind of the lab file (``labsuite.labconfig``), the module and class that
drive it, the optional package it needs, and what it publishes. Modules are imported only when a
driver is built, so listing drivers never needs OpenCV, nidaqmx or a serial port.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labsuite import ids
from labsuite.errors import ConfigError

if TYPE_CHECKING:
    from labsuite.calibration import PlateCalibration
    from labsuite.drivers.base import Driver
    from labsuite.drivers.treadmill import TreadmillSettings


@dataclass(frozen=True)
class DriverInfo:
    """One driver: lab-file kind, implementation, transport, optional requirement, description."""

    kind: str
    module: str
    cls: str
    transport: str
    publishes: str
    description: str
    requires: str = ""
    extra: str = ""

    def available(self) -> tuple[bool, str]:
        """Whether the optional package is importable, and a note saying what to install if not."""
        if not self.requires:
            return True, ""
        if importlib.util.find_spec(self.requires) is None:
            hint = f"pip install 'labsuite[{self.extra}]'" if self.extra else f"pip install {self.requires}"
            return False, f"needs {self.requires} ({hint})"
        return True, ""


DRIVERS: tuple[DriverInfo, ...] = (
    DriverInfo("bertec_treadmill", "labsuite.drivers.bertec", "BertecTreadmill", "TCP",
               "treadmill state (belt speeds, incline); obeys session commands",
               "Bertec instrumented treadmill belt control (legacy remote-control protocol)"),
    DriverInfo("serial_plate", "labsuite.drivers.serial_plate", "SerialPlateDriver", "serial",
               "force plate Fx Fy Fz Mx My Mz", "force-plate amplifier streaming LSFP frames",
               requires="serial"),
    DriverInfo("qtm_plate", "labsuite.drivers.qtm", "QTMPlateDriver", "TCP",
               "force plate Fx Fy Fz Mx My Mz",
               "force plate through Qualisys Track Manager's real-time server (qtm-rt)",
               requires="qtm_rt"),
    DriverInfo("nidaq_plate", "labsuite.drivers.nidaq", "NIDAQPlateDriver", "NI-DAQmx",
               "force plate Fx Fy Fz Mx My Mz", "analog force plate through an NI DAQ",
               requires="nidaqmx", extra="nidaq"),
    DriverInfo("ximu3", "labsuite.drivers.ximu3", "XIMU3Driver", "serial",
               "IMU ax ay az gx gy gz (tibia frame)", "x-IMU3 inertial sensor (ASCII or binary)",
               requires="serial"),
    DriverInfo("camera", "labsuite.drivers.camera", "CameraDriver", "OpenCV",
               "video frame counter (frame index per frame); video file next to the session",
               "camera or video source through OpenCV", requires="cv2", extra="camera"),
)


def driver_info(kind: str) -> DriverInfo:
    """The entry of one kind; ConfigError listing the kinds if unknown."""
    for info in DRIVERS:
        if info.kind == kind:
            return info
    raise ConfigError(f"unknown driver kind {kind!r}; expected one of {[d.kind for d in DRIVERS]}")


def treadmill_settings(lab_id: str, device: Any, where: str) -> TreadmillSettings:
    """The limits of a lab file's treadmill entry as TreadmillSettings; ConfigError prefixed ``where``."""
    from labsuite.drivers.treadmill import TreadmillSettings

    try:
        return TreadmillSettings(
            source_id=ids.device_source_id(lab_id, device.name), name=f"labsuite-{device.name}",
            manufacturer="Bertec", model="instrumented treadmill", state_rate_hz=device.state_rate_hz,
            max_speed_m_s=device.max_speed_m_s, max_reverse_m_s=device.max_reverse_m_s,
            default_accel_m_s2=device.default_accel_m_s2, max_accel_m_s2=device.max_accel_m_s2,
            stop_decel_m_s2=device.stop_decel_m_s2, emergency_decel_m_s2=device.emergency_decel_m_s2,
            min_incline_deg=device.min_incline_deg, max_incline_deg=device.max_incline_deg)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def build_driver(device: Any, *, lab_id: str, where: str, calibration: PlateCalibration | None = None,
                 session_dir: str | Path | None = None) -> Driver:
    """Build the Driver for one validated lab-file device entry of the lab ``lab_id``.

    ``calibration`` is the plate's loaded calibration (force plates); ``where`` names the entry in
    messages (file and device).
    """
    info = driver_info(device.kind)
    ok, why = info.available()
    if not ok:
        raise ConfigError(f"{where} ({device.kind}) {why}")
    source_id = ids.device_source_id(lab_id, device.name)
    stream_name = f"labsuite-{device.name}"
    if device.kind == "bertec_treadmill":
        from labsuite.drivers.bertec import BertecSettings, BertecTreadmill

        limits = treadmill_settings(lab_id, device, where)
        return BertecTreadmill(BertecSettings(host=device.host, port=device.port, treadmill=limits))
    if device.kind in ("serial_plate", "qtm_plate", "nidaq_plate"):
        from labsuite.calibration import TareSettings

        if calibration is None:
            raise ConfigError(f"{where}: a force plate needs its calibration")
        cal = calibration
        tare = TareSettings(duration_s=device.tare_s)
        if device.kind == "serial_plate":
            from labsuite.drivers.serial_plate import SerialPlateDriver, SerialPlateSettings

            return SerialPlateDriver(SerialPlateSettings(
                port=device.port, source_id=source_id, belt=device.belt, calibration=cal,
                baudrate=device.baudrate, rate_hz=device.rate_hz, tare=tare, name=stream_name))
        if device.kind == "qtm_plate":
            from labsuite.drivers.qtm import QTMPlateDriver, QTMPlateSettings

            return QTMPlateDriver(QTMPlateSettings(
                host=device.host, port=device.port, plate_id=device.plate_id, source_id=source_id,
                belt=device.belt, calibration=cal, rate_hz=device.rate_hz, tare=tare,
                protocol_version=device.protocol_version, name=stream_name))
        from labsuite.drivers.nidaq import NIDAQPlateDriver, NIDAQPlateSettings

        return NIDAQPlateDriver(NIDAQPlateSettings(
            channels=device.channels, source_id=source_id, belt=device.belt, calibration=cal,
            rate_hz=device.rate_hz, tare=tare, min_voltage_v=device.min_voltage_v,
            max_voltage_v=device.max_voltage_v, terminal=device.terminal, name=stream_name))
    if device.kind == "ximu3":
        from labsuite.drivers.ximu3 import XIMU3Driver, XIMU3Settings

        return XIMU3Driver(XIMU3Settings(
            port=device.port, source_id=source_id, side=device.side, baudrate=device.baudrate,
            rate_hz=device.rate_hz, location=device.location or f"{device.side} distal tibia",
            name=stream_name))
    from labsuite.drivers.camera import CameraDriver, CameraSettings

    video_dir = Path(session_dir) if session_dir is not None else Path.cwd()
    return CameraDriver(CameraSettings(
        source=device.source, source_id=source_id, video_path=video_dir / f"{device.name}.avi",
        rate_hz=device.rate_hz, fourcc=device.fourcc, name=stream_name))
