"""Click onsets in a recording: where each click of the metronome starts, in samples.

Used on what the sound card actually played (the null sink's monitor in tests and benchmarks, a
microphone in a lab's latency check) to compare with the beat times the metronome reported.
"""

from __future__ import annotations

import math

import numpy as np

from labsuite.errors import ConfigError

DEFAULT_MIN_GAP_S = 0.1
DEFAULT_FRACTION = 0.1
DEFAULT_MIN_LEVEL = 0.01  # -40 dB re full scale: quieter than any click, louder than a quiet room
_LOCAL_WINDOW_S = 0.005


def detect_onsets(samples: np.ndarray, rate_hz: float, *, min_gap_s: float = DEFAULT_MIN_GAP_S,
                  fraction: float = DEFAULT_FRACTION,
                  min_level: float = DEFAULT_MIN_LEVEL) -> np.ndarray:
    """Return the sample index of every click onset in ``samples`` ((n,) or (n, channels), full scale 1).

    A click is found where the loudest channel's magnitude rises above ``min_level`` (and above six
    times the noise floor) after at least ``min_gap_s`` below it; its onset is the first sample that
    reaches ``fraction`` of that click's own peak (within 5 ms of that rise), so loud and quiet clicks
    of one shape get the same fixed delay after their first sample.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or not len(x):
        raise ConfigError(f"detect_onsets: expected (n,) or (n, channels) samples, got shape {x.shape}")
    if not (math.isfinite(rate_hz) and rate_hz > 0):
        raise ConfigError(f"detect_onsets: rate_hz must be > 0, got {rate_hz!r}")
    if not 0 < fraction < 1:
        raise ConfigError(f"detect_onsets: fraction must be between 0 and 1, got {fraction!r}")
    mag = np.max(np.abs(x), axis=1)
    noise = float(np.median(mag)) / 0.6745  # robust sigma of the quiet majority of samples
    level = max(min_level, 6.0 * noise)
    loud = np.flatnonzero(mag > level)
    if not len(loud):
        return np.empty(0, dtype=np.int64)
    gap = max(1, round(min_gap_s * rate_hz))
    starts = loud[np.concatenate([[True], np.diff(loud) > gap])]
    window = max(1, round(_LOCAL_WINDOW_S * rate_hz))
    onsets = np.empty(len(starts), dtype=np.int64)
    for i, s in enumerate(starts):
        # look back too: a quiet click reaches its own fraction before it passes ``level``
        lo = max(0, s - window)
        seg = mag[lo:s + window]
        onsets[i] = lo + int(np.argmax(seg >= fraction * seg.max()))
    return onsets
