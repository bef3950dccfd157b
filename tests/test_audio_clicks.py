"""Click synthesis, ear routing, the onset detector and the DAC clock model, without a sound server."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labsuite.audio import clicks
from labsuite.audio.clicks import ClickSettings, beat_ear, ear_gains, synthesize
from labsuite.audio.clock import SETTLED_OBSERVATIONS, ClockMapper, DacClock
from labsuite.audio.onsets import detect_onsets
from labsuite.errors import ConfigError

RATE = 48000


@pytest.mark.parametrize("sound", clicks.CLICKS)
@pytest.mark.parametrize("volume_db", [0.0, -6.0, -30.0])
def test_click_peak_is_the_volume_and_ends_silent(sound: str, volume_db: float) -> None:
    wave = synthesize(ClickSettings(sound=sound, volume_db=volume_db), RATE)
    assert wave.dtype == np.float32
    assert np.max(np.abs(wave)) == pytest.approx(10 ** (volume_db / 20), rel=1e-5)
    assert 0.02 <= len(wave) / RATE <= 0.08
    assert abs(wave[-1]) < 1e-3 * np.max(np.abs(wave))  # no step at the end


def test_woodblock_starts_abruptly_and_tone_has_a_short_attack() -> None:
    wood = synthesize(ClickSettings(sound="woodblock", volume_db=0.0), RATE)
    tone = synthesize(ClickSettings(sound="tone", volume_db=0.0, tone_hz=1000.0), RATE)
    assert abs(wood[0]) > 0.3  # a strike, not a fade-in
    first_loud = int(np.argmax(np.abs(tone) > 0.5))
    assert first_loud <= round(0.001 * RATE)  # half scale within 1 ms
    # the tone is at its pitch: the spectrum peaks at 1000 Hz
    spec = np.abs(np.fft.rfft(tone, 1 << 16))
    assert np.fft.rfftfreq(1 << 16, 1 / RATE)[np.argmax(spec)] == pytest.approx(1000.0, abs=5)


def test_every_click_of_a_setting_is_the_same_sound() -> None:
    a = synthesize(ClickSettings(), RATE)
    b = synthesize(ClickSettings(), RATE)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(("field", "kwargs", "needle"), [
    ("sound", {"sound": "cowbell"}, "click sound"),
    ("ear", {"ear": "middle"}, "click ear"),
    ("volume_db", {"volume_db": 3.0}, "click volume_db"),
    ("volume_db", {"volume_db": math.nan}, "click volume_db"),
    ("tone_hz", {"tone_hz": 50.0}, "click tone_hz"),
])
def test_click_settings_name_the_bad_field(field: str, kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        ClickSettings(**kwargs)


def test_ears() -> None:
    assert ear_gains("left", 1) == (1.0, 0.0) and ear_gains("right", 2) == (0.0, 1.0)
    assert ear_gains("both", 7) == (1.0, 1.0)
    assert [beat_ear("alternate", n) for n in range(1, 5)] == ["left", "right", "left", "right"]


# ---- the onset detector, on signals with known onsets ---------------------------------------

def _synthetic(onsets: np.ndarray, gains_db: np.ndarray, sound: str, noise_db: float,
               seed: int = 3) -> np.ndarray:
    n = int(onsets[-1]) + RATE
    x = np.zeros((n, 2))
    for onset, g in zip(onsets, gains_db, strict=True):
        w = synthesize(ClickSettings(sound=sound, volume_db=float(g)), RATE)
        x[onset:onset + len(w), onset % 2] += w  # alternate channels, as the ear setting does
    x += 10 ** (noise_db / 20) * np.random.default_rng(seed).standard_normal(x.shape)
    return np.round(np.clip(x, -1, 1) * 32767) / 32768  # through s16, as parec records


@pytest.mark.parametrize("sound", clicks.CLICKS)
def test_detector_finds_known_onsets(sound: str) -> None:
    rng = np.random.default_rng(11)
    gaps = rng.uniform(0.25, 0.6, 40)  # irregular, so a detector locked to a period would fail
    onsets = (RATE * (0.3 + np.cumsum(gaps))).astype(np.int64)
    gains = rng.uniform(-30.0, 0.0, len(onsets))
    x = _synthetic(onsets, gains, sound, noise_db=-70.0)
    found = detect_onsets(x, RATE)
    assert len(found) == len(onsets)
    delay = (found - onsets) / RATE
    assert np.all(delay >= 0) and np.all(delay <= 0.0003)  # within the attack's first 0.3 ms
    assert np.std(delay) <= 0.00003  # the same delay for loud and quiet clicks


def test_detector_finds_nothing_in_noise_or_silence() -> None:
    noise = 10 ** (-60 / 20) * np.random.default_rng(5).standard_normal((5 * RATE, 2))
    assert len(detect_onsets(noise, RATE)) == 0
    assert len(detect_onsets(np.zeros(RATE), RATE)) == 0


def test_detector_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="rate_hz"):
        detect_onsets(np.zeros(10), 0.0)
    with pytest.raises(ConfigError, match="shape"):
        detect_onsets(np.zeros((2, 2, 2)), RATE)


# ---- the DAC clock model --------------------------------------------------------------------

BLOCK = 1200


def _feed(clock: DacClock, n: int, *, start: int = 0, t0: float = 100.0, lead_s: float = 0.1,
          wander_s: float = 0.0, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    obs = []
    for i in range(start, start + n):
        frame = i * BLOCK
        now = t0 + frame / RATE
        obs.append(clock.observe(frame, now + lead_s + wander_s * rng.standard_normal(), now))
    return obs


def test_dac_clock_averages_jitter_and_extrapolates() -> None:
    clock = DacClock(RATE)
    _feed(clock, 400, wander_s=0.0005)  # 10 s of 0.5 ms jitter
    frame = 400 * BLOCK + 3000
    truth = 100.0 + frame / RATE + 0.1
    assert clock.dac_time(frame, 0) == pytest.approx(truth, abs=0.0001)
    assert clock.settled and clock.jumps == 0


def test_shrunk_slope_is_ridge_regression() -> None:
    from labsuite.audio.clock import shrunk_slope

    rng = np.random.default_rng(3)
    x = np.sort(rng.uniform(0, 30, 200))
    y = 2e-4 * x + 1e-3 * rng.standard_normal(200) + 5.0
    # the independent reference: least squares with the prior as one extra row (sqrt(n * prior) b = 0)
    prior = 100.0
    design = np.column_stack([np.ones_like(x), x - x.mean()])
    design = np.vstack([design, [0.0, np.sqrt(len(x) * prior)]])
    ref = np.linalg.lstsq(design, np.append(y, 0.0), rcond=None)[0][1]
    assert shrunk_slope(x, y, prior) == pytest.approx(ref, rel=1e-9)
    assert shrunk_slope(x, y, 0.0) == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-9)


def _interval_error_ppm(clock: DacClock, frame: int, period: int = 16000) -> float:
    """How far the clock's time between two frames one beat apart is from the nominal rate (ppm)."""
    return 1e6 * ((clock.dac_time(frame, 0) - clock.dac_time(frame - period, 0)) * RATE / period - 1)


def test_dac_clock_does_not_read_a_slow_wander_as_a_rate_error() -> None:
    # reported DAC times that creep by 1 ms over 15 s while the samples play at the nominal rate
    # (measured on the null sink under load): a plain fit reads 67 ppm, i.e. beat intervals and
    # click times extrapolated from the window's middle off by that rate
    clock = DacClock(RATE)
    n = 600  # 15 s of 25 ms callbacks
    for i in range(n):
        frame = i * BLOCK
        now = 100.0 + frame / RATE
        clock.observe(frame, now + 0.1 + 1e-3 * i / n, now)
    assert abs(_interval_error_ppm(clock, n * BLOCK)) < 12.0


def test_dac_clock_learns_a_real_rate_error_from_a_long_baseline() -> None:
    # a crystal 100 ppm fast, 30 s of callbacks with 0.3 ms of jitter: the fit takes 43 % of it
    # (the prior's weight at 30 s), and a constant rate error gives a constant offset, not a drift
    clock = DacClock(RATE)
    rng = np.random.default_rng(5)
    n = 1200
    for i in range(n):
        frame = i * BLOCK
        now = 100.0 + frame / RATE
        clock.observe(frame, now * (1 - 100e-6) + 0.1 + 3e-4 * rng.standard_normal(), now)
    assert _interval_error_ppm(clock, n * BLOCK) == pytest.approx(-100 * 75 / 175, abs=10)


def test_dac_clock_prefill_is_not_settled() -> None:
    # PortAudio prefills the buffer with back-to-back callbacks: same level, no real-time progress
    clock = DacClock(RATE)
    for i in range(SETTLED_OBSERVATIONS + 2):
        clock.observe(i * BLOCK, 5.0 + i * BLOCK / RATE, 5.0 + 1e-4 * i)
    assert not clock.settled
    _feed(clock, SETTLED_OBSERVATIONS + 1, start=SETTLED_OBSERVATIONS + 2, t0=7.0)
    assert clock.settled and clock.jumps == 1


def test_dac_clock_single_outlier_neither_splits_nor_moves() -> None:
    clock = DacClock(RATE)
    _feed(clock, 50)
    frame = 50 * BLOCK
    bad = clock.observe(frame, 100.0 + frame / RATE + 0.1 + 0.02, 100.0 + frame / RATE)
    _feed(clock, 10, start=51)
    assert clock.jumps == 0
    assert clock.segment_of(bad) == 0
    assert clock.dac_time(frame, 0) == pytest.approx(100.0 + frame / RATE + 0.1, abs=1e-6)


def test_dac_clock_confirmed_jump_starts_a_segment_where_it_began() -> None:
    clock = DacClock(RATE)
    _feed(clock, 50)
    later = _feed(clock, 20, start=50, lead_s=0.15)  # an unreported 50 ms stall
    assert clock.jumps == 1
    assert clock.segment_of(later[0]) == 1  # relabelled once confirmed
    frame = 55 * BLOCK
    assert clock.dac_time(frame, 1) == pytest.approx(100.0 + frame / RATE + 0.15, abs=1e-6)
    # frames written before the stall keep their times
    assert clock.dac_time(40 * BLOCK, 0) == pytest.approx(100.0 + 40 * BLOCK / RATE + 0.1, abs=1e-6)


def test_dac_clock_underflow_starts_a_segment() -> None:
    clock = DacClock(RATE)
    _feed(clock, 20)
    k = clock.observe(20 * BLOCK, 200.0, 199.9, discontinuity=True)
    assert clock.segment_of(k) == 1


def test_clock_mapper_keeps_the_tightest_reading_and_counts_steps() -> None:
    lsl = iter(np.arange(0.0, 100.0, 0.001))
    offset = [1000.0]

    def read_lsl() -> float:
        return float(next(lsl))

    def read_stream() -> float:
        return read_lsl() + offset[0]  # the stream read sits between two LSL reads

    mapper = ClockMapper(read_stream, read_lsl)
    assert mapper.measure() == pytest.approx(1000.0, abs=1e-9)
    assert mapper.to_lsl(1005.0) == pytest.approx(5.0, abs=1e-9)
    offset[0] = 1000.5  # NTP sets the wall clock
    mapper.measure()
    assert mapper.steps == 1 and mapper.to_lsl(1005.5) == pytest.approx(5.0, abs=1e-9)
