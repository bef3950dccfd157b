"""Programme rules between sessions: the progression decision before a session, a recheck's verdict.

Pure functions over plain records: the composition root (``labsuite/lab/run.py``) reads the
participant's programme state (``labsuite/programme_state.py``), asks :func:`decide` what this
session's cadence step is and hands the :class:`ProgrammeContext` to the stage machine, which
publishes the decision and, at the end of a recheck, :func:`recheck_verdict` as markers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from labsuite import markers as mk
from labsuite.protocol.schema import Progression, Rechecks
from labsuite.stages import StageRecord

KIND_TRAINING = "training"
KIND_RECHECK = "recheck"

ACTION_FIXED = "fixed"  # no progression in the file: targets as written
ACTION_FIRST = "first"
ACTION_ADVANCE = "advance"
ACTION_HOLD = "hold"
ACTION_STEP_BACK = "step_back"
ACTION_RECHECK = "recheck"
ACTIONS = (ACTION_FIXED, ACTION_FIRST, ACTION_ADVANCE, ACTION_HOLD, ACTION_STEP_BACK, ACTION_RECHECK)

PAIN_ACTIONS = ("pause", "stop")  # a check-in whose rule did this means "a pain rule fired"


@dataclass(frozen=True)
class Baseline:
    """The programme's first baseline (NaN / None when not measured)."""

    cadence_spm: float
    valr_bw_per_s: float = math.nan
    vilr_bw_per_s: float = math.nan
    tibial_peak_g: float = math.nan
    contact_s: float = math.nan
    strike_pattern: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What one session left for the next decision: its retention and whether a pain rule fired.

    ``retention_*`` are the last retention stage's (the stage machine's summary: in-band share of
    all its steps, cadence and VALR of its last 30 steps); NaN when the session had none.
    """

    retention_in_band_pct: float = math.nan
    retention_cadence_spm: float = math.nan
    retention_valr_bw_per_s: float = math.nan
    retention_target_spm: float = math.nan
    pain_rule_fired: bool = False
    pain_detail: str = ""
    end_reason: str = ""


@dataclass(frozen=True)
class Decision:
    """The progression step of a session and why (``step_index`` None without a progression)."""

    action: str
    step_index: int | None
    step_percent: float
    reason: str


@dataclass(frozen=True)
class RecheckPlan:
    """What a recheck compares with: the retrained target and VALR, the programme baseline."""

    number: int
    rules: Rechecks
    retrained_target_spm: float
    retrained_valr_bw_per_s: float
    due_utc: str = ""


@dataclass(frozen=True)
class ProgrammeContext:
    """Everything the stage machine needs from the programme for one session."""

    kind: str
    decision: Decision
    baseline: Baseline | None
    sessions_done: int
    recheck: RecheckPlan | None = None


@dataclass(frozen=True)
class Verdict:
    """A recheck's result: share of the cadence gain lost, VALR rise, regression flag and why."""

    cadence_spm: float
    valr_bw_per_s: float
    gain_lost_pct: float
    valr_rise_pct: float
    regression: bool
    reason: str


def _pct(v: float) -> str:
    return f"{v:+g} %"


def decide(progression: Progression | None, *, sessions_done: int, step_index: int | None,
           last: Outcome | None, last_number: int | None = None) -> Decision:
    """The cadence step of the next training session from the last one's outcome.

    First session (or no step yet): the first step. Then: a pain rule fired in the last session
    → one step back (``on_pain: step_back``, never below the first) or hold; the last retention
    had at least ``advance_in_band_percent`` of its steps in the band → advance one step (hold at
    the last); fewer, or no scored retention → hold.
    """
    if progression is None:
        return Decision(ACTION_FIXED, None, math.nan,
                        "the protocol has no progression: the targets as written")
    steps = list(progression.steps_percent)
    if sessions_done <= 0 or step_index is None or last is None:
        return Decision(ACTION_FIRST, 0, steps[0],
                        f"first session of the programme: step 1 of {len(steps)} ({_pct(steps[0])})")
    i = min(max(int(step_index), 0), len(steps) - 1)
    which = f"session {last_number}" if last_number is not None else "the last session"
    if last.pain_rule_fired:
        detail = f" ({last.pain_detail})" if last.pain_detail else ""
        if progression.on_pain == "step_back" and i > 0:
            return Decision(ACTION_STEP_BACK, i - 1, steps[i - 1],
                            f"a pain rule fired in {which}{detail}: one step back to step {i} "
                            f"({_pct(steps[i - 1])})")
        return Decision(ACTION_HOLD, i, steps[i],
                        f"a pain rule fired in {which}{detail}: hold at step {i + 1} "
                        f"({_pct(steps[i])})")
    crit = progression.advance_in_band_percent
    got = last.retention_in_band_pct
    if not math.isfinite(got):
        return Decision(ACTION_HOLD, i, steps[i],
                        f"{which} has no scored retention (no retention stage with steps in a "
                        f"band): hold at step {i + 1} ({_pct(steps[i])})")
    if got >= crit:
        if i + 1 < len(steps):
            return Decision(ACTION_ADVANCE, i + 1, steps[i + 1],
                            f"retention in {which}: {got:.0f} % of steps in band >= {crit:g} %: "
                            f"advance to step {i + 2} ({_pct(steps[i + 1])})")
        return Decision(ACTION_HOLD, i, steps[i],
                        f"retention in {which}: {got:.0f} % of steps in band >= {crit:g} %, "
                        f"already at the last step {i + 1} ({_pct(steps[i])}): hold")
    return Decision(ACTION_HOLD, i, steps[i],
                    f"retention in {which}: {got:.0f} % of steps in band < {crit:g} %: "
                    f"hold at step {i + 1} ({_pct(steps[i])})")


def recheck_verdict(plan: RecheckPlan, baseline_cadence_spm: float, cadence_spm: float,
                    valr_bw_per_s: float) -> Verdict:
    """Compare a recheck with the retrained state; a regression when either limit is passed.

    Gain lost: 100 · (1 − (recheck cadence − baseline) / (retrained target − baseline)); VALR
    rise: 100 · (recheck VALR / retrained VALR − 1). NaN parts cannot flag (and say so).
    """
    rules = plan.rules
    gain = plan.retrained_target_spm - baseline_cadence_spm
    lost = math.nan
    if math.isfinite(gain) and gain > 0 and math.isfinite(cadence_spm):
        lost = 100.0 * (1.0 - (cadence_spm - baseline_cadence_spm) / gain)
    rise = math.nan
    ref = plan.retrained_valr_bw_per_s
    if math.isfinite(ref) and ref > 0 and math.isfinite(valr_bw_per_s):
        rise = 100.0 * (valr_bw_per_s / ref - 1.0)
    reasons = []
    if math.isfinite(lost) and lost > rules.max_gain_lost_percent:
        reasons.append(f"lost {lost:.0f} % of the cadence gain (limit {rules.max_gain_lost_percent:g} %):"
                       f" {cadence_spm:.1f} spm vs retrained {plan.retrained_target_spm:.1f}, "
                       f"baseline {baseline_cadence_spm:.1f}")
    if math.isfinite(rise) and rise > rules.max_valr_rise_percent:
        reasons.append(f"VALR {rise:+.0f} % vs the retrained {ref:.1f} BW/s "
                       f"(limit +{rules.max_valr_rise_percent:g} %)")
    unknown = [what for what, v in (("cadence gain", lost), ("VALR", rise)) if not math.isfinite(v)]
    if reasons:
        reason = "regression: " + "; ".join(reasons)
    else:
        reason = (f"kept: {_fmt(100 - lost if math.isfinite(lost) else math.nan)} % of the cadence "
                  f"gain, VALR {_fmt(rise, '+.0f')} % vs retrained")
    if unknown:
        reason += f" ({', '.join(unknown)} not measurable)"
    return Verdict(cadence_spm, valr_bw_per_s, lost, rise, bool(reasons), reason)


def _fmt(v: float, spec: str = ".0f") -> str:
    return format(v, spec) if math.isfinite(v) else "-"


def outcome(records: Sequence[StageRecord], checkins: Iterable[tuple[float, mk.Checkin]],
            end_reason: str) -> Outcome:
    """A finished session's :class:`Outcome` from its stage records and check-ins."""
    import json

    fired = [c for _, c in checkins if c.action in PAIN_ACTIONS]
    detail = ", ".join(f"pain {c.pain} -> {c.action}" for c in fired)
    retention = [r for r in records if r.kind == "retention"]
    if not retention:
        return Outcome(pain_rule_fired=bool(fired), pain_detail=detail, end_reason=end_reason)
    last = retention[-1]
    summary: dict[str, Any] = json.loads(last.summary_json or "{}")

    def num(key: str, scale: float = 1.0) -> float:
        v = summary.get(key)
        return math.nan if v is None else float(v) * scale

    in_band = num("in_band_fraction", 100.0) if summary.get("n_steps") else math.nan
    return Outcome(retention_in_band_pct=in_band, retention_cadence_spm=num("cadence_spm"),
                   retention_valr_bw_per_s=num("valr_bw_per_s"),
                   retention_target_spm=last.target_cadence_spm, pain_rule_fired=bool(fired),
                   pain_detail=detail, end_reason=end_reason)
