"""The session's events: one definition each, encoded and decoded, folded by one reducer."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
from test_protocol_machine import Lab, protocol

from labsuite import markers as mk
from labsuite.errors import DeviceError
from labsuite.protocol.machine import SessionMachine
from labsuite.stages import StageRecord

REPO = Path(__file__).resolve().parents[1]
# labsuite's own vocabulary (this file registers a kind of its own, to show how one is added)
KINDS = {n: c for n, c in mk.event_kinds().items() if c.__module__ == "labsuite.markers"}

_VALUES = {"float": 2.5, "int": 7, "str": "x y", "bool": True, "float | None": 171.5,
           "int | None": 3, "str | None": "base", "tuple[str, ...]": ("resume", "abort")}


def _sample(cls: type[mk.Marker]) -> mk.Marker:
    """An instance of ``cls`` whose every field differs from its default."""
    if cls is mk.StageEnd:
        return mk.StageEnd(record=StageRecord(2, "up", "cadence", 10.0, 70.5, 170.0, 165.0, 175.0,
                                              3.0, "time", '{"metronome": {}}', '{"n_steps": 3}'))
    kwargs = {f.name: _VALUES[str(f.type)] for f in dataclasses.fields(cls)
              if f.name not in ("extra", "problems")}
    return cls(**kwargs)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_event_round_trips_through_its_json(name):
    cls = KINDS[name]
    marker = _sample(cls)
    text = marker.encode()
    obj = json.loads(text)
    assert obj["event"] == name and list(obj)[1:] == list(marker.fields())
    back = mk.decode(text, strict=True)
    assert type(back) is cls and back == marker and back.problems == () and dict(back.extra) == {}
    # defaults (NaN as null) survive too, and decode to an equal marker
    empty = mk.decode(cls().encode(), strict=True)
    assert type(empty) is cls and empty.encode() == cls().encode()


def test_every_event_and_field_is_in_the_protocol_docs():
    text = (REPO / "docs" / "protocols.md").read_text()
    rows = {}
    for line in text.splitlines():
        names = re.match(r"^\| ((?:`[a-z_]+`(?: / )?)+) \| (.*) \|$", line)
        if names:
            for name in re.findall(r"`([a-z_]+)`", names.group(1)):
                rows[name] = names.group(2)
    for name, cls in KINDS.items():
        assert name in rows, f"docs/protocols.md has no row for the {name!r} marker"
        if cls is mk.StageEnd:  # documented as the stage record
            assert "StageRecord" in rows[name]
            continue
        for f in _sample(cls).fields():
            assert f"`{f}`" in rows[name], f"docs/protocols.md: marker {name!r} lacks field {f!r}"


def _run_a_session() -> Lab:
    """A session that pauses, resumes, skips, asks and answers, loses devices, ends by a safety stop."""
    m = SessionMachine(protocol("""\
  - {name: stand, kind: quiet_standing, duration_s: 4}
  - {name: base, kind: baseline, duration_s: 20, measure_last_steps: 20}
  - {name: up, kind: cadence, duration_s: 30, target_percent: 5,
     cues: {metronome: {spm: target}, visual_band: true}}
  - {name: cool, kind: retention, duration_s: 30}
""", "checkins: {at_start: true, at_stage_boundaries: true, pause_at: 5, stop_at: 9, stop_on_rise: 9}\n"
       "safety: {device_resume_timeout_s: 5}", auto_start=False))
    lab = Lab(m)
    lab.actions += m.answer_pain(lab.t, 0)
    lab.run(5)  # the weigh-in, then the belt waits for the operator
    lab.actions += m.start_belt(lab.t, source="cli")
    lab.run(25)
    lab.actions += m.pause(lab.t)
    lab.run(3)
    lab.actions += m.resume(lab.t)
    lab.run(5)
    # the treadmill stops the belt by itself: a belt fault pauses the stage
    lab.actions += m.note_treadmill_event(lab.t, "treadmill_watchdog_stop", "no heartbeat")
    lab.run(1)
    lab.actions += m.resume(lab.t)
    lab.run(2)
    lab.actions += m.request_checkin(lab.t)
    lab.actions += m.answer_pain(lab.t, 6)  # pause_at 5: pauses, asks the operator
    lab.run(1)
    lab.actions += m.resume(lab.t)
    lab.actions += m.skip(lab.t)
    lab.run(2)
    lab.force = False  # the force watchdog stops the belt and pauses the session
    lab.run(2)
    lab.force = True  # back: the operator resumes
    lab.run(1)
    lab.actions += m.resume(lab.t)
    lab.actions.append(m.marker(lab.t, mk.RecordingGap(part=2, file="x.part2.h5", lost_at_s=lab.t - 1,
                                                       gap_s=1.0, missed=('{"event":"paused"}',))))
    lab.run(2)
    lab.actions += m.device_lost(lab.t, "processor", "exited")  # never back: ends after 5 s
    lab.run(10)
    assert m.finished and m.end_reason == "safety_stop:device_lost"
    return lab


def test_the_machine_publishes_known_events_that_decode_to_themselves():
    lab = _run_a_session()
    published = [a for a in lab.actions if a.channel == "marker"]
    kinds = {a.name for a in published}
    # the run covers the session's vocabulary (emergency_stop has its own test below;
    # beat_disrupted is the audio role's; programme, recheck and drift a programme's and a drift
    # rule's, tests/test_programme.py)
    assert kinds >= set(KINDS) - {"emergency_stop", "beat_disrupted", "programme", "recheck", "drift"}, \
        set(KINDS) - kinds
    for a in published:
        back = mk.decode(a.text, strict=True)
        assert type(back) is type(a.marker) and back.encode() == a.text
        assert not isinstance(back, mk.Other) and back.problems == () and dict(back.extra) == {}
    assert all(a.marker is None for a in lab.actions if a.channel == "command")


def test_the_reducer_agrees_with_the_machine_that_published_the_markers():
    lab = _run_a_session()
    m = lab.m
    state = mk.replay((a.t_s, mk.decode(a.text)) for a in lab.actions if a.channel == "marker")
    assert state.state == "finished" and state.end_reason == m.end_reason
    assert state.records == tuple(m.records) and len(state.records) == 4
    assert state.stages_done == tuple((r.name, r.end_reason) for r in m.records)
    assert state.stages_done[2] == ("up", "skipped")
    assert state.baseline_valr_bw_per_s == pytest.approx(m.baseline_valr_bw_per_s)
    assert state.body_weight is not None
    assert state.body_weight.mass_kg == pytest.approx(m.body_mass_kg, abs=0.01)
    assert [c.pain for _, c in state.checkins] == [p for _, p, _ in m.pain] == [0, 6]
    assert state.pending_checkins == m.pending_checkins and len(state.pending_checkins) >= 2
    assert [type(e) for _, e in state.safety_events] == [mk.BeltFault] + [mk.SafetyStop] * 3
    assert [e.reason for _, e in state.safety_events[1:]] == ["force_timeout", "device_lost", "device_lost"]
    assert state.start_authorised is not None and state.start_authorised.source == "cli"
    assert state.alert.startswith("safety_stop: reason=device_lost")
    # the frequent kinds are folded but not listed; everything else is, in order
    assert not any(e.FREQUENT for _, e in state.events)
    assert state.beat_n == max(a.marker.n for a in lab.actions if isinstance(a.marker, mk.Beat))
    assert state.unknown == 0 and state.problems == 0
    # the machine folds its own markers with the same reducer
    assert m.view.records == state.records and m.view.end_reason == state.end_reason


def test_pause_time_is_left_out_of_the_stage_clock():
    s = mk.SessionState()
    s.apply(100.0, mk.StageStart(index=0, name="a", kind="cadence", duration_s=60.0))
    s.apply(110.0, mk.Paused(reason="operator", stage="a"))
    assert s.state == "paused" and s.time_left_s(130.0) == pytest.approx(50.0)
    s.apply(130.0, mk.Resumed(stage="a"))
    assert s.state == "running" and s.time_left_s(140.0) == pytest.approx(40.0)
    s.apply(150.0, mk.Paused(reason="pain", stage="a"))
    s.apply(150.0, mk.DecisionRequired(reason="pain", pain=6, options=("resume", "abort")))
    assert s.decision is not None and s.pause_reason == "pain"
    s.apply(160.0, mk.SessionEnd(reason="aborted"))
    assert s.state == "finished" and s.paused_s == pytest.approx(30.0) and s.decision is None
    # a new stage resets what belongs to a stage, not what belongs to the session
    s2 = mk.SessionState()
    s2.apply(0.0, mk.CheckinRequest(id=1))
    s2.apply(0.0, mk.Cue(stage="a", feedback_on=True, metronome_spm=170.0))
    s2.apply(5.0, mk.StageStart(index=1, name="b"))
    assert s2.pending_checkins == (1,) and not s2.feedback_on and s2.metronome_spm is None


def test_emergency_stop_and_a_new_safety_kind_need_no_reducer_of_their_own():
    s = mk.SessionState()
    s.apply(1.0, mk.EmergencyStop(source="gui"))
    s.apply(2.0, _BeltStoppedByItself(measured_m_s=0.2, commanded_m_s=3.0))
    assert [type(e) for _, e in s.safety_events] == [mk.EmergencyStop, _BeltStoppedByItself]
    assert s.alert == "test_belt_stopped: measured_m_s=0.2, commanded_m_s=3.0"
    back = mk.decode(_BeltStoppedByItself(measured_m_s=0.2, commanded_m_s=3.0).encode())
    assert isinstance(back, _BeltStoppedByItself) and back.safety


@dataclasses.dataclass(frozen=True)
class _BeltStoppedByItself(mk.Marker, event="test_belt_stopped", group=mk.GROUP_SAFETY):
    """A kind added later (here by the test): a class, and nothing else."""

    measured_m_s: float = math.nan
    commanded_m_s: float = math.nan


def test_an_event_name_cannot_be_defined_twice():
    with pytest.raises(TypeError, match="defined twice"):
        @dataclasses.dataclass(frozen=True)
        class Again(mk.Marker, event="beat"):
            pass


def test_decoding_is_lenient_by_default_and_strict_on_request():
    text = '{"event":"stage_start","index":"two","name":"up","duration_s":"long","target_cadence_spm":170}'
    m = mk.decode(text)
    assert isinstance(m, mk.StageStart) and m.name == "up" and m.target_cadence_spm == 170.0
    assert m.index == -1 and math.isnan(m.duration_s)  # the defaults
    assert len(m.problems) == 2 and "'index'" in m.problems[0] and "'long'" in m.problems[1]
    with pytest.raises(DeviceError, match=r"stage_start marker field 'index': expected an integer"):
        mk.decode(text, strict=True)
    # a stage_end without its times: lenient keeps the name, strict names the missing field
    assert mk.decode('{"event":"stage_end","name":"a","end_reason":"time"}').record.name == "a"
    with pytest.raises(DeviceError, match="lacks field 'index'"):
        mk.decode('{"event":"stage_end","name":"a","end_reason":"time"}', strict=True)
    with pytest.raises(DeviceError, match="not valid JSON"):
        mk.decode("{not json")
    assert isinstance(mk.decode("[1, 2]"), mk.Other)  # not an object: another program's text


def test_unknown_fields_and_events_are_kept_and_counted():
    newer = mk.decode('{"event":"beat","n":4,"spm":170,"dac_s":12.5}')
    assert isinstance(newer, mk.Beat) and newer.extra == {"dac_s": 12.5}
    assert json.loads(newer.encode()) == {"event": "beat", "n": 4, "spm": 170.0, "dac_s": 12.5}
    other = mk.decode('{"event":"from_another_app","x":1}')
    plain = mk.decode("trial 3 start")
    assert isinstance(other, mk.Other) and other.event == "from_another_app" and other.fields() == {"x": 1}
    assert isinstance(plain, mk.Other) and plain.event == "trial 3 start"
    s = mk.replay([(1.0, other), (2.0, plain), (3.0, mk.decode('{"event":"beat","n":"x"}'))])
    assert s.unknown == 2 and s.problems == 1 and [e.event for _, e in s.events] == [
        "from_another_app", "trial 3 start"]


def test_no_module_but_markers_defines_an_event_name():
    """Every ``EVENT_*`` constant naming a marker lives in labsuite/markers.py.

    Until labsuite/report.py reads markers through labsuite.markers, the two names of the stage
    record stay in stages.py and metronome/beat in streams/messages.py, which markers.py uses.
    """
    names = set(KINDS)
    allowed = {("labsuite/stages.py", "EVENT_STAGE_START"), ("labsuite/stages.py", "EVENT_STAGE_END"),
               ("labsuite/streams/messages.py", "EVENT_METRONOME"),
               ("labsuite/streams/messages.py", "EVENT_BEAT")}
    found = set()
    for path in [*REPO.glob("labsuite/**/*.py"), *REPO.glob("drivers/**/*.py")]:
        rel = path.relative_to(REPO).as_posix()
        if rel in ("labsuite/markers.py", "labsuite/report.py") or rel.startswith("labsuite/report/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                    and node.value.value in names:
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.startswith("EVENT"):
                        found.add((rel, target.id))
    assert found == allowed
