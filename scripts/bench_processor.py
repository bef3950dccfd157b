"""Benchmark the step processor (labsuite.realtime) against a straightforward scipy/numpy version.

Usage: python scripts/bench_processor.py [--hours 1.0] [--rate-hz 2000] [--seed 0]

1. Offline throughput: ``--hours`` of two-belt plate data (simulated runner, tiled from a one-minute
   render) through the numba pipeline (process_arrays) and through a scipy/numpy version of the same
   metrics (sosfilt, vectorised threshold crossings, per-step numpy); prints both times, the ratio
   and how closely the two agree.
2. Live path: per-chunk cost of StepProcessor.feed_plate for chunks of 1 to 20 samples (p50, p99).
3. Cold start with numba's cache warm: a fresh interpreter importing the processor, building it
   and processing its first chunk.
LSL is not involved; run on an otherwise quiet machine for stable numbers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
from scipy import signal

from labsuite.drivers.sim.gait import ParticipantSettings, simulate_offline
from labsuite.realtime.geometry import lab_to_plate, plate_axes, plate_centre
from labsuite.realtime.processor import (
    PlateGeometry,
    ProcessorSettings,
    StepProcessor,
    design_lowpass,
    process_arrays,
)


def make_data(hours: float, rate_hz: float, seed: int):
    """Two belts of plate channels (float32, as the streams carry them) and their geometry."""
    ps = ParticipantSettings(mode="run", strike="rearfoot", seed=seed)
    seg_s = 60.0
    rec = simulate_offline(ps, seg_s, plate_rate_hz=rate_hz, imu_rate_hz=100.0)
    geoms, segs = [], {}
    for belt, y0 in (("left", 0.0), ("right", -0.25)):
        corners = np.array([[1.6, y0 + 0.25, 0.0], [1.6, y0, 0.0], [0.0, y0, 0.0],
                            [0.0, y0 + 0.25, 0.0]])
        geoms.append(PlateGeometry.from_arrays(belt, corners, (0.0, 0.0, 0.04)))
        grf = rec.grf_n[belt]
        shift = np.array([0.8, 0.125 if belt == "left" else -0.125])
        cop = np.where(grf[:, 2:3] > 1.0, rec.cop_m[belt], np.nan) + shift
        segs[belt] = lab_to_plate(grf, cop, rec.tz_nm[belt], corners, (0.0, 0.0, 0.04)).astype(
            np.float32)
    reps = max(1, round(hours * 3600.0 / seg_s))
    n = reps * len(rec.t_plate_s)
    t = np.arange(n) / rate_hz
    plates = {b: (t, np.tile(seg, (reps, 1))) for b, seg in segs.items()}
    return ps, tuple(geoms), plates


def baseline(settings: ProcessorSettings, plates) -> dict[str, np.ndarray]:
    """The same metrics the straightforward way: whole-array scipy/numpy, then a loop per step."""
    sos, delay = design_lowpass(settings)
    d = round(delay)
    rate = settings.rate_hz
    bw = settings.body_mass_kg * 9.80665
    on, off = settings.contact_on_n, settings.contact_off_n
    out: dict[str, list[float]] = {k: [] for k in ("strike_s", "peak", "valr", "vilr", "brake",
                                                   "prop", "path")}
    for geom in settings.plates:
        t, ch32 = plates[geom.belt]
        ch = ch32.astype(np.float64)
        rot = plate_axes(np.asarray(geom.corners_m))
        centre = plate_centre(np.asarray(geom.corners_m))
        zi = signal.sosfilt_zi(sos)[:, :, None] * ch[0][None, None, :]
        filt, _ = signal.sosfilt(sos, ch, axis=0, zi=zi)
        vz = -(ch[:, :3] @ rot.T)[:, 2]
        gf = -(filt[:, :3] @ rot.T)
        c = geom.origin_m[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            px = (c * filt[:, 0] - filt[:, 4]) / filt[:, 2] - geom.origin_m[0]
            py = (filt[:, 3] + c * filt[:, 1]) / filt[:, 2] - geom.origin_m[1]
        copx = centre[0] + px * rot[0, 0] + py * rot[0, 1]
        copy = centre[1] + px * rot[1, 0] + py * rot[1, 1]
        below = gf[:, 2] < off
        copx[below] = np.nan
        copy[below] = np.nan
        # vectorised threshold crossings: up through on, then the first fall below off
        ups = np.flatnonzero((vz[1:] >= on) & (vz[:-1] < on)) + 1
        downs = np.flatnonzero((vz[1:] < off) & (vz[:-1] >= off)) + 1
        ends = downs[np.minimum(np.searchsorted(downs, ups), len(downs) - 1)]
        keep = (ends > ups) & np.concatenate([[True], ups[1:] >= ends[:-1]])
        for k_on, k_end in zip(ups[keep], ends[keep], strict=True):
            # threshold events: the interpolated crossings of the strike and toe-off thresholds
            strike = np.interp(settings.strike_threshold_n, vz[k_on - 1:k_on + 1], t[k_on - 1:k_on + 1])
            toe = np.interp(settings.toe_off_threshold_n, vz[k_end - 1:k_end + 1][::-1],
                            t[k_end - 1:k_end + 1][::-1])
            k0 = k_on - 1
            if not settings.min_contact_s <= toe - strike <= settings.max_contact_s:
                continue
            f = gf[k0 + 1 + d:k_end + d, 2]  # samples k_on .. k_end - 1, shifted by the delay
            fx = gf[k0 + 1 + d:k_end + d, 0]
            if len(f) < 3:
                continue
            tt = t[k0 + 1] + np.arange(len(f)) / rate
            frac = (tt - strike) / (toe - strike)
            imax = int(np.argmax(f))
            peaks = np.flatnonzero((f[1:-1] > f[:-2]) & (f[1:-1] >= f[2:])) + 1
            ref = None
            for j in peaks[(frac[peaks] <= settings.impact_frac) & (peaks < imax)]:
                if f[j] < settings.impact_min_bw * bw:
                    continue
                above = np.flatnonzero(f[j + 1:] > f[j])
                stop = j + 1 + (above[0] if len(above) else len(f) - j - 1)
                if f[j] - min(f[j], f[j + 1:stop].min(initial=f[j])) >= settings.impact_drop_bw * bw:
                    ref = j
                    break
            if ref is not None:
                f_ref, j_ref = f[ref], ref
            else:
                f_ref = np.interp(strike + 0.13 * (toe - strike), tt, f)
                j_ref = int(np.searchsorted(tt, strike + 0.13 * (toe - strike))) + 1
            i20 = int(np.argmax(f[:j_ref + 1] >= 0.2 * f_ref))
            i80 = int(np.argmax(f[:j_ref + 1] >= 0.8 * f_ref))
            t20 = tt[0] if i20 == 0 else np.interp(0.2 * f_ref, f[i20 - 1:i20 + 1], tt[i20 - 1:i20 + 1])
            t80 = tt[0] if i80 == 0 else np.interp(0.8 * f_ref, f[i80 - 1:i80 + 1], tt[i80 - 1:i80 + 1])
            k0s, k1s = max(i20 - 1, 0), max(i80 - 1, max(i20 - 1, 0))
            slopes = np.diff(f[k0s:k1s + 2]) * rate
            dx = np.diff(copx[k0 + 1 + d:k_end + d])
            dy = np.diff(copy[k0 + 1 + d:k_end + d])
            out["strike_s"].append(strike)
            out["peak"].append(f[imax] / bw)
            out["valr"].append(0.6 * f_ref / (t80 - t20) / bw if t80 > t20 else np.nan)
            out["vilr"].append(slopes.max() / bw if len(slopes) else np.nan)
            out["brake"].append(fx[fx < 0].sum() / rate / bw)
            out["prop"].append(fx[fx >= 0].sum() / rate / bw)
            out["path"].append(np.nansum(np.hypot(dx, dy)))
    order = np.argsort(out["strike_s"])
    return {k: np.asarray(v)[order] for k, v in out.items()}


def live_chunks(settings: ProcessorSettings, plates, sizes, seconds: float):
    """Per-call cost (µs) of feeding both belts in chunks of each size, on warm kernels."""
    results = {}
    n_total = int(seconds * settings.rate_hz)
    for size in sizes:
        proc = StepProcessor(settings)
        costs = []
        for start in range(0, n_total, size):
            for belt, (t, ch) in plates.items():
                ts = t[start:start + size]
                data = ch[start:start + size]
                t0 = time.perf_counter_ns()
                proc.feed_plate(belt, ts, data)
                costs.append(time.perf_counter_ns() - t0)
        arr = np.asarray(costs) / 1000.0
        results[size] = (np.percentile(arr, 50), np.percentile(arr, 99), len(arr))
    return results


COLD = """
import time
t0 = time.perf_counter()
import numpy as np
from labsuite.realtime.processor import PlateGeometry, ProcessorSettings, StepProcessor
s = ProcessorSettings(rate_hz=2000.0, plates=(PlateGeometry.lab_aligned('left'),
                      PlateGeometry.lab_aligned('right')), body_mass_kg=70.0)
p = StepProcessor(s)
ch = np.zeros((20, 6)); ch[:, 2] = -700.0
p.feed_plate('left', np.arange(20) / 2000.0, ch)
print(time.perf_counter() - t0)
"""


def cold_start() -> float:
    """Seconds for a fresh interpreter to import, build and run the processor (cache warm)."""
    env = dict(os.environ)
    times = []
    for _ in range(3):  # the first run warms numba's cache if it is not yet
        out = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True,
                             env=env, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return min(times[1:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0, help="recording length (1 hour)")
    ap.add_argument("--rate-hz", type=float, default=2000.0, help="plate rate (2000 Hz)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--live-seconds", type=float, default=20.0,
                    help="data per chunk size for the live measurement (20 s)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    ps, geoms, plates = make_data(args.hours, args.rate_hz, args.seed)
    n = len(plates["left"][0])
    print(f"data: {args.hours:g} h, 2 belts x {n} samples at {args.rate_hz:g} Hz "
          f"(simulated runner, {time.perf_counter() - t0:.1f} s to make)")
    settings = ProcessorSettings(rate_hz=args.rate_hz, plates=geoms, body_mass_kg=ps.mass_kg)

    # warm the kernels (and numba's cache) on a few seconds so compile time is not counted
    short = {b: (t[:10000], ch[:10000]) for b, (t, ch) in plates.items()}
    process_arrays(settings, short)
    baseline(settings, short)

    t0 = time.perf_counter()
    steps = process_arrays(settings, plates, feed_s=10.0)
    t_numba = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = baseline(settings, plates)
    t_base = time.perf_counter() - t0
    print("\noffline, whole recording")
    print(f"  numba pipeline (process_arrays):        {t_numba:8.2f} s  {len(steps)} steps "
          f"({2 * n / t_numba / 1e6:.1f} M samples/s)")
    print(f"  scipy/numpy (sosfilt, crossings, loop): {t_base:8.2f} s  {len(ref['valr'])} steps")
    print(f"  ratio scipy/numpy / numba:              {t_base / t_numba:8.2f}x")
    if len(ref["valr"]) == len(steps):
        # Compare step by step in strike order: whole-array feeds release each belt's steps
        # together, the reference lists them in strike order.
        mine = np.argsort(steps["strike_s"], kind="stable")
        theirs = np.argsort(ref["strike_s"], kind="stable")
        for name, key in (("strike_s", "strike_s"), ("valr_bw_per_s", "valr"),
                          ("vilr_bw_per_s", "vilr"), ("peak_vgrf_bw", "peak"),
                          ("braking_impulse_bw_s", "brake")):
            diff = np.nanmax(np.abs(steps[name][mine] - np.asarray(ref[key])[theirs]))
            print(f"  agreement {name:22s} max |diff| {diff:.3g}")
    else:
        print("  the two found different step counts; see the definitions")

    print("\nlive path: StepProcessor.feed_plate per call (both belts, kernels warm)")
    res = live_chunks(settings, plates, (1, 2, 5, 10, 20), args.live_seconds)
    print("  chunk  p50 us   p99 us   calls   us/sample(p50)")
    for size, (p50, p99, calls) in res.items():
        print(f"  {size:5d} {p50:8.1f} {p99:8.1f} {calls:7d}   {p50 / size:8.2f}")

    print("\ncold start (fresh interpreter, numba cache warm): import + build + first chunk")
    print(f"  {cold_start():.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
