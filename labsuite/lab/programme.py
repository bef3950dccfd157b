"""A run's place in its programme: read the state before the session, decide, write it after.

``labsuite run`` (:mod:`labsuite.lab.run`) calls :func:`setup` before anything starts (the decision
and, for a recheck, its protocol) and :func:`record` once the session ended. The rules are
:mod:`labsuite.protocol.progression`; the file is :mod:`labsuite.programme_state`.
"""

from __future__ import annotations

import calendar
import math
import time
from dataclasses import dataclass
from pathlib import Path

from labsuite import markers as mk
from labsuite import programme_state as ps
from labsuite.errors import ConfigError
from labsuite.protocol import progression as prog
from labsuite.protocol.schema import PROGRAMME_BASELINE, Protocol, recheck_protocol
from labsuite.stages import StageRecord


@dataclass(frozen=True)
class ProgrammeSetup:
    """What :func:`setup` decided: the context for the stage machine, the state and its file."""

    context: prog.ProgrammeContext
    state: ps.ProgrammeState
    path: Path
    protocol: Protocol  # the protocol as this session runs it (a recheck's own)
    programme_session: int | None


def uses_programme(protocol: Protocol) -> bool:
    """True when the protocol is a programme or a target is relative to the programme baseline."""
    if protocol.programme is not None:
        return True
    return any(getattr(s, "target_percent", None) is not None
               and getattr(s, "of", None) == PROGRAMME_BASELINE for s in protocol.stages)


def programme_name(protocol: Protocol) -> str:
    """The name the state file keeps (the protocol's: one programme per participant and folder)."""
    return protocol.name


def setup(file_protocol: Protocol, *, participant_id: str, folder: Path, session: int | None,
          recheck: bool) -> ProgrammeSetup | None:
    """Read the participant's state in ``folder`` and decide this session; None outside programmes.

    ``file_protocol`` is the protocol file as read (not yet resolved for a session). ConfigError
    for a damaged or foreign state file, a recheck without a finished training session, or a
    recheck the programme does not plan.
    """
    if not uses_programme(file_protocol):
        if recheck:
            raise ConfigError(f"--recheck: protocol {file_protocol.name!r} is no programme "
                              "(expected programme.rechecks in the file)")
        return None
    path = ps.state_path(folder, participant_id)
    state = ps.load_state(path, participant_id=participant_id, protocol=programme_name(file_protocol)) \
        or ps.new_state(participant_id, programme_name(file_protocol))
    progression = file_protocol.programme.progression if file_protocol.programme else None
    if recheck:
        return _setup_recheck(file_protocol, state, path)
    protocol = file_protocol.for_session(session)
    decision = prog.decide(progression, sessions_done=state.sessions_done,
                           step_index=state.step_index, last=state.last_outcome(),
                           last_number=state.last_training.session if state.last_training else None)
    context = prog.ProgrammeContext(kind=prog.KIND_TRAINING, decision=decision,
                                    baseline=state.programme_baseline(),
                                    sessions_done=state.sessions_done)
    return ProgrammeSetup(context, state, path, protocol, session)


def _setup_recheck(file_protocol: Protocol, state: ps.ProgrammeState, path: Path) -> ProgrammeSetup:
    rules = file_protocol.programme.rechecks if file_protocol.programme else None
    if rules is None:
        raise ConfigError(f"--recheck: protocol {file_protocol.name!r} plans no rechecks "
                          "(expected programme.rechecks in the file)")
    last = state.last_training
    if state.baseline is None or last is None or last.target_spm is None:
        raise ConfigError(f"--recheck: {path} holds no finished training session with a retention "
                          "target and a programme baseline yet; a recheck compares with them")
    number = state.rechecks_done + 1
    if number > len(rules.after_days):
        raise ConfigError(f"--recheck: the programme plans {len(rules.after_days)} rechecks and "
                          f"{state.rechecks_done} are done ({path})")
    due = ""
    if state.last_training_utc:
        t = calendar.timegm(time.strptime(state.last_training_utc, "%Y-%m-%dT%H:%M:%SZ"))
        due = time.strftime("%Y-%m-%d", time.gmtime(t + rules.after_days[number - 1] * 86400))
    plan = prog.RecheckPlan(number=number, rules=rules, retrained_target_spm=float(last.target_spm),
                            retrained_valr_bw_per_s=math.nan if last.valr_bw_per_s is None
                            else float(last.valr_bw_per_s), due_utc=due)
    when = f", due {due}" if due else ""
    decision = prog.Decision(prog.ACTION_RECHECK, state.step_index, math.nan,
                             f"recheck {number} of {len(rules.after_days)} "
                             f"({rules.after_days[number - 1]:g} days after the last training "
                             f"session{when}): no cues, compared with the retrained "
                             f"{last.target_spm:.1f} spm")
    context = prog.ProgrammeContext(kind=prog.KIND_RECHECK, decision=decision,
                                    baseline=state.programme_baseline(),
                                    sessions_done=state.sessions_done, recheck=plan)
    protocol = recheck_protocol(file_protocol, target_spm=float(last.target_spm))
    return ProgrammeSetup(context, state, path, protocol, None)


def record(ps_setup: ProgrammeSetup, *, records: list[StageRecord], view: mk.SessionState,
           end_reason: str, session_file: Path | None) -> ps.ProgrammeState:
    """Write the state after the session: baseline (the first), step, retention, history."""
    state, ctx = ps_setup.state, ps_setup.context
    d = ctx.decision
    now = ps.utc_now()
    entry = {"kind": ctx.kind, "session": ps_setup.programme_session,
             "recheck": ctx.recheck.number if ctx.recheck else None,
             "file": session_file.name if session_file is not None else None, "date_utc": now,
             "action": d.action, "step": d.step_index + 1 if d.step_index is not None else None,
             "step_percent": ps.num(d.step_percent), "reason": d.reason, "end_reason": end_reason}
    changes: dict[str, object] = {}
    if ctx.kind == prog.KIND_RECHECK:
        r = view.recheck
        entry["regression"] = None if r is None else r.regression
        entry["regression_reason"] = "" if r is None else r.reason
        if r is not None:
            changes["rechecks_done"] = state.rechecks_done + 1
    else:
        out = prog.outcome(records, view.checkins, end_reason)
        b = view.baseline
        if state.baseline is None and b is not None and b.ok and math.isfinite(b.cadence_spm):
            changes["baseline"] = ps.BaselineRecord(
                cadence_spm=b.cadence_spm, valr_bw_per_s=ps.num(b.valr_bw_per_s),
                vilr_bw_per_s=ps.num(b.vilr_bw_per_s), tibial_peak_g=ps.num(b.tibial_peak_g),
                contact_s=ps.num(b.contact_s),
                strike_pattern=b.strike_pattern if b.strike_pattern in (
                    "rearfoot", "midfoot", "forefoot") else None,  # type: ignore[arg-type]
                session=ps_setup.programme_session,
                file=session_file.name if session_file is not None else None,
                date_utc=now).model_dump()
        changes.update(
            sessions_done=state.sessions_done + 1, step_index=d.step_index,
            last_training=ps.RetentionRecord(
                session=ps_setup.programme_session, in_band_pct=ps.num(out.retention_in_band_pct),
                cadence_spm=ps.num(out.retention_cadence_spm),
                valr_bw_per_s=ps.num(out.retention_valr_bw_per_s),
                target_spm=ps.num(out.retention_target_spm), pain_rule_fired=out.pain_rule_fired,
                pain_detail=out.pain_detail, end_reason=end_reason).model_dump(),
            last_training_utc=now)
    history = [h.model_dump() for h in state.history] + [entry]
    new = ps.updated(state, **changes, history=history)
    ps_setup.path.parent.mkdir(parents=True, exist_ok=True)
    ps.save_state(ps_setup.path, new)
    return new
