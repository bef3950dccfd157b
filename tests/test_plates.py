"""Plate geometry: COP against ezc3d on real RBDS data; lab_to_plate is the exact inverse."""

from __future__ import annotations

import numpy as np
import pytest

from labsuite.errors import ConfigError
from labsuite.plates import lab_to_plate, plate_axes, plate_cop_3d, plate_to_lab


@pytest.fixture(scope="module")
def rbds001(shared_data):
    import ezc3d
    c = ezc3d.c3d(str(shared_data / "rbds" / "RBDS001runT35.c3d"), extract_forceplat_data=True)
    return c


def test_plate_axes_match_ezc3d_reference_frame(rbds001):
    pf = rbds001["data"]["platform"][0]
    corners = pf["corners"].T
    rot = plate_axes(corners)
    assert np.allclose(rot.T @ rot, np.eye(3))
    assert np.isclose(np.linalg.det(rot), 1.0)
    # ezc3d's lab force is rot @ plate force: check on the calibrated raw channels.
    channels = (pf["cal_matrix"] @ rbds001["data"]["analogs"][0]).T
    assert np.allclose(channels[:, :3] @ rot.T, pf["force"].T, atol=1e-6)


def test_cop_agrees_with_ezc3d_within_0p1_mm(rbds001):
    pf = rbds001["data"]["platform"][0]
    channels = (pf["cal_matrix"] @ rbds001["data"]["analogs"][0]).T  # N and N·mm
    cop = plate_cop_3d(channels, pf["corners"].T, pf["origin"], threshold_n=50.0)
    loaded = np.abs(channels[:, 2]) > 50.0
    assert loaded.sum() > 3000  # plenty of stance samples in a 30 s run
    err_mm = np.abs(cop[loaded] - pf["center_of_pressure"].T[loaded])
    assert err_mm.max() < 0.1
    assert np.isnan(cop[~loaded]).all()


def _level_plate(x0=0.2, y0=-0.5, length=1.6, width=0.5, z=0.0):
    # Corner order giving the usual C3D z-down plate frame (ezc3d: x = c0 - c1, y = c0 - c3).
    return np.array([[x0 + length, y0 + width, z], [x0 + length, y0, z],
                     [x0, y0, z], [x0, y0 + width, z]])


def test_level_plate_axes_point_down_and_grf_is_up():
    corners = _level_plate()
    rot = plate_axes(corners)
    assert np.allclose(rot[:, 2], [0, 0, -1])
    # 700 N pushing down on the plate: plate z is down, so Fz = +700 on the plate.
    ch = np.array([[0.0, 0.0, 700.0, 0.0, 0.0, 0.0]])
    grf, cop, _tz = plate_to_lab(ch, corners, (0.0, 0.0, 0.0))
    assert np.allclose(grf, [[0, 0, 700]])
    assert np.allclose(cop, [corners.mean(0)[:2]])


def test_lab_to_plate_is_exact_inverse():
    rng = np.random.default_rng(3)
    corners = _level_plate()
    origin = (0.01, -0.02, -0.04)
    n = 500
    grf = np.column_stack([rng.normal(0, 80, n), rng.normal(0, 30, n), rng.uniform(60, 2500, n)])
    centre = corners.mean(0)
    cop = np.column_stack([centre[0] + rng.uniform(-0.7, 0.7, n), centre[1] + rng.uniform(-0.2, 0.2, n)])
    tz = rng.normal(0, 5, n)
    ch = lab_to_plate(grf, cop, tz, corners, origin)
    grf2, cop2, tz2 = plate_to_lab(ch, corners, origin, threshold_n=50.0)
    assert np.allclose(grf2, grf, rtol=0, atol=1e-9)
    assert np.allclose(cop2, cop, rtol=0, atol=1e-12)
    assert np.allclose(tz2, tz, rtol=0, atol=1e-9)


def test_inverse_on_a_tilted_rotated_plate():
    rng = np.random.default_rng(4)
    base = _level_plate()
    ang = np.deg2rad(20.0)
    rz = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
    tilt = np.deg2rad(3.0)
    rx = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    corners = base @ (rx @ rz).T
    origin = (0.3, 0.1, -0.02)
    n = 200
    grf = np.column_stack([rng.normal(0, 80, n), rng.normal(0, 30, n), rng.uniform(60, 2500, n)])
    centre = corners.mean(0)
    cop = np.column_stack([centre[0] + rng.uniform(-0.2, 0.2, n), centre[1] + rng.uniform(-0.1, 0.1, n)])
    tz = rng.normal(0, 5, n)
    grf2, cop2, tz2 = plate_to_lab(lab_to_plate(grf, cop, tz, corners, origin), corners, origin)
    assert np.allclose(grf2, grf, atol=1e-9)
    assert np.allclose(cop2, cop, atol=1e-12)
    assert np.allclose(tz2, tz, atol=1e-9)


def test_cop_blanked_below_threshold_and_no_contact_maps_to_centre():
    corners = _level_plate()
    grf = np.array([[0.0, 0.0, 10.0], [0.0, 0.0, 800.0]])
    cop = np.array([[np.nan, np.nan], [0.9, -0.3]])
    ch = lab_to_plate(grf, cop, np.array([np.nan, 1.0]), corners, (0, 0, -0.03))
    _, cop2, tz2 = plate_to_lab(ch, corners, (0, 0, -0.03), threshold_n=50.0)
    assert np.isnan(cop2[0]).all() and np.isnan(tz2[0])
    assert np.allclose(cop2[1], [0.9, -0.3])


@pytest.mark.parametrize(("corners", "field"), [
    (np.zeros((3, 3)), "corners_m"),
    (np.zeros((4, 3)), "corners_m"),
])
def test_bad_geometry_names_the_field(corners, field):
    with pytest.raises(ConfigError, match=field):
        plate_axes(corners)


def test_bad_channels_shape_names_the_field():
    with pytest.raises(ConfigError, match="channels"):
        plate_to_lab(np.zeros((5, 5)), _level_plate(), (0, 0, 0))
