"""Private numba kernels of the step processor: per-sample plate pipeline and per-contact metrics.

Called only by :mod:`labsuite.realtime.processor`, which validates every input. Each kernel has a
slow pure-Python twin in ``tests/naive_realtime.py`` that it must match.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Event rows written by _plate_chunk: (type, k, t, a, b, c)
EV_START = 1.0  # contact on: k_on, strike time, k_first, 1 if strike unknown, noise floor
EV_END = 2.0  # contact off: k_end, toe-off time, k_last, -, -
EV_MIN = 3.0  # butterfly AP minimum (strike): k, -, copx, copy, k where it was confirmed
EV_MAX = 4.0  # butterfly AP maximum (toe-off): k, -, copx, copy, k where it was confirmed
EV_BAD = 5.0  # a run of bad samples ended: k of its last sample, its time, k of its first, reason bits, -
EV_EARLY = 6.0  # impact window of the open contact decided: k, its time, status (EARLY_*), j, expected
EVENT_COLS = 6

# status of an early decision (EV_EARLY column 3)
EARLY_UNDECIDED = 0
EARLY_PEAK = 1  # impact peak at window index j
EARLY_NO_PEAK = 2  # the impact window of the expected stance passed without one

# eparams slots (early decision settings, see _plate_chunk)
(E_ON, E_DELAY, E_DT, E_FRAC, E_MIN_N, E_PROM_N, E_HIGHER, E_MIN_CONTACT, E_MAX_CONTACT) = range(9)
N_EPARAMS = 9

# reason bits of a bad sample (EV_BAD column 4)
BAD_NONFINITE = 1
BAD_RANGE = 2

# istate slots (I_K_FIRST: first sample of the open contact; I_EARLY: 1 while its early decision is
# pending; I_EJ: window index the decision resumes from)
(I_SEEN, I_IN_CONTACT, I_K_ON, I_INIT, I_BF_DIR, I_BF_K, I_BAD_K0, I_BAD_WHY, I_K_FIRST, I_EARLY,
 I_EJ) = range(11)
# fstate slots (F_NZ_*: running mean and M2 of flight samples, Welford; F_STRIKE: strike of the open
# contact; F_EXPECT: contact time of the last accepted contact (s); F_EPRE: max force before I_EJ)
(F_BF_EXT, F_BF_Y, F_BF_LO, F_BF_HI, F_BF_LO_K, F_BF_HI_K, F_BF_LO_Y, F_BF_HI_Y, F_BF_X,
 F_NZ_N, F_NZ_MEAN, F_NZ_M2, F_STRIKE, F_EXPECT, F_EPRE) = range(15)
N_ISTATE = 11
N_FSTATE = 15

# ring_raw columns: raw vertical GRF (N), bad-sample reason bits (0 for a good sample; a bad
# sample's force is NaN)
# ring_filt columns: filtered GRF x, y, z (N), filtered COP x, y (m, NaN below the off threshold)


@numba.njit(cache=True, nogil=True)
def _crossing_time(t0: float, v0: float, t1: float, v1: float, level: float) -> float:
    """Time where the segment (t0, v0)-(t1, v1) crosses ``level`` (linear interpolation)."""
    dv = v1 - v0
    if dv == 0.0:
        return t1
    return t0 + (level - v0) / dv * (t1 - t0)


@numba.njit(cache=True, nogil=True)
def _crossing_or(t0: float, v0: float, t1: float, v1: float, level: float, fallback: float) -> float:
    """:func:`_crossing_time`, or ``fallback`` where a neighbour is a bad (NaN) sample."""
    t = _crossing_time(t0, v0, t1, v1, level)
    return fallback if math.isnan(t) else t


@numba.njit(cache=True, nogil=True)
def _sample_bad(raw, max_f_n, max_m_nm):
    """Reason bits why a plate sample cannot be real (0 when it can): non-finite, out of range."""
    if not math.isfinite(raw[0] + raw[1] + raw[2] + raw[3] + raw[4] + raw[5]):
        # one test for the usual sample; a channel is non-finite, or the sum of huge ones is
        for j in range(6):
            if not math.isfinite(raw[j]):
                return BAD_NONFINITE
        return BAD_RANGE
    if raw[0] * raw[0] + raw[1] * raw[1] + raw[2] * raw[2] > max_f_n * max_f_n:
        return BAD_RANGE
    for j in range(3, 6):
        if abs(raw[j]) > max_m_nm:
            return BAD_RANGE
    return 0


@numba.njit(cache=True, nogil=True)
def _bad_mask(ch, max_f_n, max_m_nm, out):
    """``out[i]`` = :func:`_sample_bad` reason bits of row i of plate channels ``ch`` (n, 6)."""
    for i in range(ch.shape[0]):
        out[i] = _sample_bad(ch[i], max_f_n, max_m_nm)


@numba.njit(cache=True, nogil=True)
def _noise_floor(fstate):
    """Flight-noise floor so far: mean + 2 SD of the flight samples (N), NaN with fewer than 10."""
    n = fstate[F_NZ_N]
    if n < 10.0:
        return np.nan
    return fstate[F_NZ_MEAN] + 2.0 * math.sqrt(fstate[F_NZ_M2] / (n - 1.0))


@numba.njit(cache=True, nogil=True)
def _impact_decision(ring_filt, base, m, j0, pre, t0, dt, strike, expected, frac_max, min_n,
                     prom_n, need_higher):
    """Decide the impact peak of an open contact from its first ``m + 1`` filtered samples.

    Window sample j is ``ring_filt[(base + j) % cap, 2]`` at time ``t0 + j * dt``. Applies the rule
    of :func:`_contact_metrics` (first local maximum >= ``min_n``, ``prom_n`` prominent, before the
    stance maximum when ``need_higher``) with the stance assumed to last ``expected`` seconds, and
    answers only once no later sample can change the answer. Candidates before ``j0`` are already
    rejected for good and ``pre`` is the maximum of the samples before ``j0``. Returns (status,
    j, j0, pre): EARLY_PEAK with the window index of the peak, EARLY_NO_PEAK when the window
    passed without one, or EARLY_UNDECIDED with where to resume.
    """
    cap = ring_filt.shape[0]
    for j in range(max(j0, 1), m):
        f_prev = ring_filt[(base + j - 1) % cap, 2]
        if f_prev > pre:
            pre = f_prev
        if (t0 + j * dt - strike) / expected > frac_max:
            return EARLY_NO_PEAK, -1, j, pre
        f = ring_filt[(base + j) % cap, 2]
        if not (f > f_prev and f >= ring_filt[(base + j + 1) % cap, 2] and f >= min_n):
            continue
        valley = f
        k = j + 1
        v = f
        while k <= m:
            v = ring_filt[(base + k) % cap, 2]
            if v > f:
                break
            if v < valley:
                valley = v
            k += 1
        if k > m:
            # the force has not climbed above the candidate yet
            if not need_higher and f - valley >= prom_n:
                return EARLY_PEAK, j, j, pre
            return EARLY_UNDECIDED, -1, j, pre
        if f - valley < prom_n:
            continue  # not prominent: rejected for good
        if not need_higher:
            return EARLY_PEAK, j, j, pre
        # the stance maximum must come later: something after j above everything up to j
        post = v
        for q in range(k + 1, m + 1):
            if ring_filt[(base + q) % cap, 2] > post:
                post = ring_filt[(base + q) % cap, 2]
        if post > max(pre, f):
            return EARLY_PEAK, j, j, pre
        return EARLY_UNDECIDED, -1, j, pre
    return EARLY_UNDECIDED, -1, max(j0, m), pre


@numba.njit(cache=True, nogil=True)
def _plate_chunk(ts, ch, rot, centre, origin, sos, zi, zi_unit, filt_on, istate, fstate,
                 ring_t, ring_raw, ring_filt, on_n, off_n, strike_n, toe_n, max_f_n, max_m_nm,
                 lookback, bf_on, bf_h, eparams, events):
    """Run a chunk of plate samples through filter, geometry, hysteresis and the COP butterfly.

    Contacts are detected by hysteresis (on at ``on_n``, off below ``off_n``); strike and toe-off
    are the crossings of ``strike_n`` (<= on_n; the last rise through it before the detection) and
    ``toe_n`` (off_n..on_n; the first fall through it after the detection), interpolated between
    samples. A sample with a non-finite channel, a force beyond ``max_f_n`` or a moment beyond
    ``max_m_nm`` is bad: its force and COP are NaN, it changes no contact state, and the filter
    restarts from the steady state of the next good sample. Writes samples into the rings
    (index = global sample number % capacity) and events into ``events``; returns their number.

    With ``eparams[E_ON]``, the impact window of each contact is decided as its filtered samples
    come in (:func:`_impact_decision`, the stance assumed as long as the last accepted contact of
    this plate; none before the first): EV_EARLY. Returns -1 - i, touching no state, when
    timestamp i is not finite.
    """
    for i in range(ts.shape[0]):
        if not math.isfinite(ts[i]):
            return -1 - i
    cap = ring_t.shape[0]
    early_on = eparams[E_ON] != 0.0
    d = int(eparams[E_DELAY])
    nsec = sos.shape[0]
    n_ev = 0
    c = origin[2]
    raw = np.empty(6)
    filt = np.empty(6)
    pos = (istate[I_SEEN] - 1) % cap  # advanced per sample: no division in the loop
    for i in range(ts.shape[0]):
        k = istate[I_SEEN]
        pos += 1
        if pos == cap:
            pos = 0
        for j in range(6):
            raw[j] = ch[i, j]
        ring_t[pos] = ts[i]
        why = _sample_bad(raw, max_f_n, max_m_nm)
        if why:
            if istate[I_BAD_WHY] == 0:
                istate[I_BAD_K0] = k
            istate[I_BAD_WHY] |= why
            istate[I_INIT] = 0  # restart the filter after the bad run
            ring_raw[pos, 0] = np.nan
            ring_raw[pos, 1] = why
            for j in range(5):
                ring_filt[pos, j] = np.nan
            istate[I_SEEN] = k + 1
            continue
        if istate[I_BAD_WHY]:
            events[n_ev, 0] = EV_BAD
            events[n_ev, 1] = k - 1
            events[n_ev, 2] = ring_t[(k - 1) % cap]
            events[n_ev, 3] = istate[I_BAD_K0]
            events[n_ev, 4] = istate[I_BAD_WHY]
            events[n_ev, 5] = 0.0
            n_ev += 1
            istate[I_BAD_WHY] = 0
        # ---- causal low-pass: biquad cascade, direct form II transposed, state kept across chunks
        if filt_on:
            if istate[I_INIT] == 0:
                # start from the steady state of the first sample so there is no start-up transient
                for j in range(6):
                    for s in range(nsec):
                        zi[s, j, 0] = zi_unit[s, 0] * raw[j]
                        zi[s, j, 1] = zi_unit[s, 1] * raw[j]
                istate[I_INIT] = 1
            for j in range(6):
                x = raw[j]
                for s in range(nsec):
                    y = sos[s, 0] * x + zi[s, j, 0]
                    zi[s, j, 0] = sos[s, 1] * x - sos[s, 4] * y + zi[s, j, 1]
                    zi[s, j, 1] = sos[s, 2] * x - sos[s, 5] * y
                    x = y
                filt[j] = x
        else:
            for j in range(6):
                filt[j] = raw[j]
        # ---- geometry (see geometry.plate_to_lab): the raw vertical force for the hysteresis; the
        # filtered force and COP for the metrics
        ring_raw[pos, 0] = -(rot[2, 0] * raw[0] + rot[2, 1] * raw[1] + rot[2, 2] * raw[2])
        ring_raw[pos, 1] = 0.0
        gx = -(rot[0, 0] * filt[0] + rot[0, 1] * filt[1] + rot[0, 2] * filt[2])
        gy = -(rot[1, 0] * filt[0] + rot[1, 1] * filt[1] + rot[1, 2] * filt[2])
        gz = -(rot[2, 0] * filt[0] + rot[2, 1] * filt[1] + rot[2, 2] * filt[2])
        ring_filt[pos, 0] = gx
        ring_filt[pos, 1] = gy
        ring_filt[pos, 2] = gz
        if gz >= off_n:
            px = (c * filt[0] - filt[4]) / filt[2] - origin[0]
            py = (filt[3] + c * filt[1]) / filt[2] - origin[1]
            ring_filt[pos, 3] = centre[0] + px * rot[0, 0] + py * rot[0, 1]
            ring_filt[pos, 4] = centre[1] + px * rot[1, 0] + py * rot[1, 1]
        else:
            ring_filt[pos, 3] = np.nan
            ring_filt[pos, 4] = np.nan
        v = ring_raw[pos, 0]
        # ---- contact hysteresis on the raw vertical force
        if istate[I_IN_CONTACT] == 0:
            if v < off_n:
                # flight sample: running mean and variance of the flight-noise floor (Welford)
                fstate[F_NZ_N] += 1.0
                dlt = v - fstate[F_NZ_MEAN]
                fstate[F_NZ_MEAN] += dlt / fstate[F_NZ_N]
                fstate[F_NZ_M2] += dlt * (v - fstate[F_NZ_MEAN])
            if v >= on_n:
                istate[I_IN_CONTACT] = 1
                istate[I_K_ON] = k
                strike = ts[i]
                k_first = k
                unknown = 1.0  # the data started inside this contact: no strike to time
                if k > 0:
                    # back to the last sample below the strike threshold
                    j = k - 1
                    stop = max(k - lookback, 0)
                    while j >= stop and ring_raw[j % cap, 0] >= strike_n:
                        j -= 1
                    if j >= stop:
                        unknown = 0.0
                        k_first = j + 1
                        t1 = ring_t[(j + 1) % cap]
                        strike = _crossing_or(ring_t[j % cap], ring_raw[j % cap, 0], t1,
                                              ring_raw[(j + 1) % cap, 0], strike_n, t1)
                    elif stop > 0:
                        # no sample below the strike threshold within the lookback: time it at
                        # the detection crossing
                        unknown = 0.0
                        tp = ring_t[(k - 1) % cap]
                        strike = _crossing_or(tp, ring_raw[(k - 1) % cap, 0], ts[i], v, on_n, ts[i])
                events[n_ev, 0] = EV_START
                events[n_ev, 1] = k
                events[n_ev, 2] = strike
                events[n_ev, 3] = k_first
                events[n_ev, 4] = unknown
                events[n_ev, 5] = _noise_floor(fstate)
                n_ev += 1
                istate[I_K_FIRST] = k_first
                fstate[F_STRIKE] = np.nan if unknown else strike
                istate[I_EARLY] = 0
                if early_on and not unknown and not math.isnan(fstate[F_EXPECT]):
                    istate[I_EARLY] = 1
                    istate[I_EJ] = 1
                    fstate[F_EPRE] = -np.inf
        elif v < off_n:
            istate[I_IN_CONTACT] = 0
            # the first fall through the toe-off threshold after the detection of the contact
            j = max(istate[I_K_ON], k - cap + 1)
            while j < k - 1 and not ring_raw[(j + 1) % cap, 0] < toe_n:
                j += 1
            tj = ring_t[j % cap]
            toe = _crossing_or(tj, ring_raw[j % cap, 0], ring_t[(j + 1) % cap],
                               ring_raw[(j + 1) % cap, 0], toe_n, tj)
            events[n_ev, 0] = EV_END
            events[n_ev, 1] = k
            events[n_ev, 2] = toe
            events[n_ev, 3] = j
            events[n_ev, 4] = 0.0
            events[n_ev, 5] = 0.0
            n_ev += 1
            istate[I_EARLY] = 0
            dur = toe - fstate[F_STRIKE]
            if eparams[E_MIN_CONTACT] <= dur <= eparams[E_MAX_CONTACT]:
                fstate[F_EXPECT] = dur
        # ---- early decision of the open contact's impact window (filtered, delay-compensated)
        if istate[I_EARLY] == 1:
            base = istate[I_K_FIRST] + d
            m = k - base
            if m >= 2:
                st, jp, j0, pre = _impact_decision(
                    ring_filt, base, m, istate[I_EJ], fstate[F_EPRE],
                    ring_t[istate[I_K_FIRST] % cap], eparams[E_DT], fstate[F_STRIKE],
                    fstate[F_EXPECT], eparams[E_FRAC], eparams[E_MIN_N], eparams[E_PROM_N],
                    eparams[E_HIGHER] != 0.0)
                istate[I_EJ] = j0
                fstate[F_EPRE] = pre
                if st != EARLY_UNDECIDED:
                    events[n_ev, 0] = EV_EARLY
                    events[n_ev, 1] = k
                    events[n_ev, 2] = ts[i]
                    events[n_ev, 3] = st
                    events[n_ev, 4] = jp
                    events[n_ev, 5] = fstate[F_EXPECT]
                    n_ev += 1
                    istate[I_EARLY] = 0
        # ---- COP butterfly (Roerdink et al. 2008): zig-zag extrema of the filtered AP COP
        if bf_on:
            x = ring_filt[pos, 3]
            y = ring_filt[pos, 4]
            if not math.isnan(x):
                d = istate[I_BF_DIR]
                if d == 0:
                    if math.isnan(fstate[F_BF_LO]) or x < fstate[F_BF_LO]:
                        fstate[F_BF_LO] = x
                        fstate[F_BF_LO_K] = k
                        fstate[F_BF_LO_Y] = y
                    if math.isnan(fstate[F_BF_HI]) or x > fstate[F_BF_HI]:
                        fstate[F_BF_HI] = x
                        fstate[F_BF_HI_K] = k
                        fstate[F_BF_HI_Y] = y
                    # the first extremum may be cut by the start of the data: only set the direction
                    if x >= fstate[F_BF_LO] + bf_h:
                        istate[I_BF_DIR] = 1
                        fstate[F_BF_EXT] = x
                        istate[I_BF_K] = k
                        fstate[F_BF_Y] = y
                    elif x <= fstate[F_BF_HI] - bf_h:
                        istate[I_BF_DIR] = -1
                        fstate[F_BF_EXT] = x
                        istate[I_BF_K] = k
                        fstate[F_BF_Y] = y
                elif d < 0:
                    if x < fstate[F_BF_EXT]:
                        fstate[F_BF_EXT] = x
                        istate[I_BF_K] = k
                        fstate[F_BF_Y] = y
                    elif x >= fstate[F_BF_EXT] + bf_h:
                        events[n_ev, 0] = EV_MIN
                        events[n_ev, 1] = istate[I_BF_K]
                        events[n_ev, 2] = 0.0
                        events[n_ev, 3] = fstate[F_BF_EXT]
                        events[n_ev, 4] = fstate[F_BF_Y]
                        events[n_ev, 5] = k
                        n_ev += 1
                        istate[I_BF_DIR] = 1
                        fstate[F_BF_EXT] = x
                        istate[I_BF_K] = k
                        fstate[F_BF_Y] = y
                else:
                    if x > fstate[F_BF_EXT]:
                        fstate[F_BF_EXT] = x
                        istate[I_BF_K] = k
                        fstate[F_BF_Y] = y
                    elif x <= fstate[F_BF_EXT] - bf_h:
                        events[n_ev, 0] = EV_MAX
                        events[n_ev, 1] = istate[I_BF_K]
                        events[n_ev, 2] = 0.0
                        events[n_ev, 3] = fstate[F_BF_EXT]
                        events[n_ev, 4] = fstate[F_BF_Y]
                        events[n_ev, 5] = k
                        n_ev += 1
                        istate[I_BF_DIR] = -1
                        fstate[F_BF_EXT] = x
                        istate[I_BF_K] = k
                        fstate[F_BF_Y] = y
        istate[I_SEEN] = k + 1
    return n_ev


# Output slots of _contact_metrics (forces in N, rates in N/s, impulses in N*s, lengths in m)
(M_PEAK, M_IMPACT, M_IMPACT_T, M_VALR, M_VILR, M_METHOD, M_BRAKE, M_PROP, M_PATH, M_COP_X, M_COP_Y,
 M_SI, M_COP_BINS) = range(13)
N_METRICS = 13


@numba.njit(cache=True, nogil=True)
def _level_crossing(f, t0, dt, level, j_max):
    """First index j <= j_max with f[j] >= level and its interpolated crossing time (-1 if none)."""
    for j in range(j_max + 1):
        if f[j] >= level:
            if j == 0:
                return 0, t0
            return j, _crossing_time(t0 + (j - 1) * dt, f[j - 1], t0 + j * dt, f[j], level)
    return -1, np.nan


@numba.njit(cache=True, nogil=True)
def _contact_metrics(fz, fx, copx, copy, rate_hz, t0, strike_s, toe_off_s, impact_frac,
                     impact_min_n, impact_prom_n, need_higher_peak, cop_min_n, cop_bin_n,
                     belt_speed, foot_length, toe_frac, out):
    """Per-contact metrics from the stance window (sample j at time t0 + j / rate_hz).

    Impact peak: the first local maximum within ``impact_frac`` of stance that is at least
    ``impact_min_n`` high and ``impact_prom_n`` prominent (the drop before the force climbs above
    it again); when running (``need_higher_peak``) it must come before the stance maximum.
    Loading rates follow Milner et al. 2006 (VALR through 20 % and 80 % of the impact peak, VILR
    the steepest sample-to-sample slope between them) with the 13 %-of-stance point of Blackmore
    et al. 2016 when there is no impact peak.

    COP measures use only samples with ``fz >= cop_min_n``, in bins of ``cop_bin_n`` of them (the
    last bin takes the remainder); each bin's point is the COP of its summed load (force-weighted
    mean). With ``belt_speed`` (m/s, NaN if unknown) the points are carried with the belt back to
    the strike time (belt coordinates along the direction of travel, inferred: the belt moves the
    foot backwards, so the COP moves backwards in the lab unless the belt travel during the
    contact is shorter than the COP's own movement). Path = length of the polyline through the
    points; strike COP = the first point; strike index = first point's distance from the heel in
    % of ``foot_length`` (NaN if unknown), the heel lying ``toe_frac`` foot lengths behind the
    most anterior point (the COP leaves the foot under the toes).
    """
    n = fz.shape[0]
    dt = 1.0 / rate_hz
    for s in range(N_METRICS):
        out[s] = np.nan
    if n < 3:
        return
    imax = 0
    for j in range(n):
        if fz[j] > fz[imax]:
            imax = j
    out[M_PEAK] = fz[imax]
    contact = toe_off_s - strike_s
    # ---- impact peak: first local maximum early in stance, high and prominent enough
    ref_j = -1
    for j in range(1, n - 1):
        frac = (t0 + j * dt - strike_s) / contact
        if frac > impact_frac:
            break
        if fz[j] > fz[j - 1] and fz[j] >= fz[j + 1] and fz[j] >= impact_min_n:
            if need_higher_peak and j >= imax:
                continue
            valley = fz[j]
            k = j + 1
            while k < n and fz[k] <= fz[j]:
                if fz[k] < valley:
                    valley = fz[k]
                k += 1
            if fz[j] - valley >= impact_prom_n:
                ref_j = j
                break
    if ref_j >= 0:
        f_ref = fz[ref_j]
        t_ref = t0 + ref_j * dt
        j_ref = ref_j
        out[M_IMPACT] = f_ref
        out[M_IMPACT_T] = t_ref
        out[M_METHOD] = 0.0
    else:
        t_ref = strike_s + 0.13 * contact
        x = (t_ref - t0) / dt
        j0 = math.floor(x)
        if j0 < 0:
            j0 = 0
        if j0 > n - 2:
            j0 = n - 2
        w = x - j0
        f_ref = fz[j0] * (1.0 - w) + fz[j0 + 1] * w
        j_ref = j0 + 1
        out[M_METHOD] = 1.0
    if f_ref > 0.0:
        i20, t20 = _level_crossing(fz, t0, dt, 0.2 * f_ref, j_ref)
        i80, t80 = _level_crossing(fz, t0, dt, 0.8 * f_ref, j_ref)
        if i20 >= 0 and i80 >= 0:
            if t80 > t20:
                out[M_VALR] = 0.6 * f_ref / (t80 - t20)
            k0 = i20 - 1 if i20 > 0 else 0
            k1 = i80 - 1 if i80 > k0 else k0
            best = -np.inf
            for k in range(k0, k1 + 1):
                if k + 1 < n:
                    slope = (fz[k + 1] - fz[k]) * rate_hz
                    if slope > best:
                        best = slope
            if best > -np.inf:
                out[M_VILR] = best
    # ---- antero-posterior impulses (rectangle rule)
    brake = 0.0
    prop = 0.0
    for j in range(n):
        if fx[j] < 0.0:
            brake += fx[j] * dt
        else:
            prop += fx[j] * dt
    out[M_BRAKE] = brake
    out[M_PROP] = prop
    # ---- COP: bins of loaded samples, each the COP of its summed load
    m = 0
    for j in range(n):
        if fz[j] >= cop_min_n and not (math.isnan(copx[j]) or math.isnan(copy[j])):
            m += 1
    if m == 0:
        return
    nb = max(m // cop_bin_n, 1)
    bw = np.zeros(nb)
    bx = np.zeros(nb)
    by = np.zeros(nb)
    bt = np.zeros(nb)
    q = 0
    for j in range(n):
        if fz[j] >= cop_min_n and not (math.isnan(copx[j]) or math.isnan(copy[j])):
            b = min(q // cop_bin_n, nb - 1)
            bw[b] += fz[j]
            bx[b] += fz[j] * copx[j]
            by[b] += fz[j] * copy[j]
            bt[b] += fz[j] * (t0 + j * dt - strike_s)
            q += 1
    for b in range(nb):
        bx[b] /= bw[b]
        by[b] /= bw[b]
        bt[b] /= bw[b]
    out[M_COP_BINS] = nb
    out[M_COP_X] = bx[0]
    out[M_COP_Y] = by[0]
    if math.isnan(belt_speed):
        return
    # direction of travel along x: the belt carries the foot backwards by belt_speed * time
    shift = bx[nb - 1] - bx[0]
    travel = belt_speed * (bt[nb - 1] - bt[0])
    d = 1.0 if shift >= 0.0 else -1.0
    if travel >= abs(shift):
        d = -d
    # belt coordinates along d, at the strike time
    u_max = -np.inf
    path = 0.0
    for b in range(nb):
        u = d * bx[b] + belt_speed * bt[b]
        if b > 0:
            u_prev = d * bx[b - 1] + belt_speed * bt[b - 1]
            path += math.sqrt((u - u_prev) ** 2 + (by[b] - by[b - 1]) ** 2)
        if u > u_max:
            u_max = u
    u0 = d * bx[0] + belt_speed * bt[0]
    out[M_PATH] = path
    out[M_COP_X] = d * u0
    if not math.isnan(foot_length):
        out[M_SI] = 100.0 * (u0 - (u_max - toe_frac * foot_length)) / foot_length


@numba.njit(cache=True, nogil=True)
def _ring_window(ring, k0, k1, out):
    """Copy global sample indices k0..k1 inclusive out of a ring (rows = index % capacity)."""
    cap = ring.shape[0]
    for k in range(k0, k1 + 1):
        out[k - k0] = ring[k % cap]


@numba.njit(cache=True, nogil=True)
def _ring_max_between(ring_t, ring_v, n_seen, t_lo, t_hi):
    """Max of ring_v over samples with t_lo <= t <= t_hi among the last min(n_seen, cap) samples.

    Walks back from the newest sample and stops 1 s of timestamps before ``t_lo`` (timestamps
    rise; the margin covers any jitter), so the cost is the window's, not the ring's.
    """
    cap = ring_t.shape[0]
    m = n_seen if n_seen < cap else cap
    best = np.nan
    r = (n_seen - 1) % cap if n_seen > 0 else 0
    for _ in range(m):
        t = ring_t[r]
        if t < t_lo - 1.0:
            break
        if t >= t_lo and t <= t_hi:
            v = ring_v[r]
            if math.isnan(best) or v > best:
                best = v
        r = r - 1 if r > 0 else cap - 1
    return best


@numba.njit(cache=True, nogil=True)
def _ring_append(ring_t, ring_v, n_seen, ts, vals):
    """Append samples to a (time, value) ring; returns the new sample count."""
    cap = ring_t.shape[0]
    for i in range(ts.shape[0]):
        ring_t[(n_seen + i) % cap] = ts[i]
        ring_v[(n_seen + i) % cap] = vals[i]
    return n_seen + ts.shape[0]


@numba.njit(cache=True, nogil=True)
def _fit_edge(v, tau, hi_n, power):
    """Onset time of a rising force edge: least-squares fit of v = A (tau - tau0)^power.

    ``v`` starts at the first sample at or above the off threshold; the fit uses samples up to
    the first one at or above ``hi_n``. Fitting many samples averages the plate noise that makes a
    two-threshold extrapolation jitter; the power describes the convex start of a contact.
    Returns tau0, or NaN when fewer than two samples rise.
    """
    n = v.shape[0]
    m = 0
    sx = 0.0
    sy = 0.0
    sxx = 0.0
    sxy = 0.0
    inv = 1.0 / power
    for j in range(n):
        g = v[j] ** inv if v[j] > 0.0 else 0.0
        sx += tau[j]
        sy += g
        sxx += tau[j] * tau[j]
        sxy += tau[j] * g
        m += 1
        if v[j] >= hi_n:
            break
    if m < 2:
        return np.nan
    den = m * sxx - sx * sx
    if den <= 0.0:
        return np.nan
    a = (m * sxy - sx * sy) / den
    b = (sy - a * sx) / m
    if a <= 0.0:
        return np.nan
    return -b / a


@numba.njit(cache=True, nogil=True)
def _bad_between(ring_raw, k0, k1):
    """True when a sample with global index k0..k1 (inclusive) was flagged bad."""
    cap = ring_raw.shape[0]
    r = k0 % cap  # walk the ring without a division per sample
    for _ in range(k1 - k0 + 1):
        if ring_raw[r, 1] != 0.0:
            return True
        r += 1
        if r == cap:
            r = 0
    return False


@numba.njit(cache=True, nogil=True)
def _window_metrics(ring_t, ring_raw, ring_filt, scratch, k_first, n, d, bad_lo, bad_hi, rate_hz,
                    strike_s, toe_off_s, impact_frac, impact_min_n, impact_prom_n,
                    need_higher_peak, cop_min_n, cop_bin_n, belt_speed, foot_length, toe_frac, out):
    """:func:`_contact_metrics` of the ``n`` samples from ``k_first``, straight from the rings.

    The filtered samples are those ``d`` (the filter delay) later in the ring, so times are not
    delayed; ``scratch`` (4, >= n) holds the copied window. Returns True when a sample with index
    ``bad_lo..bad_hi`` was flagged bad (:func:`_bad_between`); the metrics are computed anyway.
    """
    cap = ring_t.shape[0]
    r = (k_first + d) % cap  # walk the ring without a division per sample
    for j in range(n):
        scratch[0, j] = ring_filt[r, 2]
        scratch[1, j] = ring_filt[r, 0]
        scratch[2, j] = ring_filt[r, 3]
        scratch[3, j] = ring_filt[r, 4]
        r += 1
        if r == cap:
            r = 0
    _contact_metrics(scratch[0, :n], scratch[1, :n], scratch[2, :n], scratch[3, :n], rate_hz,
                     ring_t[k_first % cap], strike_s, toe_off_s, impact_frac, impact_min_n,
                     impact_prom_n, need_higher_peak, cop_min_n, cop_bin_n, belt_speed,
                     foot_length, toe_frac, out)
    return _bad_between(ring_raw, bad_lo, bad_hi)


# Columns of the step record that _finalize_row writes (indices into ``cols``, which the
# processor fills with the positions of these fields in labsuite.steps.STEP_FIELDS)
(R_FOOT, R_STRIKE, R_TOE, R_CONTACT, R_STEP, R_STRIDE, R_CADENCE, R_PEAK, R_IMPACT, R_IMPACT_T,
 R_VALR, R_VILR, R_METHOD, R_BRAKE, R_PROP, R_COP_X, R_COP_Y, R_PATH, R_TIBIAL, R_LENGTH,
 R_CROSSOVER, R_SI_CONTACT, R_SI_STEP, R_SI_PEAK, R_SI_VALR, R_SI_VILR, R_SI_TIBIAL, R_SI,
 R_PATTERN, R_INVALID, R_KIND, R_ID, R_DECIDED) = range(33)
N_R = 33
# symmetry: the value column of each index, in the order of R_SI_CONTACT..R_SI_TIBIAL
_SYM_OF = (R_CONTACT, R_STEP, R_PEAK, R_VALR, R_VILR, R_TIBIAL)
N_SYM = 6


def finalize_state_size(cadence_n: int, symmetry_n: int) -> int:
    """Length of the state array of :func:`_finalize_row` (see there)."""
    return 4 + cadence_n + 2 * N_SYM * (2 + symmetry_n)


@numba.njit(cache=True, nogil=True)
def _ring_sum(fin, at, cap):
    """Sum of the ring at fin[at] (count, next position, cap values), oldest value first."""
    n = int(fin[at])
    pos = int(fin[at + 1])
    total = 0.0
    for q in range(n):
        total += fin[at + 2 + (pos - n + q) % cap]
    return total, n


@numba.njit(cache=True, nogil=True)
def _ring_push(fin, at, cap, v):
    n = int(fin[at])
    pos = int(fin[at + 1])
    fin[at + 2 + pos] = v
    fin[at + 1] = (pos + 1) % cap
    if n < cap:
        fin[at] = n + 1


@numba.njit(cache=True, nogil=True)
def _finalize_row(row, cols, fin, cadence_n, symmetry_n, foot, strike_s, toe_off_s, crossover,
                  invalid, cop_x, cop_y, metrics, bw_n, tibial_g, belt_speed, max_step_s,
                  si_cut_lo, si_cut_hi, step_id, decided_s):
    """Write the full step record of one contact into ``row`` and update the running state.

    ``fin`` holds what the steps before left behind: the last strike of each foot (NaN none),
    the ring of the last ``cadence_n`` step times (count, next position, values) and, per foot
    and symmetry field, the ring of its last ``symmetry_n`` values. Metrics come in N, N/s, N*s
    (``metrics``, _contact_metrics slots) and go out in body weights. A cross-over, an invalid
    contact or one without a foot gets times, flags and strike COP only (an invalid one still
    sets its foot's last strike, so the next steps keep their step times).
    """
    for q in range(row.shape[0]):
        row[q] = np.nan
    row[cols[R_FOOT]] = foot if foot >= 0 else np.nan
    row[cols[R_STRIKE]] = strike_s
    row[cols[R_TOE]] = toe_off_s
    row[cols[R_CONTACT]] = toe_off_s - strike_s
    row[cols[R_CROSSOVER]] = 1.0 if crossover else 0.0
    row[cols[R_INVALID]] = 1.0 if invalid else 0.0
    row[cols[R_COP_X]] = cop_x
    row[cols[R_COP_Y]] = cop_y
    row[cols[R_KIND]] = 0.0
    row[cols[R_ID]] = step_id
    row[cols[R_DECIDED]] = decided_s
    if crossover or foot < 0 or invalid:
        if invalid and not crossover and foot >= 0:
            fin[foot] = strike_s
        return
    row[cols[R_PEAK]] = metrics[M_PEAK] / bw_n
    row[cols[R_IMPACT]] = metrics[M_IMPACT] / bw_n
    row[cols[R_IMPACT_T]] = metrics[M_IMPACT_T]
    row[cols[R_VALR]] = metrics[M_VALR] / bw_n
    row[cols[R_VILR]] = metrics[M_VILR] / bw_n
    row[cols[R_METHOD]] = metrics[M_METHOD]
    row[cols[R_BRAKE]] = metrics[M_BRAKE] / bw_n
    row[cols[R_PROP]] = metrics[M_PROP] / bw_n
    row[cols[R_PATH]] = metrics[M_PATH]
    si = metrics[M_SI]
    row[cols[R_SI]] = si
    if not math.isnan(si):
        row[cols[R_PATTERN]] = 0.0 if si < si_cut_lo else (1.0 if si < si_cut_hi else 2.0)
    row[cols[R_TIBIAL]] = tibial_g
    steps_at = 2
    prev_other = fin[1 - foot]
    step_s = np.nan
    if not math.isnan(prev_other) and 0.0 < strike_s - prev_other <= max_step_s:
        step_s = strike_s - prev_other
        row[cols[R_STEP]] = step_s
        _ring_push(fin, steps_at, cadence_n, step_s)
    prev_same = fin[foot]
    if not math.isnan(prev_same) and 0.0 < strike_s - prev_same <= 2.0 * max_step_s:
        row[cols[R_STRIDE]] = strike_s - prev_same
    fin[foot] = strike_s
    total, n = _ring_sum(fin, steps_at, cadence_n)
    if n > 0:
        row[cols[R_CADENCE]] = 60.0 * n / total
    if not math.isnan(belt_speed) and math.isfinite(step_s):
        row[cols[R_LENGTH]] = belt_speed * step_s
    sym_at = steps_at + 2 + cadence_n
    width = 2 + symmetry_n
    for q in range(N_SYM):
        v = row[cols[_SYM_OF[q]]]
        if math.isfinite(v):
            _ring_push(fin, sym_at + (foot * N_SYM + q) * width, symmetry_n, v)
    for q in range(N_SYM):
        ls, ln = _ring_sum(fin, sym_at + q * width, symmetry_n)
        rs, rn = _ring_sum(fin, sym_at + (N_SYM + q) * width, symmetry_n)
        if ln > 0 and rn > 0:
            lm = ls / ln
            rm = rs / rn
            if lm + rm != 0:
                row[cols[R_SI_CONTACT + q]] = 100.0 * (lm - rm) / (0.5 * (lm + rm))


@numba.njit(cache=True, nogil=True)
def _fused_floor(ch, rot, sos, zi, zi_unit, on_n, off_n, ring, state):
    """The floor of any step pipeline, for benchmarks: the least work every sample needs.

    Filters all six plate channels (the biquad cascade of :func:`_plate_chunk`, started from the
    first sample's steady state), writes the filtered vertical force into ``ring`` and runs the
    contact hysteresis on the raw vertical force. ``state`` = [samples seen, in contact,
    contacts]; returns the contacts started in this chunk.
    """
    cap = ring.shape[0]
    nsec = sos.shape[0]
    started = 0
    raw = np.empty(6)
    filt = np.empty(6)
    for i in range(ch.shape[0]):
        for j in range(6):
            raw[j] = ch[i, j]
        if state[0] == 0:
            for j in range(6):
                for s in range(nsec):
                    zi[s, j, 0] = zi_unit[s, 0] * raw[j]
                    zi[s, j, 1] = zi_unit[s, 1] * raw[j]
        for j in range(6):
            x = raw[j]
            for s in range(nsec):
                y = sos[s, 0] * x + zi[s, j, 0]
                zi[s, j, 0] = sos[s, 1] * x - sos[s, 4] * y + zi[s, j, 1]
                zi[s, j, 1] = sos[s, 2] * x - sos[s, 5] * y
                x = y
            filt[j] = x
        ring[state[0] % cap] = -(rot[2, 0] * filt[0] + rot[2, 1] * filt[1] + rot[2, 2] * filt[2])
        v = -(rot[2, 0] * raw[0] + rot[2, 1] * raw[1] + rot[2, 2] * raw[2])
        if state[1] == 0:
            if v >= on_n:
                state[1] = 1
                state[2] += 1
                started += 1
        elif v < off_n:
            state[1] = 0
        state[0] += 1
    return started
