"""Force-plate calibration: calibration files, raw channels to N and N·m, tare, known-load checks.

Sits inside every force-plate driver (raw amplifier channels -> tare -> matrix -> Fx..Mz published
with the calibration id) and behind ``labsuite calibrate``. A calibration file (YAML) holds the plate
serial, a 6×6 or 6×8 matrix, the geometry in C3D FORCE_PLATFORM terms (corners, origin), the date,
the tolerances and the verification history; ``docs/devices.md`` shows the format.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from labsuite import checks as check
from labsuite.constants import GRAVITY_M_S2
from labsuite.errors import CalibrationError, ConfigError
from labsuite.streams.contracts import StreamSpec, force_plate_spec
from labsuite.yamlfile import read_text
from labsuite.yamlmodel import parse_yaml_model

SCHEMA_ID = "labsuite-calibration/1"
_ID = r"^[A-Za-z0-9_.-]{1,64}$"


# ---- file schema --------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GeometryModel(_Strict):
    """C3D FORCE_PLATFORM geometry: CORNERS (lab frame, m, C3D order) and ORIGIN (m)."""

    corners_m: Annotated[list[Annotated[list[float], Field(min_length=3, max_length=3)]],
                         Field(min_length=4, max_length=4)]
    origin_m: Annotated[list[float], Field(min_length=3, max_length=3)]
    c3d_type: Literal[2, 4] = 2


class ToleranceModel(_Strict):
    """Acceptance limits of a known-load check."""

    force_n: Annotated[float, Field(gt=0, le=500)]
    cop_m: Annotated[float, Field(gt=0, le=0.1)]


class VerificationModel(_Strict):
    """One known-load check as recorded in the file's history."""

    date: _dt.date
    mass_kg: Annotated[float, Field(gt=0, le=2000)]
    point_m: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    force_error_n: Annotated[float, Field(ge=0)]
    cop_error_m: Annotated[float, Field(ge=0)] | None = None
    passed: bool
    note: str = ""


class CalibrationModel(_Strict):
    """A plate calibration file (schema ``labsuite-calibration/1``)."""

    schema_: Literal["labsuite-calibration/1"] = Field(alias="schema")
    calibration_id: Annotated[str, Field(pattern=_ID)]
    plate_serial: Annotated[str, Field(min_length=1, max_length=64)]
    manufacturer: str = ""
    model: str = ""
    date: _dt.date
    input_units: str = "V"
    matrix: Annotated[list[list[float]], Field(min_length=6, max_length=6)]
    geometry: GeometryModel
    tolerance: ToleranceModel
    verifications: list[VerificationModel] = Field(default_factory=list)

    @field_validator("matrix")
    @classmethod
    def _matrix_shape(cls, rows: list[list[float]]) -> list[list[float]]:
        widths = {len(r) for r in rows}
        if len(widths) != 1 or widths.pop() not in (6, 8):
            raise ValueError(f"expected 6 rows of 6 or 8 numbers (6x6 or 6x8), got row lengths "
                             f"{[len(r) for r in rows]}")
        if not all(math.isfinite(v) for r in rows for v in r):
            raise ValueError("expected finite numbers, got NaN or inf")
        return rows


# ---- the calibration object ---------------------------------------------------------------------

@dataclass(frozen=True)
class Verification:
    """Result of a known-load check: errors against the tolerance of the calibration file."""

    date: _dt.date
    mass_kg: float
    point_m: tuple[float, float] | None
    force_n: float
    force_error_n: float
    cop_m: tuple[float, float] | None
    cop_error_m: float | None
    passed: bool
    note: str = ""

    def to_record(self) -> dict[str, Any]:
        """The entry written to the file's ``verifications`` list."""
        rec: dict[str, Any] = {"date": self.date, "mass_kg": float(self.mass_kg),
                               "force_error_n": round(float(self.force_error_n), 3)}
        if self.point_m is not None:
            rec["point_m"] = [float(v) for v in self.point_m]
        if self.cop_error_m is not None:
            rec["cop_error_m"] = round(float(self.cop_error_m), 5)
        rec["passed"] = bool(self.passed)
        if self.note:
            rec["note"] = self.note
        return rec


@dataclass(frozen=True)
class PlateCalibration:
    """A validated calibration: ``apply`` turns raw amplifier channels into Fx..Mz (N, N·m)."""

    calibration_id: str
    plate_serial: str
    date: _dt.date
    matrix: np.ndarray
    corners_m: np.ndarray
    origin_m: np.ndarray
    force_tolerance_n: float
    cop_tolerance_m: float
    manufacturer: str = ""
    model: str = ""
    input_units: str = "V"
    c3d_type: int = 2
    verifications: tuple[dict[str, Any], ...] = ()
    source_file: str = ""
    source_text: str = field(default="", repr=False)

    @property
    def n_inputs(self) -> int:
        """Raw channels the matrix expects (6 or 8)."""
        return int(self.matrix.shape[1])

    def apply(self, raw: np.ndarray, tare: np.ndarray | None = None) -> np.ndarray:
        """Raw channels (n, k) minus ``tare`` (k,) times the matrix -> (n, 6) Fx Fy Fz Mx My Mz."""
        arr = np.asarray(raw, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.n_inputs:
            raise CalibrationError(f"calibration {self.calibration_id!r}: raw data has shape "
                                   f"{arr.shape}, expected (n, {self.n_inputs})")
        if tare is not None:
            arr = arr - tare
        return arr @ self.matrix.T

    def age_days(self, today: _dt.date | None = None) -> int:
        """Days since the calibration date."""
        return ((today or _dt.date.today()) - self.date).days

    def future_warning(self, today: _dt.date | None = None) -> str | None:
        """A warning text when the calibration is dated after ``today`` (a typo, or a wrong clock)."""
        age = self.age_days(today)
        if age < 0:
            return (f"calibration {self.calibration_id!r} of plate {self.plate_serial} is dated "
                    f"{self.date.isoformat()}, {-age} days in the future: check the date in "
                    f"{self.source_file} (and this computer's clock); its age cannot be judged")
        return None

    def age_warning(self, max_age_days: int, today: _dt.date | None = None) -> str | None:
        """A warning text when the calibration is older than ``max_age_days`` or dated in the future."""
        future = self.future_warning(today)
        if future:
            return future
        age = self.age_days(today)
        if age > max_age_days:
            return (f"calibration {self.calibration_id!r} of plate {self.plate_serial} is {age} days "
                    f"old (dated {self.date.isoformat()}); the lab's limit is {max_age_days} days: "
                    "recalibrate the plate")
        return None

    def stream_spec(self, source_id: str, *, belt: str, rate_hz: float, name: str | None = None,
                    manufacturer: str | None = None, model: str | None = None) -> StreamSpec:
        """The plate's stream description, with this calibration's geometry, id and plate serial."""
        ox, oy, oz = (float(v) for v in self.origin_m)
        spec = force_plate_spec(source_id, belt=belt, corners_m=self.corners_m,
                                origin_m=(ox, oy, oz),
                                calibration_id=self.calibration_id, rate_hz=rate_hz, name=name,
                                manufacturer=manufacturer or self.manufacturer or "labsuite",
                                model=model or self.model or "force plate",
                                serial_number=self.plate_serial)
        # The calibration itself travels in the stream's metadata, so whatever records the
        # stream (the session archive, any XDF recorder) keeps the calibration that was used.
        setup = dict(spec.setup)
        setup["calibration"] = {
            "calibration_id": self.calibration_id,
            "plate_serial": self.plate_serial,
            "date": self.date.isoformat(),
            "input_units": self.input_units,
            "matrix_shape": f"{self.matrix.shape[0]} {self.matrix.shape[1]}",
            "matrix": self.matrix.ravel(),
            "file": self.source_file,
            "file_text": self.source_text,
        }
        return replace(spec, setup=setup)

    def to_archive(self) -> dict[str, str]:
        """What a session archive stores: id, serial, date and the file text exactly as used.

        The same fields travel in every plate stream's metadata (``desc/setup/calibration``).
        """
        return {"calibration_id": self.calibration_id, "plate_serial": self.plate_serial,
                "date": self.date.isoformat(), "file": self.source_file, "text": self.source_text}


def parse_calibration(text: str, file: str = "<calibration>") -> PlateCalibration:
    """Validate calibration ``text``; ConfigError naming file, line, field path and expectation."""
    model = parse_yaml_model(text, file, CalibrationModel, what="calibration file")
    geo = model.geometry
    corners = np.asarray(geo.corners_m, dtype=float)
    try:
        from labsuite.plates import plate_axes

        plate_axes(corners)
    except ConfigError as exc:
        raise ConfigError(f"{file}: geometry.corners_m: {exc}") from None
    matrix = np.asarray(model.matrix, dtype=float)
    if np.linalg.matrix_rank(matrix) < 6:
        raise ConfigError(f"{file}: matrix: expected rank 6 (every output driven by the inputs), "
                          f"got rank {np.linalg.matrix_rank(matrix)}")
    return PlateCalibration(
        calibration_id=model.calibration_id, plate_serial=model.plate_serial, date=model.date,
        matrix=matrix, corners_m=corners, origin_m=np.asarray(geo.origin_m, dtype=float),
        force_tolerance_n=model.tolerance.force_n, cop_tolerance_m=model.tolerance.cop_m,
        manufacturer=model.manufacturer, model=model.model, input_units=model.input_units,
        c3d_type=geo.c3d_type,
        verifications=tuple(v.model_dump(exclude_defaults=True) for v in model.verifications),
        source_file=file, source_text=text)


def load_calibration(path: str | Path) -> PlateCalibration:
    """Read and validate a calibration file; ConfigError naming the file and field if invalid."""
    p = Path(path)
    return parse_calibration(read_text(p, "calibration file"), str(p))


def calibration_to_yaml(cal: PlateCalibration, verifications: Sequence[dict[str, Any]] | None = None) -> str:
    """Render a calibration as file text (used to append verifications and in tests)."""
    import yaml

    doc = {
        "schema": SCHEMA_ID,
        "calibration_id": cal.calibration_id,
        "plate_serial": cal.plate_serial,
        "manufacturer": cal.manufacturer,
        "model": cal.model,
        "date": cal.date,
        "input_units": cal.input_units,
        "matrix": [[float(v) for v in row] for row in cal.matrix],
        "geometry": {"corners_m": [[float(v) for v in c] for c in cal.corners_m],
                     "origin_m": [float(v) for v in cal.origin_m], "c3d_type": cal.c3d_type},
        "tolerance": {"force_n": cal.force_tolerance_n, "cop_m": cal.cop_tolerance_m},
        "verifications": list(cal.verifications if verifications is None else verifications),
    }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=110)


def append_verification(path: str | Path, result: Verification) -> PlateCalibration:
    """Add a verification to the file's history (rewritten atomically); returns the new calibration."""
    p = Path(path)
    cal = load_calibration(p)
    text = calibration_to_yaml(cal, [*cal.verifications, result.to_record()])
    parse_calibration(text, str(p))  # never write a file we could not read back
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(p)
    return load_calibration(p)


# ---- tare and known-load checks -----------------------------------------------------------------

@dataclass(frozen=True)
class TareSettings:
    """How a zero is taken: over ``duration_s`` of unloaded plate at session start.

    The period counts as unloaded when the calibrated vertical force varies by less than
    ``max_fz_std_n`` (standard deviation) and its offset stays below ``max_fz_offset_n``: a person
    on the plate fails both, a warm amplifier's offset passes.
    """

    duration_s: float = 1.0
    max_fz_std_n: float = 15.0
    max_fz_offset_n: float = 150.0

    def __post_init__(self) -> None:
        check.positive("tare ", self, "duration_s", "max_fz_std_n", "max_fz_offset_n")


def compute_tare(cal: PlateCalibration, raw: np.ndarray, settings: TareSettings | None = None) -> np.ndarray:
    """Return the raw-channel offsets (k,) of an unloaded period; CalibrationError if it was loaded."""
    s = settings or TareSettings()
    arr = np.asarray(raw, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 10:
        raise CalibrationError(f"tare for {cal.calibration_id!r}: expected at least 10 samples of "
                               f"{cal.n_inputs} raw channels, got shape {arr.shape}")
    fz = cal.apply(arr)[:, 2]
    std = float(np.std(fz))
    offset = float(np.mean(fz))
    if std > s.max_fz_std_n or abs(offset) > s.max_fz_offset_n:
        raise CalibrationError(
            f"tare for plate {cal.plate_serial} ({cal.calibration_id}): the plate does not look "
            f"unloaded (Fz mean {offset:.1f} N, SD {std:.1f} N; limits {s.max_fz_offset_n} N and "
            f"{s.max_fz_std_n} N SD); step off the plate and tare again")
    return arr.mean(axis=0)


class PlateCalibrator:
    """Per-driver state: the calibration, the tare offsets and a tare being collected.

    ``process(raw)`` returns calibrated channels; the first ``duration_s`` of samples after
    :meth:`start_tare` are collected and, if the plate was unloaded, become the tare. A failed tare
    keeps the previous offsets (none at first) and is reported in ``tare_error``.
    """

    def __init__(self, cal: PlateCalibration, rate_hz: float, tare: TareSettings | None = None) -> None:
        self.cal = cal
        self.settings = tare or TareSettings()
        self.offsets: np.ndarray | None = None
        self.tare_error = ""
        self._needed = max(10, round(self.settings.duration_s * rate_hz))
        self._collect: list[np.ndarray] | None = None
        self._collected = 0

    @property
    def taring(self) -> bool:
        """True while a tare period is being collected."""
        return self._collect is not None

    def start_tare(self) -> None:
        """Begin collecting an unloaded period (the plate must be empty for ``duration_s``)."""
        self._collect = []
        self._collected = 0

    def process(self, raw: np.ndarray) -> np.ndarray:
        """Calibrate raw (n, k) into (n, 6) N and N·m, collecting tare samples when asked."""
        arr = np.asarray(raw, dtype=np.float64)
        if self._collect is not None and len(arr):
            self._collect.append(arr.copy())
            self._collected += len(arr)
            if self._collected >= self._needed:
                block = np.concatenate(self._collect)[: self._needed]
                self._collect = None
                try:
                    self.offsets = compute_tare(self.cal, block, self.settings)
                    self.tare_error = ""
                except CalibrationError as exc:
                    self.tare_error = str(exc)
        return self.cal.apply(arr, self.offsets)


def verify_known_load(channels: np.ndarray, cal: PlateCalibration, mass_kg: float,
                      point_m: tuple[float, float] | None = None, *,
                      gravity_m_s2: float = GRAVITY_M_S2,
                      today: _dt.date | None = None, note: str = "") -> Verification:
    """Check a static known mass on the plate: vertical force and COP against the file's tolerance.

    ``channels`` (n, 6) are calibrated, tared plate channels recorded with the mass at rest at
    ``point_m`` (lab x, y in m; None: check the force only). The force error is |Fz_lab − m·g| of
    the mean; the COP error the distance between the mean COP and ``point_m``.
    """
    from labsuite.plates import plate_to_lab

    if not (math.isfinite(mass_kg) and mass_kg > 0):
        raise ConfigError(f"mass_kg: expected a known mass > 0 kg, got {mass_kg!r}")
    ch = np.asarray(channels, dtype=np.float64)
    if ch.ndim != 2 or ch.shape[1] != 6 or len(ch) == 0:
        raise CalibrationError(f"known-load check: expected (n, 6) calibrated channels, got {ch.shape}")
    mean = ch.mean(axis=0, keepdims=True)
    expected_n = mass_kg * gravity_m_s2
    grf, cop, _ = plate_to_lab(mean, cal.corners_m, cal.origin_m, threshold_n=min(50.0, expected_n / 2))
    force_n = float(grf[0, 2])
    force_error = abs(force_n - expected_n)
    cop_xy: tuple[float, float] | None = None
    cop_error: float | None = None
    passed = force_error <= cal.force_tolerance_n
    if point_m is not None:
        if not np.isfinite(cop[0]).all():
            cop_error = math.inf
        else:
            cop_xy = (float(cop[0, 0]), float(cop[0, 1]))
            cop_error = float(math.hypot(cop_xy[0] - point_m[0], cop_xy[1] - point_m[1]))
        passed = passed and cop_error <= cal.cop_tolerance_m
    return Verification(date=today or _dt.date.today(), mass_kg=float(mass_kg),
                        point_m=None if point_m is None else (float(point_m[0]), float(point_m[1])),
                        force_n=force_n, force_error_n=force_error, cop_m=cop_xy,
                        cop_error_m=cop_error, passed=bool(passed), note=note)
