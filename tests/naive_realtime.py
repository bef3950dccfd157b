"""Slow pure-Python twins of the realtime kernels (labsuite/realtime/_kernels.py).

Written for reading, one sample at a time, from the definitions (DESIGN.md formulas, Milner et al.
2006, Blackmore et al. 2016, Roerdink et al. 2008); the kernels must match them.
"""

from __future__ import annotations

import math


def crossing(t0, v0, t1, v1, level):
    if v1 == v0:
        return t1
    return t0 + (level - v0) / (v1 - v0) * (t1 - t0)


class NaivePlate:
    """One plate: bad-sample check, low-pass, geometry, hysteresis, threshold events, butterfly."""

    def __init__(self, rot, centre, origin, sos, zi_unit, on_n, off_n, lookback, bf_on, bf_h,
                 strike_n=None, toe_n=None, max_f_n=math.inf, max_m_nm=math.inf):
        self.rot = [[float(v) for v in row] for row in rot]
        self.centre = [float(v) for v in centre]
        self.origin = [float(v) for v in origin]
        self.sos = [[float(v) for v in row] for row in sos]
        self.zi_unit = [[float(v) for v in row] for row in zi_unit]
        self.zi = None
        self.on, self.off, self.lookback = on_n, off_n, lookback
        self.strike_n = on_n if strike_n is None else strike_n
        self.toe_n = off_n if toe_n is None else toe_n
        self.max_f, self.max_m = max_f_n, max_m_nm
        self.bf_on, self.bf_h = bf_on, bf_h
        self.t, self.raw, self.filt = [], [], []  # every sample: time, (vz, copx, copy, bad), (gx..copy)
        self.flight = []  # raw vertical force of every flight sample so far
        self.in_contact = False
        self.k_on = 0
        self.bad_run = None  # (first k, reason bits) of the bad run in progress
        self.bf_dir = 0
        self.lo = self.hi = None
        self.ext = None
        self.events = []

    def _filter(self, x):
        if not self.sos:
            return list(x)
        if self.zi is None:
            self.zi = [[[u[0] * x[j], u[1] * x[j]] for j in range(6)] for u in self.zi_unit]
        out = []
        for j in range(6):
            v = x[j]
            for s, (b0, b1, b2, _a0, a1, a2) in enumerate(self.sos):
                z = self.zi[s][j]
                y = b0 * v + z[0]
                z[0] = b1 * v - a1 * y + z[1]
                z[1] = b2 * v - a2 * y
                v = y
            out.append(v)
        return out

    def _lab(self, src, threshold):
        r = self.rot
        g = [-(r[i][0] * src[0] + r[i][1] * src[1] + r[i][2] * src[2]) for i in range(3)]
        if g[2] >= threshold:
            c = self.origin[2]
            px = (c * src[0] - src[4]) / src[2] - self.origin[0]
            py = (src[3] + c * src[1]) / src[2] - self.origin[1]
            cx = self.centre[0] + px * r[0][0] + py * r[0][1]
            cy = self.centre[1] + px * r[1][0] + py * r[1][1]
        else:
            cx = cy = math.nan
        return g, cx, cy

    def feed(self, ts, channels):
        for t, row in zip(ts, channels, strict=True):
            self.step(float(t), [float(v) for v in row])

    def _why_bad(self, x):
        if not all(math.isfinite(v) for v in x):
            return 1
        if math.hypot(x[0], x[1], x[2]) > self.max_f:
            return 2
        if any(abs(v) > self.max_m for v in x[3:]):
            return 2
        return 0

    def noise_floor(self):
        n = len(self.flight)
        if n < 10:
            return math.nan
        mean = sum(self.flight) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in self.flight) / (n - 1))
        return mean + 2 * sd

    def step(self, t, x):
        k = len(self.t)
        self.t.append(t)
        why = self._why_bad(x)
        if why:
            self.raw.append((math.nan, math.nan, math.nan, float(why)))
            self.filt.append((math.nan,) * 5)
            self.zi = None  # the filter restarts at the next good sample
            first, bits = self.bad_run or (k, 0)
            self.bad_run = (first, bits | why)
            return
        if self.bad_run is not None:
            first, bits = self.bad_run
            self.events.append((5.0, k - 1, self.t[k - 1], first, float(bits), 0.0))
            self.bad_run = None
        f = self._filter(x)
        g, cx, cy = self._lab(x, self.on)
        gf, fx, fy = self._lab(f, self.off)
        self.raw.append((g[2], cx, cy, 0.0))
        self.filt.append((gf[0], gf[1], gf[2], fx, fy))
        v = g[2]
        vr = [r[0] for r in self.raw]

        def cross(j, level, fallback):
            c = crossing(self.t[j], vr[j], self.t[j + 1], vr[j + 1], level)
            return fallback if math.isnan(c) else c

        if not self.in_contact:
            if v < self.off:
                self.flight.append(v)
            if v >= self.on:
                self.in_contact = True
                self.k_on = k
                strike, k_first, unknown = t, k, 1.0
                if k > 0:
                    stop = max(k - self.lookback, 0)
                    # the last sample below the strike threshold before this one (NaN stops it)
                    j = k - 1
                    while j >= stop and vr[j] >= self.strike_n:
                        j -= 1
                    if j >= stop:
                        unknown, k_first = 0.0, j + 1
                        strike = cross(j, self.strike_n, self.t[j + 1])
                    elif stop > 0:
                        unknown = 0.0
                        strike = cross(k - 1, self.on, t)
                self.events.append((1.0, k, strike, k_first, unknown, self.noise_floor()))
        elif v < self.off:
            self.in_contact = False
            # the first fall through the toe-off threshold after the contact was detected
            j = next(j for j in range(self.k_on, k) if j == k - 1 or vr[j + 1] < self.toe_n)
            self.events.append((2.0, k, cross(j, self.toe_n, self.t[j]), j, 0.0, 0.0))
        if self.bf_on and not math.isnan(fx):
            self._butterfly(k, fx, fy)

    def _butterfly(self, k, x, y):
        h = self.bf_h
        if self.bf_dir == 0:
            if self.lo is None or x < self.lo[0]:
                self.lo = (x, k, y)
            if self.hi is None or x > self.hi[0]:
                self.hi = (x, k, y)
            if x >= self.lo[0] + h:
                self.bf_dir, self.ext = 1, (x, k, y)
            elif x <= self.hi[0] - h:
                self.bf_dir, self.ext = -1, (x, k, y)
        elif self.bf_dir < 0:
            if x < self.ext[0]:
                self.ext = (x, k, y)
            elif x >= self.ext[0] + h:
                self.events.append((3.0, self.ext[1], 0.0, self.ext[0], self.ext[2], k))
                self.bf_dir, self.ext = 1, (x, k, y)
        else:
            if x > self.ext[0]:
                self.ext = (x, k, y)
            elif x <= self.ext[0] - h:
                self.events.append((4.0, self.ext[1], 0.0, self.ext[0], self.ext[2], k))
                self.bf_dir, self.ext = -1, (x, k, y)


def contact_metrics(fz, fx, copx, copy, rate_hz, t0, strike_s, toe_off_s, impact_frac,
                    impact_min_n, impact_prom_n, need_higher_peak, cop_min_n=0.0, cop_bin_n=1,
                    belt_speed=math.nan, foot_length=math.nan, toe_frac=0.83):
    """Per-contact metrics as a dict (N, N/s, N*s, m, %), NaN where undefined."""
    nan = math.nan
    out = dict(peak=nan, impact=nan, impact_t=nan, valr=nan, vilr=nan, method=nan, brake=nan,
               prop=nan, path=nan, cop_x=nan, cop_y=nan, si=nan, bins=nan)
    n = len(fz)
    dt = 1.0 / rate_hz
    if n < 3:
        return out
    times = [t0 + j * dt for j in range(n)]
    imax = max(range(n), key=lambda j: (fz[j], -j))
    out["peak"] = fz[imax]
    contact = toe_off_s - strike_s
    ref = None
    for j in range(1, n - 1):
        if (times[j] - strike_s) / contact > impact_frac:
            break
        is_peak = fz[j] > fz[j - 1] and fz[j] >= fz[j + 1] and fz[j] >= impact_min_n
        if not is_peak or (need_higher_peak and j >= imax):
            continue
        # prominence: the drop before the force climbs above this peak again (or the stance ends)
        after = []
        for k in range(j + 1, n):
            if fz[k] > fz[j]:
                break
            after.append(fz[k])
        if fz[j] - min([fz[j], *after]) >= impact_prom_n:
            ref = j
            break
    if ref is not None:
        f_ref, t_ref, j_ref = fz[ref], times[ref], ref
        out.update(impact=f_ref, impact_t=t_ref, method=0.0)
    else:
        t_ref = strike_s + 0.13 * contact
        x = (t_ref - t0) / dt
        j0 = min(max(math.floor(x), 0), n - 2)
        w = x - j0
        f_ref = fz[j0] * (1 - w) + fz[j0 + 1] * w
        j_ref = j0 + 1
        out["method"] = 1.0

    def first_at_or_above(level):
        for j in range(j_ref + 1):
            if fz[j] >= level:
                t = times[0] if j == 0 else crossing(times[j - 1], fz[j - 1], times[j], fz[j], level)
                return j, t
        return None, None

    if f_ref > 0:
        i20, t20 = first_at_or_above(0.2 * f_ref)
        i80, t80 = first_at_or_above(0.8 * f_ref)
        if i20 is not None and i80 is not None:
            if t80 > t20:
                out["valr"] = 0.6 * f_ref / (t80 - t20)
            k0 = max(i20 - 1, 0)
            k1 = i80 - 1 if i80 > k0 else k0
            slopes = [(fz[k + 1] - fz[k]) * rate_hz for k in range(k0, k1 + 1) if k + 1 < n]
            if slopes:
                out["vilr"] = max(slopes)
    out["brake"] = sum(v * dt for v in fx if v < 0)
    out["prop"] = sum(v * dt for v in fx if v >= 0)
    # COP: loaded samples in bins of cop_bin_n (the last takes the rest), each the COP of its load
    loaded = [j for j in range(n) if fz[j] >= cop_min_n
              and not (math.isnan(copx[j]) or math.isnan(copy[j]))]
    if not loaded:
        return out
    nb = max(len(loaded) // cop_bin_n, 1)
    bins = [loaded[b * cop_bin_n:(b + 1) * cop_bin_n] for b in range(nb - 1)]
    bins.append(loaded[(nb - 1) * cop_bin_n:])
    pts = []
    for members in bins:
        w = sum(fz[j] for j in members)
        pts.append((sum(fz[j] * copx[j] for j in members) / w,
                    sum(fz[j] * copy[j] for j in members) / w,
                    sum(fz[j] * (times[j] - strike_s) for j in members) / w))
    out.update(bins=float(nb), cop_x=pts[0][0], cop_y=pts[0][1])
    if math.isnan(belt_speed):
        return out
    shift = pts[-1][0] - pts[0][0]
    travel = belt_speed * (pts[-1][2] - pts[0][2])
    # the belt carries the foot backwards: unless the COP moved further than the belt did, the
    # direction of travel is opposite to the COP's movement in the lab
    forward = (1.0 if shift >= 0 else -1.0) * (-1.0 if travel >= abs(shift) else 1.0)
    belt = [(forward * x + belt_speed * tb, y) for x, y, tb in pts]
    out["path"] = sum(math.hypot(belt[b][0] - belt[b - 1][0], belt[b][1] - belt[b - 1][1])
                      for b in range(1, len(belt)))
    out["cop_x"] = forward * belt[0][0]
    if not math.isnan(foot_length):
        heel = max(u for u, _ in belt) - toe_frac * foot_length
        out["si"] = 100.0 * (belt[0][0] - heel) / foot_length
    return out


def fit_edge(v, tau, hi_n, power):
    """Least-squares onset of v = A (tau - tau0)^power over samples up to the first >= hi_n."""
    xs, ys = [], []
    for vj, tj in zip(v, tau, strict=True):
        xs.append(tj)
        ys.append(vj ** (1.0 / power) if vj > 0 else 0.0)
        if vj >= hi_n:
            break
    m = len(xs)
    if m < 2:
        return math.nan
    mx, my = sum(xs) / m, sum(ys) / m
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        return math.nan
    a = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    if a <= 0:
        return math.nan
    b = my - a * mx
    return -b / a


def max_between(times, values, t_lo, t_hi):
    """Largest value with t_lo <= t <= t_hi, NaN if none."""
    inside = [v for t, v in zip(times, values, strict=True) if t_lo <= t <= t_hi]
    return max(inside) if inside else math.nan
