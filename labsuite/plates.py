"""The force-plate convention (C3D FORCE_PLATFORM): where a plate is, and its output in the lab frame.

One neutral home for plate geometry, below every box that needs it: drivers and the simulator
(which publishes realistic plate output with the exact inverse :func:`lab_to_plate`), calibration,
the step processor, the console and the report. :class:`PlateGeometry` is one plate's CORNERS and
ORIGIN; :meth:`PlateGeometry.from_spec` reads them from a force-plate stream's metadata
(``desc/setup/force_platform``, written by ``streams.contracts.force_plate_spec``). Conventions
follow ezc3d exactly.

Plate channels are Fx Fy Fz (N) and Mx My Mz (N·m) about the sensor origin, in the plate frame, as
the force the participant exerts *on* the plate. The plate frame comes from the C3D CORNERS the way
ezc3d builds it (x = c0 − c1, y = c0 − c3 re-orthogonalised, z = x × y; for the usual corner order
z points *down*). ``origin_m`` is C3D ORIGIN as ezc3d uses it: the plate-surface centre sits at
``origin_m`` in sensor coordinates, so the surface offset of DESIGN.md's formulas is
``c = origin_m[2]`` and the COP relative to the surface centre is (px − ox, py − oy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from labsuite.errors import ConfigError, DeviceError
from labsuite.streams.contracts import BELTS, FORCE_PLATE_CHANNELS, StreamSpec, setup_floats

DEFAULT_COP_THRESHOLD_N = 50.0


@dataclass(frozen=True)
class PlateGeometry:
    """Where one plate (belt) is: C3D CORNERS (4×3, lab frame, m) and ORIGIN (m)."""

    belt: str
    corners_m: tuple[tuple[float, float, float], ...]
    origin_m: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.belt not in BELTS:
            raise ConfigError(f"PlateGeometry.belt: expected one of {BELTS}, got {self.belt!r}")
        corners = np.asarray(self.corners_m, dtype=float)
        try:
            plate_axes(corners)
        except ConfigError as exc:
            raise ConfigError(f"PlateGeometry({self.belt}).{exc}") from None
        origin = np.asarray(self.origin_m, dtype=float).ravel()
        if origin.shape != (3,) or not np.isfinite(origin).all():
            raise ConfigError(f"PlateGeometry({self.belt}).origin_m: expected 3 finite numbers, "
                              f"got {self.origin_m!r}")
        object.__setattr__(self, "corners_m", tuple(tuple(float(v) for v in row) for row in corners))
        object.__setattr__(self, "origin_m", tuple(float(v) for v in origin))

    @property
    def corners(self) -> np.ndarray:
        """CORNERS as a (4, 3) array, m."""
        return np.asarray(self.corners_m, dtype=np.float64)

    @property
    def origin(self) -> np.ndarray:
        """ORIGIN as a (3,) array, m."""
        return np.asarray(self.origin_m, dtype=np.float64)

    @classmethod
    def from_arrays(cls, belt: str, corners_m: Any, origin_m: Any = (0.0, 0.0, 0.0)) -> PlateGeometry:
        """Build from array-likes (corners (4, 3) in m, origin (3,) in m)."""
        corners = np.asarray(corners_m, dtype=float)
        if corners.shape != (4, 3):
            raise ConfigError(f"PlateGeometry({belt}).corners_m: expected shape (4, 3), "
                              f"got {corners.shape}")
        return cls(belt, tuple(map(tuple, corners)), tuple(np.asarray(origin_m, float).ravel()))

    @classmethod
    def from_spec(cls, spec: StreamSpec, belt: str | None = None) -> PlateGeometry:
        """Read the plate a force-plate stream describes (``desc/setup/force_platform``).

        ``belt`` overrides the belt the stream names. DeviceError naming the stream and the field
        when the channels are not Fx Fy Fz Mx My Mz or the geometry is missing or malformed.
        """
        where = f"stream {spec.name!r} ({spec.source_id})"
        if spec.labels[:6] != FORCE_PLATE_CHANNELS:
            raise DeviceError(f"{where}: channels {list(spec.labels[:6])}, expected "
                              f"{list(FORCE_PLATE_CHANNELS)} for a force plate")
        if belt is None:
            belt = str(spec.setup.get("force_platform", {}).get("belt", "")) if spec.setup else ""
        corners = setup_floats(spec, "force_platform", "corners_m")
        if corners.size != 12:
            raise DeviceError(f"{where}: desc/setup/force_platform/corners_m has {corners.size} "
                              "numbers, expected 12 (4 corners × xyz)")
        origin = setup_floats(spec, "force_platform", "origin_m")
        if origin.size != 3:
            raise DeviceError(f"{where}: desc/setup/force_platform/origin_m has {origin.size} "
                              "numbers, expected 3 (x y z)")
        try:
            return cls.from_arrays(belt, corners.reshape(4, 3), origin)
        except ConfigError as exc:
            raise DeviceError(f"{where}: desc/setup/force_platform: {exc}") from None

    @classmethod
    def lab_aligned(cls, belt: str, half_length_m: float = 1.0, half_width_m: float = 0.5
                    ) -> PlateGeometry:
        """A plate whose frame is the lab frame (z up, centre at the lab origin).

        Used for data already in the lab frame (text files, simulator output): feed it with
        :meth:`StepProcessor.feed_lab`.
        """
        a, b = half_length_m, half_width_m
        return cls(belt, ((a, b, 0.0), (-a, b, 0.0), (-a, -b, 0.0), (a, -b, 0.0)), (0.0, 0.0, 0.0))

    def to_lab(self, channels: np.ndarray, threshold_n: float = DEFAULT_COP_THRESHOLD_N
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`plate_to_lab` for this plate."""
        return plate_to_lab(channels, self.corners, self.origin, threshold_n)


def plate_axes(corners_m: np.ndarray) -> np.ndarray:
    """Return the 3×3 rotation plate → lab (columns: plate x, y, z axes in the lab frame).

    ``corners_m`` is (4, 3) in the lab frame, C3D CORNERS order. Same construction as ezc3d.
    """
    corners = _check_corners(corners_m)
    ax = corners[0] - corners[1]
    ay = corners[0] - corners[3]
    az = np.cross(ax, ay)
    ay = np.cross(az, ax)
    norms = [np.linalg.norm(v) for v in (ax, ay, az)]
    if min(norms) < 1e-9:
        raise ConfigError(f"corners_m: the four corners are degenerate (collinear or repeated): "
                          f"{corners.tolist()}")
    return np.column_stack([v / n for v, n in zip((ax, ay, az), norms, strict=True)])


def plate_centre(corners_m: np.ndarray) -> np.ndarray:
    """Return the lab-frame centre of the plate surface (mean of the corners), m."""
    return _check_corners(corners_m).mean(axis=0)


def plate_cop_3d(channels: np.ndarray, corners_m: np.ndarray, origin_m: np.ndarray,
                 threshold_n: float = DEFAULT_COP_THRESHOLD_N) -> np.ndarray:
    """Return the COP (n, 3) in the lab frame, whatever the lab's vertical axis (as ezc3d does).

    NaN where the force normal to the plate is below ``threshold_n`` in magnitude. Used to check
    against ezc3d on C3D files whose lab frame is not z-up.
    """
    ch = _check_channels(channels)
    rot = plate_axes(corners_m)
    origin = _check_origin(origin_m)
    fx, fy, fz, mx, my = ch[:, 0], ch[:, 1], ch[:, 2], ch[:, 3], ch[:, 4]
    loaded = np.abs(fz) >= threshold_n
    px, py = _sensor_cop(fx, fy, fz, mx, my, origin[2], loaded)
    return _cop_to_lab(px - origin[0], py - origin[1], rot, plate_centre(corners_m))


def plate_to_lab(channels: np.ndarray, corners_m: np.ndarray, origin_m: np.ndarray,
                 threshold_n: float = DEFAULT_COP_THRESHOLD_N,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert plate output to lab-frame ground reaction force on the body, COP and free moment.

    ``channels`` (n, 6) Fx Fy Fz Mx My Mz in the plate frame (N, N·m), force on the plate.
    Returns ``grf_lab`` (n, 3) N, the reaction on the body in the lab frame (+z up);
    ``cop_lab`` (n, 2) x, y in m, NaN where the vertical GRF is below ``threshold_n``;
    ``tz`` (n,) N·m, the free moment on the body about the lab vertical (+ counter-clockwise seen
    from above).
    """
    ch = _check_channels(channels)
    rot = plate_axes(corners_m)
    origin = _check_origin(origin_m)
    if not np.isfinite(threshold_n) or threshold_n < 0:
        raise ConfigError(f"threshold_n: expected a finite force >= 0 N, got {threshold_n!r}")
    f_plate = ch[:, :3]
    grf = -(f_plate @ rot.T)
    fx, fy, fz, mx, my, mz = (ch[:, i] for i in range(6))
    loaded = grf[:, 2] >= threshold_n
    px, py = _sensor_cop(fx, fy, fz, mx, my, origin[2], loaded)
    tz_plate = mz - (px * fy - py * fx)
    cop = _cop_to_lab(px - origin[0], py - origin[1], rot, plate_centre(corners_m))[:, :2]
    # The free moment on the body is minus the one on the plate; only its lab-vertical part is kept.
    tz = -rot[2, 2] * tz_plate
    return grf, cop, tz


def lab_to_plate(grf_lab: np.ndarray, cop_lab: np.ndarray, tz: np.ndarray,
                 corners_m: np.ndarray, origin_m: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`plate_to_lab`: lab GRF, COP and free moment to plate channels.

    ``grf_lab`` (n, 3) N, ``cop_lab`` (n, 2) m, ``tz`` (n,) N·m; returns (n, 6) Fx Fy Fz (N)
    Mx My Mz (N·m) in the plate frame, force on the plate.

    Where ``cop_lab`` or ``tz`` is NaN (no contact) the force is taken to act at the plate centre
    with no free moment. The plate is assumed flat; the COP lies on its surface plane.
    """
    grf = np.asarray(grf_lab, dtype=np.float64)
    if grf.ndim != 2 or grf.shape[1] != 3:
        raise ConfigError(f"grf_lab: expected shape (n, 3), got {grf.shape}")
    n = grf.shape[0]
    cop = np.asarray(cop_lab, dtype=np.float64)
    if cop.shape != (n, 2):
        raise ConfigError(f"cop_lab: expected shape ({n}, 2), got {cop.shape}")
    tzv = np.asarray(tz, dtype=np.float64)
    if tzv.shape != (n,):
        raise ConfigError(f"tz: expected shape ({n},), got {tzv.shape}")
    rot = plate_axes(corners_m)
    origin = _check_origin(origin_m)
    centre = plate_centre(corners_m)
    if abs(rot[2, 2]) < 1e-6:
        raise ConfigError("corners_m: the plate is vertical in the lab frame; expected a plate "
                          "lying in a horizontal plane (+z up)")
    f_plate = -(grf @ rot)  # rot is orthonormal: rot.T @ v for each row
    # COP on the surface plane: solve for lab z so that the point lies in the plane through the
    # centre with normal rot[:, 2].
    normal = rot[:, 2]
    dx = cop[:, 0] - centre[0]
    dy = cop[:, 1] - centre[1]
    dz = -(normal[0] * dx + normal[1] * dy) / normal[2]
    d_plate = np.column_stack([dx, dy, dz]) @ rot
    missing = ~(np.isfinite(cop).all(axis=1) & np.isfinite(tzv))
    d_plate[missing] = 0.0
    px = d_plate[:, 0] + origin[0]
    py = d_plate[:, 1] + origin[1]
    pz = origin[2]
    tz_plate = np.where(missing, 0.0, -tzv / rot[2, 2])
    fx, fy, fz = f_plate[:, 0], f_plate[:, 1], f_plate[:, 2]
    mx = py * fz - pz * fy
    my = pz * fx - px * fz
    mz = px * fy - py * fx + tz_plate
    return np.column_stack([fx, fy, fz, mx, my, mz])


def _sensor_cop(fx: np.ndarray, fy: np.ndarray, fz: np.ndarray, mx: np.ndarray, my: np.ndarray,
                c: float, loaded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COP in sensor coordinates (DESIGN.md formulas, surface offset c); NaN where not loaded."""
    safe_fz = np.where(loaded, fz, 1.0)  # unloaded samples are blanked below, never divided
    px = np.where(loaded, (c * fx - my) / safe_fz, np.nan)
    py = np.where(loaded, (mx + c * fy) / safe_fz, np.nan)
    return px, py


def _cop_to_lab(cx: np.ndarray, cy: np.ndarray, rot: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Plate-frame COP relative to the surface centre to lab coordinates (n, 3)."""
    return centre + cx[:, None] * rot[:, 0] + cy[:, None] * rot[:, 1]


def _check_corners(corners_m: np.ndarray) -> np.ndarray:
    corners = np.asarray(corners_m, dtype=np.float64)
    if corners.shape != (4, 3):
        raise ConfigError(f"corners_m: expected shape (4, 3) (C3D CORNERS, lab frame, m), "
                          f"got {corners.shape}")
    if not np.isfinite(corners).all():
        raise ConfigError("corners_m: expected finite numbers, got NaN or inf")
    return corners


def _check_origin(origin_m: np.ndarray) -> np.ndarray:
    origin = np.asarray(origin_m, dtype=np.float64).ravel()
    if origin.shape != (3,) or not np.isfinite(origin).all():
        raise ConfigError(f"origin_m: expected 3 finite numbers (C3D ORIGIN, m), got {origin!r}")
    return origin


def _check_channels(channels: np.ndarray) -> np.ndarray:
    ch = np.asarray(channels, dtype=np.float64)
    if ch.ndim != 2 or ch.shape[1] != 6:
        raise ConfigError(f"channels: expected shape (n, 6) Fx Fy Fz Mx My Mz, got {ch.shape}")
    return ch
