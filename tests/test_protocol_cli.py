"""The run/demo command pieces: pain scripts, keys, progress and summary formatting, option checks."""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import pytest

from labsuite.cli import main
from labsuite.cli.demo import demo_protocol_path
from labsuite.cli.run import Console, format_live, format_summary, parse_pain_script
from labsuite.errors import ConfigError
from labsuite.lab.run import RunOptions, prepare
from labsuite.protocol import operator as op
from labsuite.protocol.schema import load_protocol
from labsuite.protocol.session import Session, SessionSettings
from labsuite.stages import StageRecord

REPO = Path(__file__).resolve().parents[1]


def test_pain_script_from_list_and_file(tmp_path):
    assert parse_pain_script("0, 1,2") == [0, 1, 2]
    f = tmp_path / "pain.txt"
    f.write_text("0\n3\n\n10\n")
    assert parse_pain_script(str(f)) == [0, 3, 10]
    assert parse_pain_script(None) is None
    with pytest.raises(ConfigError, match=r"item 2 '11': expected an integer 0-10"):
        parse_pain_script("1,11")
    with pytest.raises(ConfigError, match="item 1 'x'"):
        parse_pain_script("x")


def test_keys_reach_a_real_session_object():
    session = Session(load_protocol(REPO / "protocols" / "demo.yaml"),
                      SessionSettings(lab_id="keys", participant_id="P1", steps_source_id="s"))
    console = Console(None, quiet=True, out=io.StringIO())
    console.session = session
    for ch in "gprscq":
        console.key(ch)
    for ch in "7\n":
        console.key(ch)
    console.key("e")
    queued = []
    while not session._ops.empty():
        queued.append(session._ops.get_nowait())
    assert [name for name, _ in queued] == [op.OP_START, op.OP_PAUSE, op.OP_RESUME, op.OP_SKIP,
                                           op.OP_CHECKIN, op.OP_ABORT, op.OP_PAIN, op.OP_EMERGENCY_STOP]
    assert queued[6][1]["pain"] == 7
    assert all(f["source"] == "cli" for _, f in queued)
    assert console.emergency_stops == 1
    assert math.isfinite(session._estop_sent_at)


def test_pain_script_answers_checkins_in_order_and_repeats_the_last():
    session = Session(load_protocol(REPO / "protocols" / "demo.yaml"),
                      SessionSettings(lab_id="keys", participant_id="P1", steps_source_id="s"))
    out = io.StringIO()
    console = Console([0, 2], quiet=True, out=out)
    console.session = session
    from labsuite.protocol.machine import Action
    from labsuite.streams.messages import marker

    for i in (1, 2, 3):
        console.on_action(Action("marker", "checkin_request",
                                 marker("checkin_request", id=i, reason="stage_end"), 0.0))
    answers = [session._ops.get_nowait()[1] for _ in range(3)]
    assert [(a["pain"], a["id"]) for a in answers] == [(0, 1), (2, 2), (2, 3)]
    assert "from --pain-script" in out.getvalue()


def test_summary_and_progress_lines():
    rec = StageRecord(index=1, name="up", kind="cadence", start_s=10.0, end_s=55.0,
                      target_cadence_spm=172.0, band_low_spm=167.0, band_high_spm=177.0,
                      belt_speed_m_s=3.0, end_reason="time",
                      summary_json=json.dumps({"n_steps": 120, "cadence_spm": 171.4,
                                               "in_band_fraction": 0.84, "valr_bw_per_s": 61.8,
                                               "valr_percent_of_baseline": 84.6,
                                               "tibial_peak_g": 6.1}))
    text = format_summary([rec], {"cadence_spm": 160.0, "valr_bw_per_s": 73.0})
    row = text.splitlines()[2].split()
    assert row[:8] == ["2", "up", "cadence", "45.0", "time", "120", "171.4", "172.0"]
    assert row[8:] == ["84", "%", "61.8", "85", "6.1"]
    live = {"state": "running", "stage": "up", "time_left_s": 12.2, "steps": 30, "cadence_spm": 170.0,
            "target_spm": 172.0, "band_spm": (167.0, 177.0), "in_band_run": 9, "valr_bw_per_s": 62.0,
            "baseline_valr_bw_per_s": 73.0, "pause_reason": ""}
    line = format_live(live)
    assert "[up] 12 s left" in line and "target 172.0, band 167.0-177.0, 9 in a row" in line
    assert "(85 % of baseline)" in line


def test_run_options_are_checked(tmp_path):
    demo = REPO / "protocols" / "demo.yaml"
    with pytest.raises(ConfigError, match="pseudonymous"):
        RunOptions(protocol_path=demo, participant_id="Jane Doe", simulate=True)
    with pytest.raises(ConfigError, match="exactly one of --simulate"):
        RunOptions(protocol_path=demo, participant_id="P1")
    with pytest.raises(ConfigError, match="--speed 7 m/s exceeds"):
        prepare(RunOptions(protocol_path=demo, participant_id="P1", simulate=True, speed_m_s=7.0))
    p = prepare(RunOptions(protocol_path=demo, participant_id="P1", simulate=True, speed_m_s=2.5))
    assert p.stage_speed_m_s(1) == 2.5 and p.stage_speed_m_s(0) == 0.0
    willy = REPO / "protocols" / "willy2016_cadence_programme.yaml"
    with pytest.raises(ConfigError, match="give --session"):
        prepare(RunOptions(protocol_path=willy, participant_id="P1", simulate=True))


def test_run_rejects_bad_options_before_starting_anything(tmp_path, capsys):
    demo = str(REPO / "protocols" / "demo.yaml")
    assert main(["run", demo, "--participant", "a/b", "--simulate", "--out", str(tmp_path)]) == 1
    assert "pseudonymous" in capsys.readouterr().err
    assert main(["run", demo, "--participant", "P1", "--simulate", "--pain-script", "1,99",
                 "--out", str(tmp_path)]) == 1
    assert "expected an integer 0-10" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_demo_uses_the_demo_protocol():
    assert demo_protocol_path() == (REPO / "protocols" / "demo.yaml").resolve()
    total = sum(s.duration_s for s in load_protocol(demo_protocol_path()).stages)
    assert 90 <= total <= 150  # about two minutes


def test_plan_records_the_programme_session_and_all_streams(tmp_path):
    from labsuite.lab.run import plan

    options = RunOptions(protocol_path=REPO / "protocols" / "willy2016_cadence_programme.yaml",
                         participant_id="P3", simulate=True, programme_session=6, out_dir=tmp_path,
                         lab_id="plan")
    the_plan = plan(prepare(options), options)
    rec = next(r.kwargs["settings"] for r in the_plan.roles if r.name == "recorder")
    assert rec.session_number == 6 and the_plan.session_file.name.startswith("P3_s6_")
    assert {"labsuite-session-plan-markers", "labsuite-session-plan-commands",
            "labsuite-steps-plan", "labsuite-sim-plan-fp-left", "labsuite-sim-plan-treadmill",
            "labsuite-sim-plan-treadmill-events"} <= set(rec.source_ids)
    # the session holds the belt it commands against the one the treadmill reports
    assert the_plan.session.treadmill_source_id == "labsuite-sim-plan-treadmill"
    assert the_plan.session.auto_start is None  # the operator starts the belt unless told
    assert the_plan.session.force_source_ids == ("labsuite-sim-plan-fp-left", "labsuite-sim-plan-fp-right")
    assert the_plan.session.programme_session == 6
    restart = {r.name: r.restart for r in the_plan.roles}
    assert restart["recorder"] is True and restart["sim-fp-left"] is True  # the recorder: a new part
    assert list(tmp_path.iterdir()) == []  # planning starts nothing


def test_a_metronome_cue_plans_the_audio_metronome_and_no_sound_plans_none(tmp_path):
    from labsuite.lab.run import plan

    demo = REPO / "protocols" / "demo.yaml"
    options = RunOptions(protocol_path=demo, participant_id="P3", simulate=True, out_dir=tmp_path,
                         lab_id="metro", audio_device="USB")
    protocol = prepare(options)
    the_plan = plan(protocol, options)
    metronome = next(r for r in the_plan.roles if r.name == "metronome")
    settings = metronome.kwargs["settings"]
    assert metronome.restart is True  # supervised like a driver; the session says the tempo again
    assert settings.session_markers_source_id == "labsuite-session-metro-markers"
    assert settings.beats_source_id == "labsuite-metronome-metro-beats" == the_plan.streams.beats
    assert settings.output.device == "USB"
    assert settings.click == protocol.metronome_cues[0].click()  # the protocol's click from the start
    rec = next(r.kwargs["settings"] for r in the_plan.roles if r.name == "recorder")
    assert "labsuite-metronome-metro-beats" in rec.source_ids  # the file keeps the clicks' beats
    assert the_plan.session.beats_source_id == "labsuite-metronome-metro-beats"
    # --no-sound: no role, no beat stream; the session's own (timer) beats instead
    quiet = RunOptions(protocol_path=demo, participant_id="P3", simulate=True, out_dir=tmp_path,
                       lab_id="metro", sound=False)
    silent = plan(prepare(quiet), quiet)
    assert "metronome" not in [r.name for r in silent.roles]
    assert silent.streams.beats is None and silent.session.beats_source_id is None
    assert Session(protocol, silent.session).machine.beats == "timer"
    assert Session(protocol, the_plan.session).machine.beats == "audio"
    # a protocol without a metronome cue never needs a sound output
    crowell = RunOptions(protocol_path=REPO / "protocols" / "crowell_davis2011_tibial_shock.yaml",
                         participant_id="P3", simulate=True, out_dir=tmp_path, lab_id="metro",
                         programme_session=1)
    tibial = prepare(crowell)
    assert not tibial.metronome_cues
    assert "metronome" not in [r.name for r in plan(tibial, crowell).roles]
    with pytest.raises(ConfigError, match="--audio-device"):
        RunOptions(protocol_path=demo, participant_id="P3", simulate=True, sound=False, audio_device=1)
    assert list(tmp_path.iterdir()) == []  # planning starts nothing


def test_the_gui_role_is_handed_in_by_the_cli(tmp_path):
    from labsuite.cli.run import gui_role
    from labsuite.lab.run import plan

    options = RunOptions(protocol_path=REPO / "protocols" / "demo.yaml", participant_id="P3",
                         simulate=True, out_dir=tmp_path, lab_id="guiplan")
    protocol = prepare(options)
    assert "gui" not in [r.name for r in plan(protocol, options).roles]
    the_plan = plan(protocol, options, gui=gui_role)
    gui = the_plan.roles[-1]
    assert gui.name == "gui" and gui.restart is False
    feed = gui.kwargs["settings"]
    assert dict(feed.plates) == the_plan.streams.plates and feed.steps_source_id == "labsuite-steps-guiplan"
    assert feed.session_file == str(the_plan.session_file) and feed.participant_id == "P3"
    assert the_plan.streams.treadmill in feed.extra_source_ids
    assert feed.beats_source_id == the_plan.streams.beats == "labsuite-metronome-guiplan-beats"


def test_a_stream_not_found_names_it_the_lsl_configuration_and_its_ports():
    from labsuite.lab.run import not_ready_message

    text = not_ready_message(60.0, ["force plate (stream labsuite-lab1-fp-left)"],
                             [(0.0, "labsuite-lab1-fp-left: lost: no data")])
    cfg = os.environ["LSLAPICFG"]  # tests/conftest.py: this worktree's machine-scope file
    assert "force plate (stream labsuite-lab1-fp-left)" in text
    assert f"LSL configuration {cfg}" in text
    assert "asks ports 16572-16827" in text  # liblsl's BasePort, the file's PortRange = 256
