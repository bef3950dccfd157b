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
                 strike_n=None, toe_n=None, max_f_n=math.inf, max_m_nm=math.inf, early=None):
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
        self.t, self.raw, self.filt = [], [], []  # every sample: time, (vz, bad), (gx..copy)
        self.flight = []  # raw vertical force of every flight sample so far
        self.in_contact = False
        self.k_on = 0
        self.bad_run = None  # (first k, reason bits) of the bad run in progress
        self.bf_dir = 0
        self.lo = self.hi = None
        self.ext = None
        self.events = []
        # early decision (dict: delay, dt, frac, min_n, prom_n, higher, min_contact, max_contact)
        self.early = early
        self.expected = math.nan  # contact time of the last accepted contact
        self.open_strike = math.nan
        self.k_first = 0
        self.early_pending = False

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
            self.raw.append((math.nan, float(why)))
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
        g, _, _ = self._lab(x, self.on)
        gf, fx, fy = self._lab(f, self.off)
        self.raw.append((g[2], 0.0))
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
                self.k_first = k_first
                self.open_strike = math.nan if unknown else strike
                self.early_pending = (self.early is not None and not unknown
                                      and not math.isnan(self.expected))
        elif v < self.off:
            self.in_contact = False
            # the first fall through the toe-off threshold after the contact was detected
            j = next(j for j in range(self.k_on, k) if j == k - 1 or vr[j + 1] < self.toe_n)
            toe = cross(j, self.toe_n, self.t[j])
            self.events.append((2.0, k, toe, j, 0.0, 0.0))
            self.early_pending = False
            if self.early is not None and (self.early["min_contact"] <= toe - self.open_strike
                                           <= self.early["max_contact"]):
                self.expected = toe - self.open_strike
        if self.early_pending:
            e = self.early
            base = self.k_first + e["delay"]
            if k - base >= 2:
                fz = [self.filt[base + j][2] for j in range(k - base + 1)]
                status, j = early_decision(fz, self.t[self.k_first], e["dt"], self.open_strike,
                                           self.expected, e["frac"], e["min_n"], e["prom_n"],
                                           e["higher"])
                if status:
                    self.events.append((6.0, k, t, float(status), float(j), self.expected))
                    self.early_pending = False
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


def early_decision(fz, t0, dt, strike, expected, frac, min_n, prom_n, higher):
    """(status, j) of the impact window from the samples known so far (1 peak at j, 2 none, 0 wait).

    The impact-peak rule of :func:`contact_metrics` with the stance assumed to last ``expected``,
    re-examined from the first sample every time: a candidate decides only when no later sample
    can change whether it is the first prominent peak before the stance maximum.
    """
    m = len(fz) - 1
    for j in range(1, m):
        if (t0 + j * dt - strike) / expected > frac:
            return 2, -1
        if not (fz[j] > fz[j - 1] and fz[j] >= fz[j + 1] and fz[j] >= min_n):
            continue
        later = fz[j + 1:]
        above = next((q for q, v in enumerate(later) if v > fz[j]), None)
        run = later if above is None else later[:above]
        prominence = fz[j] - min([fz[j], *run])
        if above is None:  # nothing above it yet: still open, unless prominence alone decides
            return (1, j) if not higher and prominence >= prom_n else (0, -1)
        if prominence < prom_n:
            continue
        if not higher or max(later) > max(fz[:j + 1]):
            return 1, j
        return 0, -1
    return 0, -1


def finalize_rows(contacts, cadence_n, symmetry_n, max_step_s, cutoffs):
    """Full step records (dicts) of finalized contacts in order, from the step-record definitions.

    ``contacts``: dicts with foot, strike, toe, crossover, invalid, cop_x, cop_y, metrics (dict of
    :func:`contact_metrics` values in N units), bw, tibial, belt_speed (NaN unknown), step_id,
    decided (time of the deciding sample).
    """
    nan = math.nan
    last = {}
    step_times = []
    sym = {0: {}, 1: {}}
    names = ("contact_s", "step_s", "peak_vgrf_bw", "valr_bw_per_s", "vilr_bw_per_s",
             "tibial_peak_g")
    out = []
    for c in contacts:
        r = {"foot": float(c["foot"]) if c["foot"] >= 0 else nan, "strike_s": c["strike"],
             "toe_off_s": c["toe"], "contact_s": c["toe"] - c["strike"],
             "crossover": 1.0 if c["crossover"] else 0.0, "invalid": 1.0 if c["invalid"] else 0.0,
             "cop_strike_x_m": c["cop_x"], "cop_strike_y_m": c["cop_y"], "record_kind": 0.0,
             "step_id": c["step_id"], "decided_s": c["decided"]}
        out.append(r)
        foot = c["foot"]
        if c["crossover"] or foot < 0 or c["invalid"]:
            if c["invalid"] and not c["crossover"] and foot >= 0:
                last[foot] = c["strike"]
            continue
        m, bw = c["metrics"], c["bw"]
        r.update(peak_vgrf_bw=m["peak"] / bw, impact_peak_bw=m["impact"] / bw,
                 impact_peak_s=m["impact_t"], valr_bw_per_s=m["valr"] / bw,
                 vilr_bw_per_s=m["vilr"] / bw, loading_rate_method=m["method"],
                 braking_impulse_bw_s=m["brake"] / bw, propulsive_impulse_bw_s=m["prop"] / bw,
                 cop_path_m=m["path"], strike_index_pct=m["si"], tibial_peak_g=c["tibial"])
        si = m["si"]
        r["strike_pattern"] = nan if math.isnan(si) else float(sum(si >= x for x in cutoffs))
        if foot ^ 1 in last and 0 < c["strike"] - last[foot ^ 1] <= max_step_s:
            r["step_s"] = c["strike"] - last[foot ^ 1]
            step_times = ([*step_times, r["step_s"]])[-cadence_n:]
        if foot in last and 0 < c["strike"] - last[foot] <= 2 * max_step_s:
            r["stride_s"] = c["strike"] - last[foot]
        last[foot] = c["strike"]
        if step_times:
            r["cadence_spm"] = 60.0 * len(step_times) / sum(step_times)
        if not math.isnan(c["belt_speed"]) and math.isfinite(r.get("step_s", nan)):
            r["step_length_m"] = c["belt_speed"] * r["step_s"]
        for name in names:
            v = r.get(name, nan)
            if math.isfinite(v):
                sym[foot][name] = ([*sym[foot].get(name, []), v])[-symmetry_n:]
        for name, si_name in zip(names, ("si_contact_pct", "si_step_pct", "si_peak_vgrf_pct",
                                         "si_valr_pct", "si_vilr_pct", "si_tibial_peak_pct"),
                                 strict=True):
            left, right = sym[0].get(name), sym[1].get(name)
            if left and right:
                lm, rm = sum(left) / len(left), sum(right) / len(right)
                if lm + rm != 0:
                    r[si_name] = 100.0 * (lm - rm) / (0.5 * (lm + rm))
    return out


def fused_floor(ch, rot, sos, zi_unit, on_n, off_n):
    """Filtered vertical force of every sample and the number of contacts (benchmark floor)."""
    zi = None
    fz, contacts, loaded = [], 0, False
    for row in ch:
        x = [float(v) for v in row]
        if zi is None:
            zi = [[[u[0] * x[j], u[1] * x[j]] for j in range(6)] for u in zi_unit]
        filt = []
        for j in range(6):
            v = x[j]
            for s, (b0, b1, b2, _a0, a1, a2) in enumerate(sos):
                z = zi[s][j]
                y = b0 * v + z[0]
                z[0] = b1 * v - a1 * y + z[1]
                z[1] = b2 * v - a2 * y
                v = y
            filt.append(v)
        fz.append(-(rot[2][0] * filt[0] + rot[2][1] * filt[1] + rot[2][2] * filt[2]))
        vz = -(rot[2][0] * x[0] + rot[2][1] * x[1] + rot[2][2] * x[2])
        if not loaded and vz >= on_n:
            loaded, contacts = True, contacts + 1
        elif loaded and vz < off_n:
            loaded = False
    return fz, contacts


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
