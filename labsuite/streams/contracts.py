"""Stream contracts: one description per stream kind, written into and read back from LSL metadata.

A :class:`StreamSpec` says everything a consumer needs (name, LSL type, channel labels, units and
types, nominal rate, dtype, stable source_id, acquisition and setup) and is written into the LSL
``desc`` element following the XDF meta-data conventions::

    desc/channels/channel{label,unit,type}
    desc/acquisition{manufacturer,model,serial_number}
    desc/setup/...            (force plate geometry, IMU location)
    desc/synchronization/can_drop_samples
    desc/labsuite{kind,version}

Frames (fixed for all of labsuite):

* **Lab frame**: x anterior (direction of walking; the belt moves towards -x), y medio-lateral
  (+ left), z vertical up. Metres.
* **Force-plate streams** carry the plate's own output as a C3D FORCE_PLATFORM does: Fx Fy Fz in N
  are the force the participant exerts *on* the plate, Mx My Mz in N·m the moments about the plate's
  sensor origin, both in the plate's frame. ``desc/setup/force_platform`` holds the C3D geometry:
  ``corners_m`` (4 corners × xyz in the lab frame, C3D order), ``origin_m`` (the position of the
  plate-surface centre in sensor coordinates, as ezc3d interprets C3D ORIGIN: surface offset
  c = origin_m[2]), ``type`` (C3D type, 2) and the calibration id. Converting to lab-frame ground
  reaction force and COP is the processor's job (``labsuite.plates``).
* **IMU streams**: ax ay az in m/s², gx gy gz in rad/s, sensor frame; for tibial sensors x runs along
  the tibia towards the knee (standing still reads ax ≈ +9.81), so tibial shock is a positive ax peak.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labsuite import __version__
from labsuite.errors import ConfigError, DeviceError
from labsuite.steps import STEP_FIELDS

IRREGULAR_RATE = 0.0

# labsuite stream kinds; the LSL content type is the second element.
KIND_FORCE_PLATE = "force_plate"
KIND_IMU = "imu"
KIND_CAMERA = "camera"
KIND_TREADMILL = "treadmill"
KIND_MARKERS = "markers"
KIND_STEPS = "steps"
KIND_COMMANDS = "commands"
KIND_SIM_GAIT = "sim_gait"  # the simulator's planned steps (ground truth), never from real devices

LSL_TYPES: dict[str, str] = {
    KIND_FORCE_PLATE: "ForcePlate",
    KIND_IMU: "IMU",
    KIND_CAMERA: "VideoFrameCounter",
    KIND_TREADMILL: "Treadmill",
    KIND_MARKERS: "Markers",
    KIND_STEPS: "GaitSteps",
    KIND_COMMANDS: "Commands",
    KIND_SIM_GAIT: "SimulatedGait",
}

# Channel labels as constants (the order is the stream's channel order).
FX, FY, FZ, MX, MY, MZ = "Fx", "Fy", "Fz", "Mx", "My", "Mz"
FORCE_PLATE_CHANNELS = (FX, FY, FZ, MX, MY, MZ)
AX, AY, AZ, GX, GY, GZ = "ax", "ay", "az", "gx", "gy", "gz"
IMU_CHANNELS = (AX, AY, AZ, GX, GY, GZ)
SPEED_RIGHT, SPEED_LEFT, INCLINE = "speed_right", "speed_left", "incline"
TREADMILL_CHANNELS = (SPEED_RIGHT, SPEED_LEFT, INCLINE)

BELT_LEFT = "left"
BELT_RIGHT = "right"
BELT_SINGLE = "single"
BELTS = (BELT_LEFT, BELT_RIGHT, BELT_SINGLE)

_VALID_DTYPES = ("float32", "float64", "int32", "int16", "int64", "string")


@dataclass(frozen=True)
class Channel:
    """One channel of a stream: label, unit and XDF channel type."""

    label: str
    unit: str
    type: str


@dataclass(frozen=True)
class StreamSpec:
    """Everything a consumer needs to know about a stream; round-trips through LSL metadata.

    ``rate_hz`` is the nominal rate (0 for irregular streams). ``setup`` is a nested mapping of
    strings, numbers or sequences of numbers written under ``desc/setup``.
    """

    name: str
    kind: str
    channels: tuple[Channel, ...]
    rate_hz: float
    dtype: str
    source_id: str
    manufacturer: str = "labsuite"
    model: str = ""
    serial_number: str = ""
    setup: Mapping[str, Any] = field(default_factory=dict)
    can_drop_samples: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("stream name: expected a non-empty string")
        if self.kind not in LSL_TYPES:
            raise ConfigError(f"stream {self.name!r} kind: expected one of {sorted(LSL_TYPES)}, "
                              f"got {self.kind!r}")
        if not self.channels:
            raise ConfigError(f"stream {self.name!r} channels: expected at least one channel")
        if self.rate_hz < 0 or not np.isfinite(self.rate_hz):
            raise ConfigError(f"stream {self.name!r} rate_hz: expected >= 0 (0 = irregular), "
                              f"got {self.rate_hz!r}")
        if self.dtype not in _VALID_DTYPES:
            raise ConfigError(f"stream {self.name!r} dtype: expected one of {_VALID_DTYPES}, "
                              f"got {self.dtype!r}")
        if not self.source_id:
            raise ConfigError(f"stream {self.name!r} source_id: expected a stable non-empty id")

    @property
    def lsl_type(self) -> str:
        """The LSL content type of this stream kind."""
        return LSL_TYPES[self.kind]

    @property
    def channel_count(self) -> int:
        """Number of channels."""
        return len(self.channels)

    @property
    def labels(self) -> tuple[str, ...]:
        """Channel labels in stream order."""
        return tuple(c.label for c in self.channels)

    @property
    def units(self) -> tuple[str, ...]:
        """Channel units in stream order."""
        return tuple(c.unit for c in self.channels)

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype of one sample value (object for string streams)."""
        return np.dtype(object) if self.dtype == "string" else np.dtype(self.dtype)

    def channel_index(self, label: str) -> int:
        """Return the index of the channel labelled ``label``; DeviceError if absent."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise DeviceError(f"stream {self.name!r} has no channel {label!r}; "
                              f"it has {list(self.labels)}") from None

    # ---- LSL -----------------------------------------------------------------------------
    def to_info(self) -> Any:
        """Build a ``pylsl.StreamInfo`` carrying this description in its ``desc`` element."""
        import pylsl

        fmt = {
            "float32": pylsl.cf_float32,
            "float64": pylsl.cf_double64,
            "int32": pylsl.cf_int32,
            "int16": pylsl.cf_int16,
            "int64": pylsl.cf_int64,
            "string": pylsl.cf_string,
        }[self.dtype]
        info = pylsl.StreamInfo(self.name, self.lsl_type, self.channel_count, self.rate_hz, fmt,
                                self.source_id)
        desc = info.desc()
        chans = desc.append_child("channels")
        for ch in self.channels:
            c = chans.append_child("channel")
            c.append_child_value("label", ch.label)
            c.append_child_value("unit", ch.unit)
            c.append_child_value("type", ch.type)
        acq = desc.append_child("acquisition")
        acq.append_child_value("manufacturer", self.manufacturer)
        acq.append_child_value("model", self.model)
        acq.append_child_value("serial_number", self.serial_number)
        if self.setup:
            _write_tree(desc.append_child("setup"), self.setup)
        sync = desc.append_child("synchronization")
        sync.append_child_value("can_drop_samples", "true" if self.can_drop_samples else "false")
        ls = desc.append_child("labsuite")
        ls.append_child_value("kind", self.kind)
        ls.append_child_value("version", __version__)
        return info

    @classmethod
    def from_info(cls, info: Any) -> StreamSpec:
        """Read a description back from a resolved ``pylsl.StreamInfo`` (full info with desc).

        Streams published by other LSL apps are accepted: their kind is guessed from the LSL type
        and missing labels become ``ch0``, ``ch1``, ...
        """
        import pylsl

        desc = info.desc()
        kind = desc.child("labsuite").child_value("kind")
        if not kind:
            by_type = {v.lower(): k for k, v in LSL_TYPES.items()}
            kind = by_type.get(info.type().lower(), KIND_MARKERS if info.nominal_srate() == 0
                               and info.channel_format() == pylsl.cf_string else KIND_IMU)
        channels = []
        ch = desc.child("channels").child("channel")
        while not ch.empty():
            channels.append(Channel(ch.child_value("label"), ch.child_value("unit"),
                                    ch.child_value("type")))
            ch = ch.next_sibling("channel")
        n = info.channel_count()
        if len(channels) != n:
            channels = [Channel(f"ch{i}", "", "") for i in range(n)]
        fmt = {
            pylsl.cf_float32: "float32",
            pylsl.cf_double64: "float64",
            pylsl.cf_int32: "int32",
            pylsl.cf_int16: "int16",
            pylsl.cf_int64: "int64",
            pylsl.cf_string: "string",
        }.get(info.channel_format())
        if fmt is None:
            raise DeviceError(f"stream {info.name()!r}: channel format {info.channel_format()} "
                              "is not supported (expected float32, float64, int16/32/64 or string)")
        acq = desc.child("acquisition")
        setup_el = desc.child("setup")
        setup = _read_tree(setup_el) if not setup_el.empty() else {}
        can_drop = desc.child("synchronization").child_value("can_drop_samples") == "true"
        return cls(
            name=info.name(),
            kind=kind,
            channels=tuple(channels),
            rate_hz=float(info.nominal_srate()),
            dtype=fmt,
            source_id=info.source_id() or f"{info.name()}@{info.hostname()}",
            manufacturer=acq.child_value("manufacturer"),
            model=acq.child_value("model"),
            serial_number=acq.child_value("serial_number"),
            setup=setup,
            can_drop_samples=can_drop,
        )


def _write_tree(el: Any, tree: Mapping[str, Any]) -> None:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            _write_tree(el.append_child(key), value)
        elif isinstance(value, str):
            el.append_child_value(key, value)
        elif isinstance(value, bool):
            el.append_child_value(key, "true" if value else "false")
        elif isinstance(value, (int, np.integer)):
            el.append_child_value(key, str(int(value)))
        elif isinstance(value, (float, np.floating)):
            el.append_child_value(key, repr(float(value)))
        else:  # a sequence of numbers, stored space-separated
            flat = np.asarray(value, dtype=float).ravel()
            el.append_child_value(key, " ".join(repr(float(v)) for v in flat))


def _read_tree(el: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    child = el.first_child()
    while not child.empty():
        if child.first_child().empty() or child.first_child().is_text():
            out[child.name()] = child.child_value() if not child.first_child().empty() else ""
        else:
            out[child.name()] = _read_tree(child)
        child = child.next_sibling()
    return out


def setup_floats(spec: StreamSpec, *path: str) -> np.ndarray:
    """Return the space-separated numbers at ``desc/setup/<path>`` as a float array."""
    node: Any = spec.setup
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            raise DeviceError(f"stream {spec.name!r}: metadata desc/setup/{'/'.join(path)} "
                              "is missing")
        node = node[key]
    if isinstance(node, str):
        try:
            return np.array([float(v) for v in node.split()], dtype=float)
        except ValueError:
            raise DeviceError(f"stream {spec.name!r}: desc/setup/{'/'.join(path)} = {node!r} "
                              "is not a list of numbers") from None
    return np.asarray(node, dtype=float).ravel()


# ---- one description per stream kind ---------------------------------------------------------

def force_plate_spec(
    source_id: str,
    *,
    belt: str,
    corners_m: np.ndarray,
    origin_m: tuple[float, float, float],
    calibration_id: str,
    rate_hz: float = 1000.0,
    name: str | None = None,
    manufacturer: str = "labsuite",
    model: str = "simulated instrumented treadmill",
    serial_number: str = "",
) -> StreamSpec:
    """Describe a force-plate (belt) stream: Fx Fy Fz (N) Mx My Mz (N·m) in the plate frame.

    ``corners_m`` is (4, 3) in the lab frame, C3D CORNERS order; ``origin_m`` is C3D ORIGIN in m.
    """
    if belt not in BELTS:
        raise ConfigError(f"force plate {source_id!r} belt: expected one of {BELTS}, got {belt!r}")
    corners = np.asarray(corners_m, dtype=float)
    if corners.shape != (4, 3):
        raise ConfigError(f"force plate {source_id!r} corners_m: expected shape (4, 3), "
                          f"got {corners.shape}")
    chans = tuple(Channel(lbl, "N" if lbl.startswith("F") else "N*m",
                          "Force" if lbl.startswith("F") else "Moment")
                  for lbl in FORCE_PLATE_CHANNELS)
    return StreamSpec(
        name=name or f"labsuite-forceplate-{belt}",
        kind=KIND_FORCE_PLATE,
        channels=chans,
        rate_hz=rate_hz,
        dtype="float32",
        source_id=source_id,
        manufacturer=manufacturer,
        model=model,
        serial_number=serial_number,
        setup={
            "force_platform": {
                "type": 2,
                "belt": belt,
                "corners_m": corners,
                "origin_m": tuple(float(v) for v in origin_m),
                "calibration_id": calibration_id,
            }
        },
    )


def imu_spec(
    source_id: str,
    *,
    location: str,
    side: str,
    rate_hz: float = 1000.0,
    name: str | None = None,
    manufacturer: str = "labsuite",
    model: str = "simulated IMU",
    serial_number: str = "",
) -> StreamSpec:
    """Describe an IMU stream: ax ay az (m/s²), gx gy gz (rad/s); location e.g. 'left distal tibia'."""
    if side not in (BELT_LEFT, BELT_RIGHT):
        raise ConfigError(f"IMU {source_id!r} side: expected 'left' or 'right', got {side!r}")
    chans = tuple(Channel(lbl, "m/s^2" if lbl.startswith("a") else "rad/s",
                          "Acceleration" if lbl.startswith("a") else "AngularVelocity")
                  for lbl in IMU_CHANNELS)
    return StreamSpec(
        name=name or f"labsuite-imu-{side}",
        kind=KIND_IMU,
        channels=chans,
        rate_hz=rate_hz,
        dtype="float32",
        source_id=source_id,
        manufacturer=manufacturer,
        model=model,
        serial_number=serial_number,
        setup={"sensor": {"location": location, "side": side,
                          "axes": "x along the tibia towards the knee"}},
    )


CAMERA_FRAME_INDEX = "frame_index"
CAMERA_SEGMENT = "segment"
CAMERA_POSITION = "position"


def camera_spec(
    source_id: str,
    *,
    rate_hz: float = 100.0,
    name: str | None = None,
    manufacturer: str = "labsuite",
    model: str = "simulated camera",
    video_file: str = "",
) -> StreamSpec:
    """Describe a camera frame-counter stream: one sample per frame written; frames may drop.

    Channels: ``frame_index`` (runs on across segments), ``segment`` (the video file's part number,
    1 = ``video_file`` itself, 0 = no video written) and ``position`` (the frame's number in that
    file, from 0). ``video_file`` is the first segment's path as the camera wrote it.
    """
    return StreamSpec(
        name=name or "labsuite-camera",
        kind=KIND_CAMERA,
        channels=(Channel(CAMERA_FRAME_INDEX, "count", "FrameIndex"),
                  Channel(CAMERA_SEGMENT, "count", "VideoSegment"),
                  Channel(CAMERA_POSITION, "count", "FramePosition")),
        rate_hz=rate_hz,
        dtype="float64",
        source_id=source_id,
        manufacturer=manufacturer,
        model=model,
        setup={"camera": {"video_file": video_file}} if video_file else {},
        can_drop_samples=True,
    )


def treadmill_spec(
    source_id: str,
    *,
    rate_hz: float = 50.0,
    name: str | None = None,
    manufacturer: str = "labsuite",
    model: str = "simulated treadmill",
) -> StreamSpec:
    """Describe a treadmill state stream: belt speeds (m/s) and incline (deg)."""
    chans = (
        Channel(SPEED_RIGHT, "m/s", "Speed"),
        Channel(SPEED_LEFT, "m/s", "Speed"),
        Channel(INCLINE, "deg", "Angle"),
    )
    return StreamSpec(name=name or "labsuite-treadmill", kind=KIND_TREADMILL, channels=chans,
                      rate_hz=rate_hz, dtype="float32", source_id=source_id,
                      manufacturer=manufacturer, model=model)


def markers_spec(source_id: str, *, name: str = "labsuite-markers") -> StreamSpec:
    """Describe a marker stream: irregular-rate strings (one marker per sample)."""
    return StreamSpec(name=name, kind=KIND_MARKERS, channels=(Channel("marker", "", "Marker"),),
                      rate_hz=IRREGULAR_RATE, dtype="string", source_id=source_id)


def commands_spec(source_id: str, *, name: str = "labsuite-commands") -> StreamSpec:
    """Describe a command stream (treadmill commands, heartbeat): irregular JSON strings."""
    return StreamSpec(name=name, kind=KIND_COMMANDS, channels=(Channel("command", "", "JSON"),),
                      rate_hz=IRREGULAR_RATE, dtype="string", source_id=source_id)


def steps_spec(source_id: str, *, name: str = "labsuite-steps") -> StreamSpec:
    """Describe the per-step stream published by the processor (one sample per foot contact)."""
    chans = tuple(Channel(f.name, f.unit, "StepMetric") for f in STEP_FIELDS)
    return StreamSpec(name=name, kind=KIND_STEPS, channels=chans, rate_hz=IRREGULAR_RATE,
                      dtype="float64", source_id=source_id, model="labsuite step processor")
