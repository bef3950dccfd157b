"""Noise-free waveform templates of the virtual participant: one foot contact's GRF, COP and shank motion.

Pure functions of time relative to a planned step (see :mod:`labsuite.drivers.sim.gait`): the planner
uses them to compute each step's true metrics, the renderers to draw force-plate and IMU samples.
"""

from __future__ import annotations

import numpy as np
from scipy.special import beta as beta_fn

from labsuite.constants import GRAVITY_M_S2

G_M_S2 = GRAVITY_M_S2

# Shank rotation radii (m): in stance the distal-tibia sensor turns about the ankle, in swing about
# the knee. Rough segment geometry of an adult (Winter, Biomechanics and Motor Control of Human
# Movement, 4th ed., table 4.1: shank ~0.246 x height).
SENSOR_ABOVE_ANKLE_M = 0.10
SENSOR_BELOW_KNEE_M = 0.32


def beta_bump(s: np.ndarray, a: float, b: float) -> np.ndarray:
    """Return s^a (1-s)^b scaled to a peak of 1 (at s = a/(a+b)); 0 outside (0, 1)."""
    s = np.asarray(s, dtype=float)
    m = a / (a + b)
    inside = (s > 0.0) & (s < 1.0)
    sc = np.where(inside, s, 0.5)
    out = np.exp(a * np.log(sc / m) + b * np.log((1.0 - sc) / (1.0 - m)))
    return np.where(inside, out, 0.0)


def beta_bump_area(a: float, b: float) -> float:
    """Integral over s in [0, 1] of :func:`beta_bump` (dimensionless)."""
    m = a / (a + b)
    return float(beta_fn(a + 1.0, b + 1.0) / (m**a * (1.0 - m) ** b))


def impact_pulse(tau_s: np.ndarray, rise_s: float, decay_s: float) -> np.ndarray:
    """Return an asymmetric raised-cosine pulse, 0 at tau=0, 1 at tau=rise_s, 0 at rise_s+decay_s."""
    tau = np.asarray(tau_s, dtype=float)
    up = np.sin(0.5 * np.pi * np.clip(tau / rise_s, 0.0, 1.0)) ** 2
    down = np.cos(0.5 * np.pi * np.clip((tau - rise_s) / decay_s, 0.0, 1.0)) ** 2
    return np.where(tau <= 0.0, 0.0, np.where(tau < rise_s, up, down))


def sin2_lobe(s: np.ndarray, s0: float, s1: float) -> np.ndarray:
    """Return sin^2 over [s0, s1] (peak 1 at the middle), 0 elsewhere; its integral is (s1-s0)/2."""
    s = np.asarray(s, dtype=float)
    u = (s - s0) / (s1 - s0)
    return np.where((u > 0.0) & (u < 1.0), np.sin(np.pi * np.clip(u, 0.0, 1.0)) ** 2, 0.0)


def vertical_bw(tau_s: np.ndarray, contact_s: float, imp_amp_bw: float, imp_rise_s: float,
                imp_decay_s: float, b1_amp_bw: float, b1_a: float, b1_b: float,
                b2_amp_bw: float, b2_a: float, b2_b: float) -> np.ndarray:
    """Vertical GRF of one contact in body weights at ``tau_s`` seconds after the strike.

    An impact pulse (rearfoot strikes) plus one (running) or two (walking, M-shape) beta bumps over
    the stance, after the two-component view of Clark, Ryan & Weyand (2017, J Exp Biol 220:247).
    """
    s = np.asarray(tau_s, dtype=float) / contact_s
    f = b1_amp_bw * beta_bump(s, b1_a, b1_b)
    if b2_amp_bw > 0.0:
        f = f + b2_amp_bw * beta_bump(s, b2_a, b2_b)
    if imp_amp_bw > 0.0:
        f = f + imp_amp_bw * impact_pulse(tau_s, imp_rise_s, imp_decay_s) * (s < 1.0)
    return f


def vertical_impulse_bw_s(contact_s: float, imp_amp_bw: float, imp_rise_s: float,
                          imp_decay_s: float, b1_amp_bw: float, b1_a: float, b1_b: float,
                          b2_amp_bw: float, b2_a: float, b2_b: float) -> float:
    """Integral of :func:`vertical_bw` over the contact (BW*s), in closed form."""
    area = b1_amp_bw * beta_bump_area(b1_a, b1_b) * contact_s
    if b2_amp_bw > 0.0:
        area += b2_amp_bw * beta_bump_area(b2_a, b2_b) * contact_s
    if imp_amp_bw > 0.0:
        area += imp_amp_bw * 0.5 * (imp_rise_s + imp_decay_s)
    return area


def ap_bw(s: np.ndarray, brake_bw: float, brake_end_frac: float, prop_bw: float) -> np.ndarray:
    """Anterior-posterior GRF (BW, + forward) at stance fraction ``s``: braking then propulsion."""
    return -brake_bw * sin2_lobe(s, 0.0, brake_end_frac) + prop_bw * sin2_lobe(s, brake_end_frac, 1.0)


def ml_bw(s: np.ndarray, ml_amp_bw: float, side_sign: float) -> np.ndarray:
    """Medio-lateral GRF (BW, + left): a brief lateral push at loading, then medial (towards midline)."""
    return side_sign * ml_amp_bw * (0.4 * sin2_lobe(s, 0.0, 0.15) - sin2_lobe(s, 0.1, 1.0))


def free_moment_nm(s: np.ndarray, tz_peak_nm: float, side_sign: float) -> np.ndarray:
    """Free moment about the vertical (N*m): one full sine over the stance, mirrored left/right."""
    s = np.asarray(s, dtype=float)
    inside = (s > 0.0) & (s < 1.0)
    return np.where(inside, -side_sign * tz_peak_nm * np.sin(2.0 * np.pi * s), 0.0)


def cop_along_foot(s: np.ndarray, start_frac: float, end_frac: float, shape_k: float) -> np.ndarray:
    """COP position along the foot (fraction of foot length from the heel) at stance fraction ``s``."""
    sc = np.clip(np.asarray(s, dtype=float), 0.0, 1.0)
    return start_frac + (end_frac - start_frac) * (1.0 - (1.0 - sc) ** shape_k)


def shank_kinematics(u: np.ndarray, duration_s: float | np.ndarray, from_rad: float,
                     to_rad: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shank angle from vertical (rad, + foot ahead of the knee), its rate and its acceleration.

    A half-cosine from ``from_rad`` (u = 0) to ``to_rad`` (u = 1) over ``duration_s``: stance goes
    from the strike angle to the toe-off angle, swing from there to the next strike's angle, with
    zero angular rate at both ends so the pieces join smoothly.
    """
    uc = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
    delta = to_rad - from_rad
    w = np.pi / duration_s
    theta = from_rad + 0.5 * delta * (1.0 - np.cos(np.pi * uc))
    dtheta = 0.5 * delta * w * np.sin(np.pi * uc)
    ddtheta = 0.5 * delta * w * w * np.cos(np.pi * uc)
    return theta, dtheta, ddtheta


def tibial_shock(tau_s: np.ndarray, peak_s: float) -> np.ndarray:
    """Axial tibial shock shape (peak 1 at ``peak_s`` after strike) with a damped negative rebound."""
    tau = np.asarray(tau_s, dtype=float)
    main = impact_pulse(tau, peak_s, peak_s)
    rebound = -0.35 * impact_pulse(tau - 2.0 * peak_s, 1.2 * peak_s, 2.0 * peak_s)
    return main + rebound
