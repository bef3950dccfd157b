"""The belt as the session commanded it and as the treadmill says it runs: ramps, comparison, faults.

The stage machine (``machine.py``) records every speed it commands in a :class:`BeltPlan` and feeds
the treadmill stream's measured speeds to a :class:`BeltWatch`, which says when the belt left the
commanded speed without being told to (a driver watchdog, a hardware e-stop, a controller fault)
and over which interval, so the steps taken then are left out of baselines and targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# A measured speed counts as commanded when it lies within the speeds the plan passed through over
# the last LAG_S seconds (a command takes time to reach the driver and the belt to answer), give or
# take TOLERANCE_M_S (belt speed dips under each foot strike on a real treadmill).
LAG_S = 1.5
TOLERANCE_M_S = 0.25
# Off the commanded speed this long (sample time) is a fault: one stray frame is not.
CONFIRM_S = 0.3
# Within this of the plan's speed at the sample's own time the belt is "on speed": the last such
# sample before a fault opens the interval whose steps are left out (at most LOOKBACK_S before it).
ON_SPEED_M_S = 0.05
LOOKBACK_S = 2.0
# No treadmill sample for this long while the belt is meant to move: the driver is gone.
SILENT_S = 1.0


@dataclass(frozen=True)
class _Ramp:
    t0_s: float
    from_m_s: float
    to_m_s: float
    rate_m_s2: float

    def at(self, t_s: float) -> float:
        step = self.rate_m_s2 * max(0.0, t_s - self.t0_s)
        delta = self.to_m_s - self.from_m_s
        return self.to_m_s if abs(delta) <= step else self.from_m_s + math.copysign(step, delta)

    @property
    def reached_s(self) -> float:
        """When the ramp reaches its target."""
        return self.t0_s + abs(self.to_m_s - self.from_m_s) / self.rate_m_s2


class BeltPlan:
    """The speeds the session commanded: one ramp per command, each from where the last one was."""

    def __init__(self, rate_m_s2: float) -> None:
        self._ramps: list[_Ramp] = [_Ramp(-math.inf, 0.0, 0.0, rate_m_s2)]

    @property
    def target_m_s(self) -> float:
        """The speed last commanded."""
        return self._ramps[-1].to_m_s

    def command(self, t_s: float, speed_m_s: float, rate_m_s2: float) -> float:
        """Record a command at ``t_s``: ramp towards ``speed_m_s`` at ``rate_m_s2``; return the speed now."""
        now = self.at(t_s)
        self._ramps.append(_Ramp(t_s, now, float(speed_m_s), float(rate_m_s2)))
        # only the last LAG_S matter for comparisons; keep a few more
        while len(self._ramps) > 2 and self._ramps[1].t0_s < t_s - 10 * LAG_S:
            self._ramps.pop(0)
        return now

    def _ramp_at(self, t_s: float) -> _Ramp:
        for ramp in reversed(self._ramps):
            if ramp.t0_s <= t_s:
                return ramp
        return self._ramps[0]

    def at(self, t_s: float) -> float:
        """The speed the commands sent up to ``t_s`` ask for at ``t_s`` (ramps included), m/s."""
        return self._ramp_at(t_s).at(t_s)

    def envelope(self, t0_s: float, t1_s: float) -> tuple[float, float]:
        """The lowest and highest speed the plan asks for between ``t0_s`` and ``t1_s``."""
        times = [t0_s, t1_s]
        for ramp in self._ramps:
            for t in (ramp.t0_s, ramp.reached_s):
                if t0_s < t < t1_s:
                    times.append(t)
        # just before each command the previous ramp still held
        speeds = [self.at(t) for t in times] + [self.at(t - 1e-9) for t in times[2:]]
        return min(speeds), max(speeds)


@dataclass(frozen=True)
class OffSpeed:
    """The belt left its commanded speed: why, when it was last on speed, and the speeds then."""

    reason: str  # off_speed, treadmill_silent, or the driver's event (treadmill_watchdog_stop ...)
    detail: str
    since_s: float  # start of the interval whose steps are left out
    commanded_m_s: float
    measured_m_s: float


class BeltWatch:
    """Compare the treadmill's measured speeds with a :class:`BeltPlan` and report faults.

    Feed it every treadmill sample (:meth:`samples`) and call :meth:`silent` on each tick. After a
    fault it stays quiet until :meth:`clear` (the session resumed): one fault, one event.
    """

    def __init__(self, plan: BeltPlan) -> None:
        self.plan = plan
        self.fault: OffSpeed | None = None
        self.last_sample_s = -math.inf
        self.measured_m_s = math.nan
        self._off_since_s = math.nan  # first sample of the current run off the commanded speed
        self._on_speed_s = math.nan  # last sample on the plan's speed

    def clear(self, now_s: float) -> None:
        """Watch afresh from ``now_s`` (after a resume)."""
        self.fault = None
        self._off_since_s = math.nan
        self._on_speed_s = now_s

    def samples(self, ts: np.ndarray, speeds_m_s: np.ndarray) -> OffSpeed | None:
        """Check treadmill samples (times on this machine's clock, one column per belt), oldest first.

        Returns the fault found now (None if none, or one was already reported).
        """
        speeds = np.atleast_2d(np.asarray(speeds_m_s, dtype=np.float64))
        found = None
        for t, row in zip(np.asarray(ts, dtype=np.float64), speeds, strict=True):
            t = float(t)
            if not (t > self.last_sample_s):  # out of order, or NaN: not comparable
                continue
            self.last_sample_s = t
            finite = row[np.isfinite(row)]
            if not len(finite):
                continue
            self.measured_m_s = float(np.mean(finite))
            if self.fault is not None:
                continue
            low, high = self.plan.envelope(t - LAG_S, t)
            worst = float(finite[np.argmax(np.abs(finite - self.plan.at(t)))])
            if low - TOLERANCE_M_S <= worst <= high + TOLERANCE_M_S:
                self._off_since_s = math.nan
                if abs(worst - self.plan.at(t)) <= ON_SPEED_M_S:
                    self._on_speed_s = t
                continue
            if not math.isfinite(self._off_since_s):
                self._off_since_s = t
            if t - self._off_since_s >= CONFIRM_S and found is None:
                commanded = self.plan.at(t)
                found = self._raise(
                    "off_speed", f"belt at {worst:.2f} m/s for {t - self._off_since_s:.2f} s while "
                    f"the session commanded {commanded:.2f} m/s (expected {low:.2f}-{high:.2f} m/s "
                    f"within {TOLERANCE_M_S:g} m/s); nobody here asked for that change",
                    self._off_since_s, commanded, worst)
        return found

    def event(self, t_s: float, reason: str, detail: str) -> OffSpeed | None:
        """The treadmill driver said it stopped the belt by itself (its watchdog, a feedback fault).

        None when the belt was meant to stand still and does: the driver stopped nothing.
        """
        if self.fault is not None:
            return None
        still = not (abs(self.measured_m_s) > TOLERANCE_M_S)  # NaN (no speed yet) counts as still
        if still and self.plan.envelope(t_s - LAG_S, t_s)[1] <= 0:
            return None
        return self._raise(reason, detail, t_s, self.plan.at(t_s), self.measured_m_s)

    def silent(self, now_s: float) -> OffSpeed | None:
        """No treadmill sample for :data:`SILENT_S` while the belt is meant to move: a fault."""
        if self.fault is not None or not math.isfinite(self.last_sample_s):
            return None
        quiet_s = now_s - self.last_sample_s
        if quiet_s <= SILENT_S or self.plan.envelope(self.last_sample_s, now_s)[1] <= 0:
            return None
        return self._raise("treadmill_silent", f"no treadmill speed for {quiet_s:.2f} s (limit "
                           f"{SILENT_S:g} s) while the belt should run: the driver stopped or died",
                           self.last_sample_s, self.plan.at(now_s), math.nan)

    def _raise(self, reason: str, detail: str, off_since_s: float, commanded: float,
               measured: float) -> OffSpeed:
        since = off_since_s
        if math.isfinite(self._on_speed_s):
            since = max(min(self._on_speed_s, off_since_s), off_since_s - LOOKBACK_S)
        self.fault = OffSpeed(reason, detail, since, commanded, measured)
        return self.fault
