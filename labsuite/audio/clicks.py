"""Click sounds and where they go: a short tone or a woodblock-like knock, its volume and its ear.

Synthesised once per setting as float32 samples (deterministic, so every click of a session is the
same sound and onset detection sees the same shape); the scheduler copies them into the output stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from labsuite.errors import ConfigError

CLICK_TONE = "tone"
CLICK_WOODBLOCK = "woodblock"
CLICKS = (CLICK_TONE, CLICK_WOODBLOCK)

EAR_BOTH = "both"
EAR_LEFT = "left"
EAR_RIGHT = "right"
EAR_ALTERNATE = "alternate"  # left on odd beats, right on even beats (one ear per step)
EARS = (EAR_BOTH, EAR_LEFT, EAR_RIGHT, EAR_ALTERNATE)

MIN_VOLUME_DB = -60.0
MAX_VOLUME_DB = 0.0
DEFAULT_VOLUME_DB = -6.0
MIN_TONE_HZ = 200.0
MAX_TONE_HZ = 4000.0
DEFAULT_TONE_HZ = 1000.0

_TONE_S = 0.030
_TONE_ATTACK_S = 0.0005
_WOODBLOCK_S = 0.060
# Modes of a struck hardwood block: an inharmonic partial series decaying within tens of ms.
_WOODBLOCK_MODES = ((900.0, 1.0, 0.012), (2270.0, 0.45, 0.006), (3920.0, 0.2, 0.003))
_WOODBLOCK_NOISE_S = 0.0015


@dataclass(frozen=True)
class ClickSettings:
    """What one click sounds like and in which ear.

    ``sound`` (tone or woodblock), ``volume_db`` (dB re full scale, -60..0), ``ear`` (both, left,
    right, alternate) and ``tone_hz`` (the tone's pitch).
    """

    sound: str = CLICK_WOODBLOCK
    volume_db: float = DEFAULT_VOLUME_DB
    ear: str = EAR_BOTH
    tone_hz: float = DEFAULT_TONE_HZ

    def __post_init__(self) -> None:
        if self.sound not in CLICKS:
            raise ConfigError(f"click sound: expected one of {', '.join(CLICKS)}, got {self.sound!r}")
        if self.ear not in EARS:
            raise ConfigError(f"click ear: expected one of {', '.join(EARS)}, got {self.ear!r}")
        v = self.volume_db
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or not MIN_VOLUME_DB <= v <= MAX_VOLUME_DB:
            raise ConfigError(f"click volume_db: expected {MIN_VOLUME_DB:g} to {MAX_VOLUME_DB:g} dB "
                              f"(0 = full scale), got {v!r}")
        f = self.tone_hz
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) \
                or not MIN_TONE_HZ <= f <= MAX_TONE_HZ:
            raise ConfigError(f"click tone_hz: expected {MIN_TONE_HZ:g} to {MAX_TONE_HZ:g} Hz, got {f!r}")

    @property
    def gain(self) -> float:
        """Linear amplitude of the click's peak (1.0 = full scale)."""
        return float(10.0 ** (self.volume_db / 20.0))


def synthesize(settings: ClickSettings, rate_hz: float) -> np.ndarray:
    """Return one click as mono float32 samples whose peak is ``settings.gain`` (onset at sample 0)."""
    if not (math.isfinite(rate_hz) and rate_hz >= 8000):
        raise ConfigError(f"click sample rate: expected >= 8000 Hz, got {rate_hz!r}")
    if settings.sound == CLICK_TONE:
        wave = _tone(settings.tone_hz, rate_hz)
    else:
        wave = _woodblock(rate_hz)
    wave /= np.max(np.abs(wave))
    return (wave * settings.gain).astype(np.float32)


def _tone(freq_hz: float, rate_hz: float) -> np.ndarray:
    t = np.arange(round(_TONE_S * rate_hz)) / rate_hz
    env = np.ones_like(t)
    # raised-cosine attack (no spectral splatter, yet a sharp audible onset), cosine release
    n_att = max(1, round(_TONE_ATTACK_S * rate_hz))
    env[:n_att] = 0.5 - 0.5 * np.cos(np.pi * np.arange(1, n_att + 1) / n_att)
    n_rel = len(t) // 2
    env[-n_rel:] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(1, n_rel + 1) / n_rel)
    return env * np.sin(2 * np.pi * freq_hz * t)


def _woodblock(rate_hz: float) -> np.ndarray:
    n = round(_WOODBLOCK_S * rate_hz)
    t = np.arange(n) / rate_hz
    wave = np.zeros(n)
    for freq_hz, amp, tau_s in _WOODBLOCK_MODES:
        # phase pi/4: every mode starts at 71 % of its amplitude, the abrupt onset of a real strike
        wave += amp * np.exp(-t / tau_s) * np.sin(2 * np.pi * freq_hz * t + 0.25 * np.pi)
    # the strike itself: a short burst of seeded noise (same on every click)
    n_noise = round(_WOODBLOCK_NOISE_S * rate_hz)
    noise = np.random.default_rng(14).standard_normal(n_noise)
    wave[:n_noise] += 0.3 * noise * np.exp(-np.arange(n_noise) / (0.3 * n_noise))
    # fade the tail to zero over its last 10 ms so the click never ends with a step
    n_fade = round(0.010 * rate_hz)
    wave[-n_fade:] *= np.linspace(1.0, 0.0, n_fade)
    return wave


def ear_gains(ear: str, beat_n: int) -> tuple[float, float]:
    """(left, right) gains of beat number ``beat_n`` (1-based) for an ``ear`` setting."""
    if ear == EAR_LEFT:
        return 1.0, 0.0
    if ear == EAR_RIGHT:
        return 0.0, 1.0
    if ear == EAR_ALTERNATE:
        return (1.0, 0.0) if beat_n % 2 == 1 else (0.0, 1.0)
    return 1.0, 1.0


def beat_ear(ear: str, beat_n: int) -> str:
    """Which ear beat ``beat_n`` sounds in: 'left', 'right' or 'both'."""
    left, right = ear_gains(ear, beat_n)
    return EAR_BOTH if left and right else (EAR_LEFT if left else EAR_RIGHT)
