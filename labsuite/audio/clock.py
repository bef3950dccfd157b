"""The output stream's clocks: when a sample frame leaves the DAC, and that instant on the LSL clock.

:class:`DacClock` fits the PortAudio callbacks' (first frame, ``outputBufferDacTime``) pairs so a
click's frame gets a DAC time free of per-callback jitter; a jump (an underflow, a restarted device)
starts a new segment so frames written before it keep the times they were played at.
:class:`ClockMapper` maps the stream's clock onto ``pylsl.local_clock`` by paired readings: PortAudio
19.6 on Linux (ALSA) stamps with ``gettimeofday`` (CLOCK_REALTIME, which NTP slews and steps) while LSL
uses the monotonic clock, so they are different clocks (measured offset 1.8e9 s, the boot-to-epoch
time); the mapping is re-measured continually and works unchanged where they are the same clock.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_JUMP_S = 0.002
# PulseAudio's reported latency wanders by about +-0.6 ms over seconds (measured on the null sink)
# while the samples themselves play at a steady rate: a long fit averages the wander out.
DEFAULT_FIT_S = 30.0
CONFIRM_OBSERVATIONS = 3
# A stream is settled (its DAC times can be trusted) after this many observations in a row on one
# level during which the device consumed samples in real time. While PortAudio prefills the
# buffer the callbacks come back to back (all on one level: "play from now"), and PulseAudio may
# then start consuming 1.1-1.7 s later (measured on the null sink), so level alone is not enough.
SETTLED_OBSERVATIONS = 8
_RESIDUAL_SMOOTHING = 0.1
# Fit the DAC's rate against the stream clock only over a long baseline (0.6 ms of wander over 1 s
# would read as a 600 ppm rate error), and never beyond what a sound card's crystal can be off.
_MIN_SLOPE_SPAN_S = 10.0
_MAX_DRIFT = 300e-6
# Even over 10-30 s the reported times wander enough to read as a rate error: a whole simulated
# session at a load average of 11 had PulseAudio's reported DAC times trend by 1 ms over 10 s on a
# null sink that plays at exactly its nominal rate, and the plain least-squares slope (clamped at
# 300 ppm) then moved the clicks' reported times by 2 ms within 15 s against the recording. So the
# slope is shrunk towards the nominal rate (ridge regression, a prior on the crystal): a rate error
# counts in proportion to how much the baseline can tell it from the wander, var(x) / (var(x) + S0),
# with S0 = (wander / crystal spread)^2 = (0.5 ms / 50 ppm)^2 = 100 s^2: a 30 s window takes 43 %
# of the fitted slope, a 10 s one 8 %.
_SLOPE_PRIOR_S2 = (0.5e-3 / 50e-6) ** 2
_CAPACITY = 1 << 15
OUTLIER = -1


class DacClock:
    """Frame index -> DAC time on the stream clock, from one observation per audio callback.

    :meth:`observe` runs inside the audio callback (cheap, no fit) and returns the observation's
    number; :meth:`dac_time` runs on another thread and fits a line through the observations of the
    same segment within ``fit_s`` of the frame. An observation more than ``jump_s`` off the segment's
    level is held back as an outlier until ``CONFIRM_OBSERVATIONS`` in a row agree on a new level,
    which then starts a new segment (as does an underflow the device reports), so a single late
    timestamp neither moves a beat nor splits the segment.
    """

    def __init__(self, rate_hz: float, *, jump_s: float = DEFAULT_JUMP_S, fit_s: float = DEFAULT_FIT_S):
        self.rate_hz = float(rate_hz)
        self.jump_s = jump_s
        self.fit_s = fit_s
        self.segment = 0
        self.count = 0  # observations so far
        self._frame = np.zeros(_CAPACITY, dtype=np.int64)
        self._dac = np.zeros(_CAPACITY, dtype=np.float64)
        self._label = np.zeros(_CAPACITY, dtype=np.int64)
        self._now = np.zeros(_CAPACITY, dtype=np.float64)
        self._lock = threading.Lock()
        self._level = math.nan  # smoothed (dac - frame / rate) of the current segment
        self._candidates: list[tuple[int, float]] = []  # (observation number, residual)
        self.steady = 0  # observations in a row on the current level
        self._recent: deque[tuple[int, float]] = deque(maxlen=SETTLED_OBSERVATIONS)
        self._settled = False

    @property
    def settled(self) -> bool:
        """True once the current segment's timing can be trusted; see :meth:`_check_settled`."""
        return self._settled

    def _check_settled(self) -> None:
        # Latched per segment: the last observations agree and the device consumed them in real
        # time. An outlier does not unlatch it (it is only a late timestamp); a new segment does.
        if self._settled or self.steady < SETTLED_OBSERVATIONS or len(self._recent) < SETTLED_OBSERVATIONS:
            return
        (f0, t0), (f1, t1) = self._recent[0], self._recent[-1]
        self._settled = t1 - t0 >= 0.5 * (f1 - f0) / self.rate_hz

    @property
    def jumps(self) -> int:
        """Segments started after the first (underflows and confirmed jumps)."""
        return self.segment

    def observe(self, frame: int, dac_s: float, now_s: float, *, discontinuity: bool = False) -> int:
        """Record that ``frame`` leaves the DAC at ``dac_s`` (stream clock, read at ``now_s``).

        Returns this observation's number. ``discontinuity`` (an underflow reported by the device)
        starts a new segment here.
        """
        self._recent.append((frame, now_s))
        r = dac_s - frame / self.rate_hz
        k = self.count
        label = self.segment
        if math.isnan(self._level):
            self._level = r
            self.steady = 1
        elif discontinuity:
            self.segment += 1
            label = self.segment
            self._level = r
            self._candidates = []
            self.steady = 1
            self._settled = False
        elif abs(r - self._level) <= self.jump_s:
            self._level += _RESIDUAL_SMOOTHING * (r - self._level)
            self._candidates = []
            self.steady += 1
        else:
            self._candidates = [*self._candidates[-(CONFIRM_OBSERVATIONS - 1):], (k, r)]
            label = OUTLIER
            levels = [c[1] for c in self._candidates]
            if len(levels) == CONFIRM_OBSERVATIONS and max(levels) - min(levels) <= self.jump_s:
                self.segment += 1
                self._level = float(np.mean(levels))
                with self._lock:
                    for j, _ in self._candidates[:-1]:
                        self._label[j % _CAPACITY] = self.segment
                label = self.segment
                self._candidates = []
                self.steady = CONFIRM_OBSERVATIONS
                self._settled = False
        self._check_settled()
        i = k % _CAPACITY
        with self._lock:
            self._frame[i] = frame
            self._dac[i] = dac_s
            self._label[i] = label
            self._now[i] = now_s
            self.count = k + 1
        return k

    def segment_of(self, observation: int) -> int:
        """The segment an observation belongs to (an outlier takes its last good predecessor's)."""
        with self._lock:
            lo = max(0, self.count - _CAPACITY)
            for j in range(observation, lo - 1, -1):
                label = int(self._label[j % _CAPACITY])
                if label != OUTLIER:
                    return label
        return 0

    def first_after(self, stream_s: float) -> int | None:
        """The first observation made at or after ``stream_s`` (stream clock), None if none yet."""
        with self._lock:
            lo = max(0, self.count - _CAPACITY)
            if self.count == 0 or self._now[(self.count - 1) % _CAPACITY] < stream_s:
                return None
            ks = np.arange(lo, self.count)
            later = ks[self._now[ks % _CAPACITY] >= stream_s]
            return int(later[0])

    def dac_time(self, frame: int, segment: int) -> float:
        """Return the stream-clock time at which ``frame`` (of ``segment``) leaves the DAC (NaN if unseen)."""
        with self._lock:
            n = min(self.count, _CAPACITY)
            keep = self._label[:n] == segment
            frames = self._frame[:n][keep].astype(np.float64)
            dacs = self._dac[:n][keep].copy()
        if not len(frames):
            return math.nan
        near = (frames >= frame - self.fit_s * self.rate_hz)
        if near.sum() >= 1:
            frames, dacs = frames[near], dacs[near]
        ref = int(np.argmax(frames))
        ref_frame, ref_dac = frames[ref], dacs[ref]
        x = (frames - ref_frame) / self.rate_hz
        y = dacs - ref_dac - x  # residual of the nominal rate: small numbers, full precision
        if np.ptp(x) >= _MIN_SLOPE_SPAN_S:
            slope = float(np.clip(shrunk_slope(x, y, _SLOPE_PRIOR_S2), -_MAX_DRIFT, _MAX_DRIFT))
            intercept = float(np.mean(y - slope * x))
        else:
            # a short baseline cannot tell a rate error from the wander: take the nominal rate
            slope, intercept = 0.0, float(np.mean(y))
        xf = (frame - ref_frame) / self.rate_hz
        return float(ref_dac + xf + intercept + slope * xf)


def shrunk_slope(x: np.ndarray, y: np.ndarray, prior_s2: float) -> float:
    """The least-squares slope of ``y`` on ``x`` shrunk towards 0: cov(x, y) / (var(x) + prior_s2).

    Ridge regression on centred data: the slope that minimises sum((y - a - b x)^2) / n +
    prior_s2 * b^2; ``prior_s2`` = 0 gives the plain least-squares slope.
    """
    xc = x - x.mean()
    return float(np.mean(xc * (y - y.mean())) / (np.mean(xc * xc) + prior_s2))


class ClockMapper:
    """Stream clock -> LSL clock by paired readings (``read_stream_s`` sandwiched by ``local_clock``).

    :meth:`measure` keeps the tightest of a few sandwiches; call it periodically (the metronome does,
    every ``period_s``). A change of the offset by more than ``step_s`` between readings is a clock
    step (NTP setting the wall clock): counted and logged, and later times use the new offset.
    """

    def __init__(self, read_stream_s: Callable[[], float], read_lsl_s: Callable[[], float], *,
                 step_s: float = 0.001) -> None:
        self._read_stream_s = read_stream_s
        self._read_lsl_s = read_lsl_s
        self.step_s = step_s
        self.offset_s = math.nan  # stream time - LSL time
        self.uncertainty_s = math.nan
        self.steps = 0
        self.readings = 0

    def measure(self, tries: int = 5) -> float:
        """Take ``tries`` paired readings; keep the tightest; return the offset (stream - LSL), s."""
        best_width = math.inf
        best = math.nan
        for _ in range(tries):
            a = self._read_lsl_s()
            s = self._read_stream_s()
            b = self._read_lsl_s()
            if b - a < best_width:
                best_width, best = b - a, s - 0.5 * (a + b)
        if not math.isfinite(best):
            return self.offset_s
        if math.isfinite(self.offset_s) and abs(best - self.offset_s) > max(self.step_s, 2 * best_width):
            self.steps += 1
            log.warning("audio stream clock stepped by %.3f ms against the LSL clock",
                        1e3 * (best - self.offset_s))
        self.offset_s = best
        self.uncertainty_s = 0.5 * best_width
        self.readings += 1
        return best

    def to_lsl(self, stream_s: float) -> float:
        """Map a stream-clock time onto the LSL clock (NaN before the first reading)."""
        return stream_s - self.offset_s
