"""Every realtime kernel against its slow pure-Python twin, plus independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from labsuite.plates import lab_to_plate, plate_axes, plate_centre, plate_to_lab
from labsuite.realtime import _kernels as K

try:
    from tests import naive_realtime as naive
except ImportError:  # pytest run from inside tests/
    import naive_realtime as naive  # type: ignore[no-redef]


def _plate(corners=None):
    if corners is None:  # a 1.8 m x 0.5 m plate with the usual C3D z-down frame
        corners = np.array([[1.8, 0.25, 0.0], [1.8, -0.25, 0.0], [0.0, -0.25, 0.0], [0.0, 0.25, 0.0]])
    return plate_axes(corners), plate_centre(corners), corners


def _run_kernel(ts, ch, rot, centre, origin, sos, on_n=50.0, off_n=25.0, lookback=50, bf_on=False,
                bf_h=0.03, chunk=97, strike_n=None, toe_n=None, max_f=np.inf, max_m=np.inf,
                eparams=None):
    n = len(ts)
    nsec = sos.shape[0]
    zi = np.zeros((max(nsec, 1), 6, 2))
    zi_unit = signal.sosfilt_zi(sos) if nsec else np.zeros((1, 2))
    istate = np.zeros(K.N_ISTATE, dtype=np.int64)
    fstate = np.full(K.N_FSTATE, np.nan)
    fstate[[K.F_NZ_N, K.F_NZ_MEAN, K.F_NZ_M2]] = 0.0
    ring_t = np.zeros(n)
    ring_raw = np.zeros((n, 2))
    ring_filt = np.zeros((n, 5))
    events = []
    buf = np.zeros((3 * chunk + 8, K.EVENT_COLS))
    strike_n = on_n if strike_n is None else strike_n
    toe_n = off_n if toe_n is None else toe_n
    for start in range(0, n, chunk):
        m = K._plate_chunk(ts[start:start + chunk], ch[start:start + chunk], rot, centre,
                           np.asarray(origin, float), sos, zi, zi_unit, nsec > 0, istate, fstate,
                           ring_t, ring_raw, ring_filt, on_n, off_n, strike_n, toe_n, max_f, max_m,
                           lookback, bf_on, bf_h,
                           np.zeros(K.N_EPARAMS) if eparams is None else eparams, buf)
        events.extend(tuple(r) for r in buf[:m])
    return ring_t, ring_raw, ring_filt, events


def _synthetic_run(rate_hz=1000.0, seconds=3.0, seed=0):
    """Two-foot running on one plate: half-sine contacts with an impact bump, noise, COP roll."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    fz = np.zeros_like(t)
    copx = np.zeros_like(t)
    copy = np.zeros_like(t)
    for i, strike in enumerate(np.arange(0.1, seconds - 0.3, 0.36)):
        s = (t - strike) / 0.24
        inside = (s > 0) & (s < 1)
        f = 1800 * np.abs(np.sin(np.pi * s)) ** 1.4 + 600 * np.exp(-((s - 0.12) / 0.04) ** 2)
        fz[inside] += f[inside]
        copx[inside] = 1.0 - 0.3 * s[inside]
        copy[inside] = 0.08 if i % 2 == 0 else -0.08
    fz += rng.normal(0, 7, len(t))
    ap = 0.1 * fz * np.cos(np.pi * np.clip((t % 0.36) / 0.36, 0, 1))
    grf = np.column_stack([rng.normal(0, 5, len(t)) + ap, rng.normal(0, 5, len(t)), fz])
    cop = np.column_stack([copx, copy])
    return t, grf, cop


@pytest.mark.parametrize("lowpass_hz", [0.0, 50.0])
def test_plate_chunk_matches_twin(lowpass_hz):
    rot, centre, corners = _plate()
    origin = (0.01, -0.02, -0.04)
    t, grf, cop = _synthetic_run()
    ch = lab_to_plate(grf, np.where(grf[:, 2:3] > 1, cop, np.nan), np.zeros(len(t)), corners, origin)
    sos = (signal.butter(4, lowpass_hz, fs=1000.0, output="sos") if lowpass_hz
           else np.zeros((0, 6)))
    ring_t, ring_raw, ring_filt, events = _run_kernel(t, ch, rot, centre, origin, sos)
    twin = naive.NaivePlate(rot, centre, origin, sos, signal.sosfilt_zi(sos) if len(sos) else [],
                            50.0, 25.0, 50, False, 0.03)
    twin.feed(t, ch)
    assert np.array_equal(ring_t, twin.t)
    np.testing.assert_allclose(ring_raw, np.array(twin.raw), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(ring_filt, np.array(twin.filt), rtol=1e-12, atol=1e-9)
    assert len(events) == len(twin.events) >= 14
    np.testing.assert_allclose(np.array(events), np.array(twin.events), rtol=1e-12, atol=1e-12)


def test_kernel_filter_matches_scipy_sosfilt_from_steady_state():
    # independent reference: scipy's sosfilt started from the first sample's steady state
    rot, centre, corners = _plate()
    t, grf, cop = _synthetic_run(seconds=1.5)
    grf[:, 2] += 700.0  # start loaded so the steady-state start matters
    ch = lab_to_plate(grf, cop, np.zeros(len(t)), corners, (0, 0, 0))
    sos = signal.butter(4, 30.0, fs=1000.0, output="sos")
    _, _, ring_filt, _ = _run_kernel(t, ch, rot, centre, (0, 0, 0), sos, chunk=7)
    zi = signal.sosfilt_zi(sos)[:, :, None] * ch[0][None, None, :]  # (sections, 2, channels)
    ref, _ = signal.sosfilt(sos, ch, axis=0, zi=zi)
    ref_grf = -(ref[:, :3] @ rot.T)
    np.testing.assert_allclose(ring_filt[:, :3], ref_grf, rtol=1e-9, atol=1e-6)


def test_kernel_geometry_matches_geometry_module():
    rot, centre, corners = _plate()
    origin = (0.02, 0.01, -0.035)
    t, grf, cop = _synthetic_run(seconds=1.0)
    ch = lab_to_plate(grf, np.where(grf[:, 2:3] > 1, cop, np.nan), np.zeros(len(t)), corners, origin)
    _, ring_raw, ring_filt, _ = _run_kernel(t, ch, rot, centre, origin, np.zeros((0, 6)))
    g, c, _ = plate_to_lab(ch, corners, origin, threshold_n=25.0)
    np.testing.assert_allclose(ring_raw[:, 0], g[:, 2], rtol=1e-12)
    # unfiltered, the "filtered" columns are the raw sample's GRF and COP (blanked below 25 N)
    np.testing.assert_allclose(ring_filt[:, :3], g, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(ring_filt[:, 3:5], c, rtol=1e-12, atol=1e-12)


def test_butterfly_events_match_twin():
    rot, centre, corners = _plate()
    rate = 200.0
    t = np.arange(int(12 * rate)) / rate
    phase = 2 * np.pi * t * 1.0  # one stride per second
    cop = np.column_stack([0.9 + 0.15 * np.sin(phase * 2) + 0.01 * np.sin(7 * t),
                           0.08 * np.sin(phase)])
    grf = np.column_stack([np.zeros_like(t), np.zeros_like(t), np.full_like(t, 700.0)])
    ch = lab_to_plate(grf, cop, np.zeros(len(t)), corners, (0, 0, 0))
    sos = signal.butter(2, 10.0, fs=rate, output="sos")
    _, _, _, events = _run_kernel(t, ch, rot, centre, (0, 0, 0), sos, bf_on=True, bf_h=0.03,
                                  chunk=13)
    twin = naive.NaivePlate(rot, centre, (0, 0, 0), sos, signal.sosfilt_zi(sos), 50.0, 25.0, 10,
                            True, 0.03)
    twin.feed(t, ch)
    bf = [e for e in events if e[0] in (K.EV_MIN, K.EV_MAX)]
    assert len(bf) >= 40
    np.testing.assert_allclose(np.array(events), np.array(twin.events), rtol=1e-12, atol=1e-12)


def _metrics(fz, fx=None, copx=None, copy=None, rate=1000.0, t0=0.0, strike=0.0, toe=None,
             frac=0.3, min_n=350.0, drop_n=14.0, higher=True, cop_min_n=70.0, cop_bin_n=20,
             speed=np.nan, foot=np.nan):
    n = len(fz)
    fx = np.zeros(n) if fx is None else fx
    copx = np.zeros(n) if copx is None else copx
    copy = np.zeros(n) if copy is None else copy
    toe = t0 + (n - 1) / rate if toe is None else toe
    out = np.empty(K.N_METRICS)
    K._contact_metrics(fz, fx, copx, copy, rate, t0, strike, toe, frac, min_n, drop_n, higher,
                       cop_min_n, cop_bin_n, speed, foot, 0.83, out)
    ref = naive.contact_metrics(list(fz), list(fx), list(copx), list(copy), rate, t0, strike, toe,
                                frac, min_n, drop_n, higher, cop_min_n, cop_bin_n, speed, foot, 0.83)
    return out, ref


def _compare(out, ref):
    keys = ["peak", "impact", "impact_t", "valr", "vilr", "method", "brake", "prop", "path",
            "cop_x", "cop_y", "si", "bins"]
    for i, key in enumerate(keys):
        a, b = out[i], ref[key]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-9), key


def test_contact_metrics_match_twin_on_random_stances():
    rng = np.random.default_rng(5)
    for _ in range(60):
        n = int(rng.integers(60, 400))
        s = np.linspace(0, 1, n)
        impact = rng.uniform(0, 900) * np.exp(-((s - rng.uniform(0.05, 0.2)) / 0.04) ** 2)
        fz = 1600 * np.sin(np.pi * s) ** rng.uniform(1, 2) + impact + rng.normal(0, 8, n)
        fx = 200 * np.sin(2 * np.pi * s + np.pi) + rng.normal(0, 3, n)
        copx = 1 - 0.3 * s + rng.normal(0, 0.002, n)
        copy = 0.05 + rng.normal(0, 0.002, n)
        copx[rng.integers(0, n)] = np.nan
        speed = float(rng.choice([np.nan, 0.0, 1.2, 3.5]))
        foot = float(rng.choice([np.nan, 0.27]))
        out, ref = _metrics(fz, fx, copx, copy, toe=(n - 1) / 1000.0 + 0.001, speed=speed,
                            foot=foot, cop_bin_n=int(rng.integers(1, 30)))
        _compare(out, ref)


def test_loading_rates_on_a_ramp_with_an_impact_peak_follow_milner():
    # F rises linearly at 70 BW/s (700 N BW) to an impact peak of 1.5 BW, dips, then the active peak
    rate = 1000.0
    bw = 700.0
    slope = 70.0 * bw
    t = np.arange(0, 0.25, 1 / rate)
    t_imp = 1.5 * bw / slope
    tau = np.clip(t - t_imp, 0, None)
    after = (1.5 * bw - 20000 * np.minimum(tau, 0.02)
             + 2.0 * bw * np.sin(np.pi * tau / (0.25 - t_imp)) ** 2)
    fz = np.where(t <= t_imp, slope * t, after)
    out, ref = _metrics(fz, rate=rate, toe=0.25, frac=0.3)
    _compare(out, ref)
    assert out[K.M_METHOD] == 0
    assert out[K.M_IMPACT] == fz[:40].max()  # the sample at the corner of the ramp
    assert out[K.M_VALR] / bw == pytest.approx(70.0, rel=1e-9)
    assert out[K.M_VILR] / bw == pytest.approx(70.0, rel=1e-9)


def test_no_impact_peak_uses_13_percent_of_stance():
    rate = 1000.0
    t = np.arange(0, 0.25, 1 / rate)
    fz = 1750.0 * np.sin(np.pi * t / 0.25)  # forefoot: one smooth hump, no impact peak
    out, ref = _metrics(fz, rate=rate, toe=0.25)
    _compare(out, ref)
    assert out[K.M_METHOD] == 1
    assert math.isnan(out[K.M_IMPACT])
    f13 = 1750.0 * np.sin(np.pi * 0.13)
    t20 = np.arcsin(0.2 * f13 / 1750.0) * 0.25 / np.pi
    t80 = np.arcsin(0.8 * f13 / 1750.0) * 0.25 / np.pi
    assert out[K.M_VALR] == pytest.approx(0.6 * f13 / (t80 - t20), rel=2e-3)


def test_fit_edge_matches_twin_and_recovers_an_exact_power_law():
    rate = 1000.0
    tau = np.arange(0, 0.05, 1 / rate)
    true_t0 = -0.0123
    v = 3.0e4 * (tau - true_t0) ** 1.4
    assert K._fit_edge(v, tau, 250.0, 1.4) == pytest.approx(true_t0, abs=1e-12)
    rng = np.random.default_rng(2)
    for _ in range(30):
        vv = v + rng.normal(0, 7, len(v))
        a = K._fit_edge(vv, tau, 250.0, 1.4)
        b = naive.fit_edge(list(vv), list(tau), 250.0, 1.4)
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)


def test_ring_helpers_match_twins():
    rng = np.random.default_rng(1)
    cap = 64
    ring_t = np.zeros(cap)
    ring_v = np.zeros(cap)
    n = 0
    all_t, all_v = [], []
    for _ in range(10):
        m = int(rng.integers(1, 30))
        ts = np.sort(rng.uniform(0, 1, m)) + (all_t[-1] if all_t else 0)
        vs = rng.normal(0, 1, m)
        n = K._ring_append(ring_t, ring_v, n, ts, vs)
        all_t.extend(ts)
        all_v.extend(vs)
        lo, hi = all_t[-1] - 2.0, all_t[-1] - 0.5
        kept_t, kept_v = all_t[-cap:], all_v[-cap:]
        got = K._ring_max_between(ring_t, ring_v, n, lo, hi)
        want = naive.max_between(kept_t, kept_v, lo, hi)
        assert (math.isnan(got) and math.isnan(want)) or got == want


@pytest.mark.parametrize(("strike_n", "toe_n"), [(50.0, 25.0), (20.0, 40.0), (10.0, 25.0)])
def test_threshold_events_and_bad_samples_match_twin(strike_n, toe_n):
    rot, centre, corners = _plate()
    origin = (0.01, -0.02, -0.04)
    t, grf, cop = _synthetic_run(rate_hz=500.0, seconds=4.0, seed=4)
    ch = lab_to_plate(grf, np.where(grf[:, 2:3] > 1, cop, np.nan), np.zeros(len(t)), corners, origin)
    ch[300, 2] = 1e308  # a spike in flight or stance
    ch[700:712, :] = np.nan  # a run of missing samples
    ch[1100, 4] = np.inf
    ch[1400, 0] = 5e4  # beyond the plausible force
    sos = signal.butter(2, 40.0, fs=500.0, output="sos")
    kw = dict(strike_n=strike_n, toe_n=toe_n, max_f=1.4e4, max_m=3e4)
    _, ring_raw, ring_filt, events = _run_kernel(t, ch, rot, centre, origin, sos, lookback=25,
                                                 chunk=61, **kw)
    twin = naive.NaivePlate(rot, centre, origin, sos, signal.sosfilt_zi(sos), 50.0, 25.0, 25, False,
                            0.03, strike_n, toe_n, 1.4e4, 3e4)
    twin.feed(t, ch)
    np.testing.assert_allclose(ring_raw, np.array(twin.raw), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(ring_filt, np.array(twin.filt), rtol=1e-12, atol=1e-9)
    assert len(events) == len(twin.events)
    np.testing.assert_allclose(np.array(events), np.array(twin.events), rtol=1e-9, atol=1e-12)
    bad = [e for e in events if e[0] == K.EV_BAD]
    assert [(int(e[3]), int(e[1]), int(e[4])) for e in bad] == [
        (300, 300, K.BAD_RANGE), (700, 711, K.BAD_NONFINITE), (1100, 1100, K.BAD_NONFINITE),
        (1400, 1400, K.BAD_RANGE)]
    # strikes and toe-offs are the interpolated threshold crossings of the raw force
    vz = ring_raw[:, 0]
    for e in events:
        if e[0] == K.EV_START and e[4] == 0 and np.isfinite(vz[int(e[3]) - 1:int(e[3]) + 1]).all():
            j = int(e[3])
            assert vz[j - 1] < strike_n <= vz[j]
            assert t[j - 1] < e[2] <= t[j]
        if e[0] == K.EV_END and np.isfinite(vz[int(e[3]):int(e[3]) + 2]).all():
            j = int(e[3])
            assert vz[j] >= toe_n > vz[j + 1]
            assert t[j] <= e[2] < t[j + 1]


def test_flight_noise_floor_is_mean_plus_two_sd_of_flight_samples():
    rot, centre, corners = _plate()
    t, grf, cop = _synthetic_run(rate_hz=500.0, seconds=3.0, seed=8)
    ch = lab_to_plate(grf, np.where(grf[:, 2:3] > 1, cop, np.nan), np.zeros(len(t)), corners, (0, 0, 0))
    _, ring_raw, _, events = _run_kernel(t, ch, rot, centre, (0, 0, 0), np.zeros((0, 6)))
    starts = [e for e in events if e[0] == K.EV_START]
    # independent: every sample outside contacts below the off threshold before that strike
    vz = ring_raw[:, 0]
    in_contact = np.zeros(len(vz), bool)
    for s, e in zip([e for e in events if e[0] == K.EV_START], [e for e in events if e[0] == K.EV_END],
                    strict=False):
        in_contact[int(s[1]):int(e[1]) + 1] = True  # the sample that ends a contact is not flight
    for s in starts[1:]:
        k = int(s[1])
        flight = vz[:k][~in_contact[:k] & (vz[:k] < 25.0)]
        assert s[5] == pytest.approx(flight.mean() + 2 * flight.std(ddof=1), rel=1e-9)
