"""Early records, corrections and withdrawals (issue 15): the kernels against their twins, the
early record against the full one, and the full records with corrections applied against the
offline result, for any chunking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from labsuite.drivers.sim.gait import ParticipantSettings, simulate_offline
from labsuite.errors import DeviceError
from labsuite.plates import lab_to_plate, plate_axes, plate_centre
from labsuite.realtime import _kernels as K
from labsuite.realtime.files import load_text
from labsuite.realtime.processor import (
    PlateGeometry,
    ProcessorSettings,
    StepProcessor,
    process_arrays,
)
from labsuite.steps import (
    RECORD_CORRECTION,
    RECORD_EARLY,
    RECORD_FULL,
    RECORD_WITHDRAWN,
    STEP_FIELD_NAMES,
    STRIKE_INDEX_CUTOFFS_PCT,
    apply_records,
    steps_to_rows,
)

try:
    from tests import naive_realtime as naive
except ImportError:  # pytest run from inside tests/
    import naive_realtime as naive  # type: ignore[no-redef]

LAB_SPLIT = (PlateGeometry.lab_aligned("left"), PlateGeometry.lab_aligned("right"))
RBDS008_MAP = {"fz": "Fy", "fx": "Fx", "fy": "-Fz", "copx": "COPx", "copy": "-COPz"}


def _kernel_events(ts, ch, rot, centre, sos, eparams, chunk):
    n = len(ts)
    nsec = sos.shape[0]
    zi = np.zeros((max(nsec, 1), 6, 2))
    zi_unit = signal.sosfilt_zi(sos) if nsec else np.zeros((1, 2))
    istate = np.zeros(K.N_ISTATE, dtype=np.int64)
    fstate = np.full(K.N_FSTATE, np.nan)
    fstate[[K.F_NZ_N, K.F_NZ_MEAN, K.F_NZ_M2]] = 0.0
    rings = np.zeros(n), np.zeros((n, 2)), np.zeros((n, 5))
    buf = np.zeros((3 * chunk + 8, K.EVENT_COLS))
    events = []
    for start in range(0, n, chunk):
        m = K._plate_chunk(ts[start:start + chunk], ch[start:start + chunk], rot, centre,
                           np.zeros(3), sos, zi, zi_unit, nsec > 0, istate, fstate, *rings, 50.0,
                           25.0, 50.0, 25.0, np.inf, np.inf, 50, False, 0.03, eparams, buf)
        events.extend(tuple(r) for r in buf[:m])
    return events, rings


def _early_setup(rate, lowpass_hz, bw_n, frac=0.3, higher=True):
    sos = (signal.butter(4, lowpass_hz, fs=rate, output="sos") if lowpass_hz
           else np.zeros((0, 6)))
    delay = 0
    if lowpass_hz:
        b, a = signal.sos2tf(sos)
        delay = round(float(signal.group_delay((b, a), w=[1e-4 * np.pi])[1][0]))
    early = {"delay": delay, "dt": 1.0 / rate, "frac": frac, "min_n": 0.5 * bw_n,
             "prom_n": 0.02 * bw_n, "higher": higher, "min_contact": 0.1, "max_contact": 2.0}
    eparams = np.zeros(K.N_EPARAMS)
    for slot, key in ((K.E_DELAY, "delay"), (K.E_DT, "dt"), (K.E_FRAC, "frac"),
                      (K.E_MIN_N, "min_n"), (K.E_PROM_N, "prom_n"), (K.E_HIGHER, "higher"),
                      (K.E_MIN_CONTACT, "min_contact"), (K.E_MAX_CONTACT, "max_contact")):
        eparams[slot] = float(early[key])
    eparams[K.E_ON] = 1.0
    return sos, early, eparams


@pytest.fixture(scope="module")
def rbds008(shared_data):
    return load_text(shared_data / "rbds" / "RBDS008runT35forces.txt", rate_hz=300.0,
                     mapping=RBDS008_MAP, length_unit="mm")


@pytest.mark.parametrize("lowpass_hz", [0.0, 50.0])
def test_early_decision_matches_twin_on_real_rearfoot_running(rbds008, lowpass_hz):
    p = rbds008.plates[0]
    t, lab = rbds008.streams[p.belt]
    t, lab = t[:6000], lab[:6000]  # 20 s, about 50 contacts
    corners = np.asarray(p.corners_m)
    ch = lab_to_plate(lab[:, :3], lab[:, 3:5], np.zeros(len(t)), corners, p.origin_m)
    rot, centre = plate_axes(corners), plate_centre(corners)
    bw = float(np.mean(lab[:, 2]))
    sos, early, eparams = _early_setup(300.0, lowpass_hz, bw)
    events, _ = _kernel_events(t, ch, rot, centre, sos, eparams, chunk=13)
    twin = naive.NaivePlate(rot, centre, (0, 0, 0), sos, signal.sosfilt_zi(sos) if len(sos) else [],
                            50.0, 25.0, 50, False, 0.03, early=early)
    twin.feed(t, ch)
    decided = [e for e in events if e[0] == K.EV_EARLY]
    assert len(decided) >= 40
    # rearfoot: most contacts have an impact peak, decided before the window is over
    assert sum(e[3] == K.EARLY_PEAK for e in decided) >= 0.5 * len(decided)
    np.testing.assert_allclose(np.array(events), np.array(twin.events), rtol=1e-12, atol=1e-12)


def test_early_decision_matches_twin_when_walking():
    # walking (no higher peak needed): the weight-acceptance peak decides on prominence alone
    ps = ParticipantSettings(mode="walk", seed=4)
    rec = simulate_offline(ps, 12.0)
    rot, centre = np.eye(3) * np.array([1, -1, -1]), np.zeros(2)
    corners = np.array([[1.0, -0.5, 0.0], [-1.0, -0.5, 0.0], [-1.0, 0.5, 0.0], [1.0, 0.5, 0.0]])
    rot, centre = plate_axes(corners), plate_centre(corners)
    grf = rec.grf_n["left"]
    ch = lab_to_plate(grf, np.zeros((len(grf), 2)), np.zeros(len(grf)), corners, (0, 0, 0))
    sos, early, eparams = _early_setup(1000.0, 50.0, ps.mass_kg * 9.80665, frac=0.5, higher=False)
    events, _ = _kernel_events(rec.t_plate_s, ch, rot, centre, sos, eparams, chunk=7)
    twin = naive.NaivePlate(rot, centre, (0, 0, 0), sos, signal.sosfilt_zi(sos), 50.0, 25.0, 50,
                            False, 0.03, early=early)
    twin.feed(rec.t_plate_s, ch)
    assert sum(e[0] == K.EV_EARLY for e in events) >= 8
    np.testing.assert_allclose(np.array(events), np.array(twin.events), rtol=1e-12, atol=1e-12)


def test_finalize_row_matches_twin_on_random_contacts():
    rng = np.random.default_rng(11)
    cw, sw = 4, 5
    fin = np.full(K.finalize_state_size(cw, sw), 0.0)
    fin[:2] = np.nan
    cols = np.arange(K.N_R, dtype=np.int64)  # record laid out in R_* order
    names = ("foot", "strike_s", "toe_off_s", "contact_s", "step_s", "stride_s", "cadence_spm",
             "peak_vgrf_bw", "impact_peak_bw", "impact_peak_s", "valr_bw_per_s", "vilr_bw_per_s",
             "loading_rate_method", "braking_impulse_bw_s", "propulsive_impulse_bw_s",
             "cop_strike_x_m", "cop_strike_y_m", "cop_path_m", "tibial_peak_g", "step_length_m",
             "crossover", "si_contact_pct", "si_step_pct", "si_peak_vgrf_pct", "si_valr_pct",
             "si_vilr_pct", "si_tibial_peak_pct", "strike_index_pct", "strike_pattern",
             "invalid", "record_kind", "step_id", "decided_s")
    keys = ["peak", "impact", "impact_t", "valr", "vilr", "method", "brake", "prop", "path",
            "cop_x", "cop_y", "si", "bins"]
    contacts, rows = [], []
    t = 0.0
    for i in range(300):
        t += rng.uniform(0.2, 0.5) if rng.random() > 0.05 else rng.uniform(2.0, 5.0)  # gaps
        m = rng.uniform(0, 3000, K.N_METRICS)
        m[rng.random(K.N_METRICS) < 0.15] = np.nan
        c = {"foot": int(rng.choice([0, 1, 1, 0, -1] if i % 17 == 0 else [0, 1])),
             "strike": t, "toe": t + rng.uniform(0.1, 0.4), "crossover": rng.random() < 0.05,
             "invalid": rng.random() < 0.05, "cop_x": rng.normal(), "cop_y": rng.normal(),
             "metrics": dict(zip(keys, m, strict=True)), "bw": 700.0,
             "tibial": float(rng.choice([np.nan, rng.uniform(2, 12)])),
             "belt_speed": float(rng.choice([np.nan, 3.0])), "step_id": float(i),
             "decided": t + 0.5}
        contacts.append(c)
        row = np.empty(K.N_R)
        K._finalize_row(row, cols, fin, cw, sw, c["foot"], c["strike"], c["toe"], c["crossover"],
                        c["invalid"], c["cop_x"], c["cop_y"], m, 700.0, c["tibial"],
                        c["belt_speed"], 2.0, *STRIKE_INDEX_CUTOFFS_PCT, float(i), t + 0.5)
        rows.append(row)
    ref = naive.finalize_rows(contacts, cw, sw, 2.0, STRIKE_INDEX_CUTOFFS_PCT)
    for row, r in zip(rows, ref, strict=True):
        for q, name in enumerate(names):
            a, b = row[q], r.get(name, math.nan)
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12), name


def test_fused_floor_matches_twin():
    rng = np.random.default_rng(2)
    n = 3000
    t = np.arange(n) / 1000.0
    fz = np.clip(1500 * np.sin(2 * np.pi * t * 1.4), 0, None) + rng.normal(0, 8, n)
    corners = np.array([[1.8, 0.25, 0.0], [1.8, -0.25, 0.0], [0.0, -0.25, 0.0], [0.0, 0.25, 0.0]])
    grf = np.column_stack([rng.normal(0, 5, n), rng.normal(0, 5, n), fz])
    ch = lab_to_plate(grf, np.full((n, 2), 0.5), np.zeros(n), corners, (0, 0, 0)).astype(np.float32)
    rot = plate_axes(corners)
    sos = signal.butter(4, 50.0, fs=1000.0, output="sos")
    zi, ring, state = np.zeros((2, 6, 2)), np.zeros(n), np.zeros(3, dtype=np.int64)
    started = sum(K._fused_floor(ch[s:s + 97], rot, sos, zi, signal.sosfilt_zi(sos), 50.0, 25.0,
                                 ring, state) for s in range(0, n, 97))
    fz_ref, contacts = naive.fused_floor(ch, rot, sos, signal.sosfilt_zi(sos), 50.0, 25.0)
    assert started == contacts == state[2] >= 4
    np.testing.assert_allclose(ring, fz_ref, rtol=1e-12, atol=1e-9)


@pytest.fixture(scope="module")
def split_run():
    ps = ParticipantSettings(mode="run", strike="rearfoot", seed=7)
    rec = simulate_offline(ps, 10.0)
    plates = {}
    for g in LAB_SPLIT:
        grf = rec.grf_n[g.belt]
        cop = np.where(grf[:, 2:3] > 1.0, rec.cop_m[g.belt], np.nan)
        plates[g.belt] = (rec.t_plate_s, lab_to_plate(grf, cop, rec.tz_nm[g.belt],
                                                      np.asarray(g.corners_m), g.origin_m))
    imus = {side: (rec.t_imu_s, rec.imu[side]) for side in ("left", "right")}
    settings = ProcessorSettings(rate_hz=1000.0, plates=LAB_SPLIT, body_mass_kg=ps.mass_kg,
                                 imu_sides=("left", "right"), belt_speed_m_s=3.0)
    return settings, plates, imus


def _feed(settings, plates, imus, chunk, *, early=True):
    proc = StepProcessor(settings, early_records=early)
    streams = [("plate", b, *v) for b, v in plates.items()] + [("imu", s, *v) for s, v in imus.items()]
    n = max(len(s[2]) for s in streams)
    out = []
    for start in range(0, n, chunk):
        for kind, name, ts, data in streams:
            if start < len(ts):
                feed = proc.feed_plate if kind == "plate" else proc.feed_imu
                out.append(feed(name, ts[start:start + chunk], data[start:start + chunk]))
    out.append(proc.flush())
    return np.concatenate(out)


@pytest.mark.parametrize("chunk", [1, 10, 100])
def test_early_records_come_first_and_the_full_records_equal_offline(split_run, chunk):
    settings, plates, imus = split_run
    offline = process_arrays(settings, plates, imus)
    assert np.all(offline["record_kind"] == RECORD_FULL)
    assert len(np.unique(offline["step_id"])) == len(offline) >= 20
    records = _feed(settings, plates, imus, chunk)
    np.testing.assert_array_equal(steps_to_rows(apply_records(records)), steps_to_rows(offline))
    early = records[records["record_kind"] == RECORD_EARLY]
    # every contact after the first of each belt (no contact time to expect yet) has one
    assert len(early) == len(offline) - 2
    kinds = records["record_kind"]
    for e in early:
        i_early = np.flatnonzero((records["step_id"] == e["step_id"]) & (kinds == RECORD_EARLY))[0]
        i_full = np.flatnonzero((records["step_id"] == e["step_id"]) & (kinds == RECORD_FULL))[0]
        assert i_early < i_full
        full = records[i_full]
        assert e["strike_s"] == full["strike_s"] and e["foot"] == full["foot"]
        assert np.isnan(e["toe_off_s"]) and np.isnan(e["crossover"])
        # the tibial peak so far can only be below the one over the whole window
        assert e["tibial_peak_g"] <= full["tibial_peak_g"]
    # impact peak and loading rates as the full record has them (the stance assumed as long as
    # the previous one only changes steps with a peak near the end of the window)
    both = early[early["loading_rate_method"] == 0]
    full = offline[np.isin(offline["step_id"], both["step_id"])]
    assert len(both) >= 0.8 * len(early)
    order = np.argsort(both["step_id"])
    for name in ("impact_peak_bw", "impact_peak_s", "valr_bw_per_s", "vilr_bw_per_s"):
        np.testing.assert_array_equal(both[name][order], full[name])
    # early records are the same, whatever the chunking (their place among the others may not be)
    ref = _feed(settings, plates, imus, 7)
    ref_early = ref[ref["record_kind"] == RECORD_EARLY]
    np.testing.assert_array_equal(
        steps_to_rows(early[np.argsort(early["step_id"])]),
        steps_to_rows(ref_early[np.argsort(ref_early["step_id"])]))


def _bump(t, strike, contact, peak=1700.0):
    u = (t - strike) / contact
    return np.where((u > 0) & (u < 1), peak * np.sin(np.pi * np.clip(u, 0, 1)), 0.0)


def _split_plates(t, fz):
    return {b: (t, np.column_stack([np.zeros((len(t), 2)), f, np.full((len(t), 2), np.nan)]))
            for b, f in fz.items()}


def test_a_crossover_found_after_the_full_record_comes_as_a_correction():
    rate = 1000.0
    t = np.arange(int(4 * rate)) / rate
    fz = {"left": np.zeros(len(t)), "right": np.zeros(len(t))}
    strikes = [0.2, 0.55, 0.9, 1.25, 1.6, 1.95, 2.3, 2.65, 3.0]
    for i, s in enumerate(strikes):
        if i == 4:
            # one foot across both belts: strikes 60 ms apart (more than the 40 ms window), the
            # toe-offs 15 ms apart: the left record is out before the right belt's contact ends
            fz["left"] += _bump(t, s, 0.25, 850.0)
            fz["right"] += _bump(t, s + 0.06, 0.205, 850.0)
        else:
            fz["left" if i % 2 == 0 else "right"] += _bump(t, s, 0.25)
    plates = _split_plates(t, fz)
    settings = ProcessorSettings(rate_hz=rate, plates=LAB_SPLIT, body_weight_n=700.0)
    offline = process_arrays(settings, plates, lab_frame=True)
    flagged = offline[offline["crossover"] == 1]
    np.testing.assert_allclose(flagged["strike_s"], [1.6, 1.66], atol=0.005)
    for chunk in (1, 10, 100):
        proc = StepProcessor(settings, early_records=True)
        out = []
        for start in range(0, len(t), chunk):
            for belt in ("left", "right"):
                out.append(proc.feed_lab(belt, t[start:start + chunk],
                                         plates[belt][1][start:start + chunk, :3]))
        out.append(proc.flush())
        records = np.concatenate(out)
        fixes = records[records["record_kind"] == RECORD_CORRECTION]
        # the left step went out as a step, then was corrected; the right one knew in time
        assert len(fixes) == 1 and fixes["strike_s"][0] == pytest.approx(1.6, abs=0.005)
        assert fixes["crossover"][0] == 1 and np.isnan(fixes["peak_vgrf_bw"][0])
        first = records[(records["step_id"] == fixes["step_id"][0])
                        & (records["record_kind"] == RECORD_FULL)]
        assert first["crossover"][0] == 0 and np.isfinite(first["peak_vgrf_bw"][0])
        # ... and took back what that step added: the steps after it are exactly offline's
        np.testing.assert_array_equal(steps_to_rows(apply_records(records)),
                                      steps_to_rows(offline))


def test_an_early_record_whose_contact_is_no_step_is_withdrawn():
    rate = 1000.0
    t = np.arange(int(3 * rate)) / rate
    fz = {"left": np.zeros(len(t)), "right": np.zeros(len(t))}
    impact = lambda s: 600 * np.exp(-(((t - s) / 0.25 - 0.12) / 0.04) ** 2) * (t > s)  # noqa: E731
    for i, s in enumerate([0.2, 0.55, 0.9, 1.25, 1.6, 1.95]):
        fz["left" if i % 2 == 0 else "right"] += _bump(t, s, 0.25) + impact(s)
    fz["left"] += _bump(t, 2.3, 0.25) + impact(2.3)
    plates = _split_plates(t, fz)
    settings = ProcessorSettings(rate_hz=rate, plates=LAB_SPLIT, body_weight_n=700.0)
    proc = StepProcessor(settings, early_records=True)
    stop = int(2.42 * rate)  # the recording ends inside the last contact, after its impact peak
    out = [proc.feed_lab(b, t[:stop], plates[b][1][:stop, :3]) for b in ("left", "right")]
    out.append(proc.flush())
    records = np.concatenate(out)
    last = records[np.abs(records["strike_s"] - 2.3) < 0.005]
    assert list(last["record_kind"]) == [RECORD_EARLY, RECORD_WITHDRAWN]
    assert last["step_id"][0] == last["step_id"][1]
    assert last["loading_rate_method"][0] == 0 and np.isfinite(last["valr_bw_per_s"][0])
    assert not np.any(np.isin(apply_records(records)["step_id"], last["step_id"]))


def test_a_call_that_completes_nothing_returns_the_one_empty_result(split_run):
    settings, plates, _ = split_run
    proc = StepProcessor(replace_imus(settings))
    t, ch = plates["left"]
    first = proc.feed_plate("left", t[:10], ch[:10].astype(np.float32))
    second = proc.feed_plate("left", t[10:20], ch[10:20])
    assert first is second and len(first) == 0 and not first.flags.writeable
    assert first.dtype.names == STEP_FIELD_NAMES


def replace_imus(settings):
    from dataclasses import replace

    return replace(settings, imu_sides=())


def _early_on_real(data, lowpass_hz, **kw):
    s = ProcessorSettings(rate_hz=data.rate_hz, plates=data.plates, layout="single",
                          lowpass_hz=lowpass_hz, **kw)
    offline = process_arrays(s, data.streams, lab_frame=data.lab_frame)
    proc = StepProcessor(s, early_records=True)
    belt = data.plates[0].belt
    t, x = data.streams[belt]
    out = []
    for i in range(0, len(t), 10):  # 10-sample chunks, as a driver sends them
        if data.lab_frame:
            out.append(proc.feed_lab(belt, t[i:i + 10], x[i:i + 10, :3], x[i:i + 10, 3:5]))
        else:
            out.append(proc.feed_plate(belt, t[i:i + 10], x[i:i + 10]))
    out.append(proc.flush())
    return offline, np.concatenate(out)


@pytest.mark.parametrize(("trial", "lowpass_hz", "min_peaks"), [
    ("RBDS008", 50.0, 60), ("RBDS008", 0.0, 75), ("RBDS001", 0.0, 50)])
def test_early_records_on_real_running_agree_with_the_full_ones(shared_data, rbds008, trial,
                                                                  lowpass_hz, min_peaks):
    from labsuite.realtime.files import load_c3d

    if trial == "RBDS008":
        data = rbds008
        kw = {"body_weight_n": float(np.mean(data.streams[data.plates[0].belt][1][:, 2]))}
    else:
        data = load_c3d(shared_data / "rbds" / "RBDS001runT35.c3d")
        kw = {"body_mass_kg": 62.0}
    offline, records = _early_on_real(data, lowpass_hz, **kw)
    np.testing.assert_array_equal(steps_to_rows(apply_records(records)), steps_to_rows(offline))
    early = records[records["record_kind"] == RECORD_EARLY]
    assert len(early) == len(offline) - 1  # all but the first contact
    full = {sid: row for sid, row in zip(offline["step_id"], offline, strict=True)}
    peaks = early[early["loading_rate_method"] == 0]
    assert len(peaks) >= min_peaks
    # every early impact peak is the full record's, with the same loading rates
    for e in peaks:
        f = full[e["step_id"]]
        assert f["loading_rate_method"] == 0
        for name in ("impact_peak_bw", "valr_bw_per_s", "vilr_bw_per_s"):
            assert e[name] == f[name], name
    # steps the early record found no peak for: at most one later turns out to have one
    no_peak = early[np.isnan(early["loading_rate_method"])]
    assert sum(full[sid]["loading_rate_method"] == 0 for sid in no_peak["step_id"]) <= 1
    # decided while the foot is on the ground, in the first half of the stance
    after = early["decided_s"] - early["strike_s"]
    assert np.median(after) < 0.5 * np.median(offline["contact_s"])


def test_float32_chunks_as_the_streams_send_them_give_the_float64_result(split_run):
    settings, plates, imus = split_run
    as32 = {b: (t, ch.astype(np.float32)) for b, (t, ch) in plates.items()}
    as64 = {b: (t, ch.astype(np.float64)) for b, (t, ch) in as32.items()}  # exact widening
    got = _feed(settings, as32, imus, 10)
    want = _feed(settings, as64, imus, 10)
    assert len(got) > 20
    np.testing.assert_array_equal(steps_to_rows(got), steps_to_rows(want))
    # a non-contiguous or other-typed chunk goes through the checked, converting path
    t, ch = as64["left"]
    proc = StepProcessor(replace_imus(settings))
    assert len(proc.feed_plate("left", t[:50].tolist(), np.asfortranarray(ch[:50]))) == 0
    with pytest.raises(DeviceError, match="timestamps: sample 3 is not a finite number"):
        bad_t = t[50:60].copy()
        bad_t[3] = np.nan
        proc.feed_plate("left", bad_t, ch[50:60])
    assert proc._belts["left"].n_seen == 50  # the refused chunk changed nothing
