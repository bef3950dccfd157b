"""Feedback without a lab: settings errors, the session view from markers, buttons on the wire, no Qt
on import, blank participant screen, closing sends abort (read back with a plain pylsl inlet)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pylsl
import pytest
import pytestqt  # noqa: F401  (the qtbot fixture; in the test extra)
from lsl_helpers import plain_inlet

from labsuite.errors import ConfigError
from labsuite.feedback.feed import FeedSettings, LiveFeed
from labsuite.ids import operator_source_id
from labsuite.protocol.operator import OperatorConsole
from labsuite.protocol.schema import parse_protocol
from labsuite.steps import STEP_FIELDS, empty_steps, steps_to_rows
from labsuite.streams.contracts import Channel, StreamSpec


class _StepsReader:
    """What LiveFeed._steps_chunk reads of its reader: the steps stream's description."""

    spec = StreamSpec("steps", "steps", tuple(Channel(f.name, f.unit, "Step") for f in STEP_FIELDS),
                      0.0, "float64", "s")


def _settings(uid: str, **kw) -> FeedSettings:
    return FeedSettings(lab_id=uid, plates=(("left", f"{uid}-fp-l"), ("right", f"{uid}-fp-r")),
                        steps_source_id=f"{uid}-steps", **kw)


def test_settings_errors_name_the_field(uid):
    with pytest.raises(ConfigError, match="plates"):
        FeedSettings(lab_id=uid, plates=(("left", "a"),), steps_source_id="s")
    with pytest.raises(ConfigError, match="participant id"):
        _settings(uid, participant_id="Jane Doe")
    with pytest.raises(ConfigError, match="lab_id"):
        _settings("../etc")
    with pytest.raises(ConfigError, match="fps"):
        _settings(uid, fps=0.0)
    with pytest.raises(ConfigError, match="window_s"):
        _settings(uid, window_s=float("nan"))
    with pytest.raises(ConfigError, match="imus"):
        FeedSettings(lab_id=uid, plates=(("single", "a"),), imus=(("middle", "b"),),
                     steps_source_id="s")
    with pytest.raises(ConfigError, match="source_id"):
        FeedSettings(lab_id=uid, plates=(("single", "a'"),), steps_source_id="s")


def test_importing_the_feed_and_app_imports_no_qt():
    code = ("import sys, labsuite.feedback, labsuite.feedback.feed, labsuite.feedback.app; "
            "print(sorted(m for m in sys.modules if m.startswith(('PyQt5', 'pyqtgraph'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_markers_make_the_session_view(uid):
    protocol = parse_protocol("""\
schema: labsuite-protocol/1
name: view
speed_m_s: 3.0
stages:
  - {name: base, kind: baseline, duration_s: 60}
  - {name: steps, kind: cadence, duration_s: 600, target_spm: 170, until_steps: 50}
""")
    base = {k: v for k, v in _settings(uid).__dict__.items() if k != "stage_step_limits"}
    feed = LiveFeed(FeedSettings.for_protocol(protocol, **base))
    assert feed.settings.stage_step_limits == (None, 50)
    t0 = 1000.0
    feed.apply_marker(t0, {"event": "session_start", "protocol": "view"})
    feed.apply_marker(t0, {"event": "stage_start", "index": 0, "name": "base", "kind": "baseline",
                           "duration_s": 60.0, "target_cadence_spm": None})
    v = feed.snapshot(t0 + 10).session
    assert v.state == "running" and v.stage_name == "base" and math.isnan(v.target_spm)
    assert v.time_left_s(t0 + 10) == pytest.approx(50.0)
    # a pause freezes the stage clock; resuming counts only the unpaused time
    feed.apply_marker(t0 + 10, {"event": "paused", "reason": "operator"})
    assert feed.snapshot().session.time_left_s(t0 + 25) == pytest.approx(50.0)
    feed.apply_marker(t0 + 25, {"event": "resumed"})
    assert feed.snapshot().session.time_left_s(t0 + 35) == pytest.approx(40.0)
    feed.apply_marker(t0 + 40, {"event": "checkin_request", "id": 4})
    feed.apply_marker(t0 + 40, {"event": "checkin_request", "id": 5})
    feed.apply_marker(t0 + 41, {"event": "checkin", "id": 4, "pain": 1})
    assert feed.snapshot().session.pending_checkins == (5,)
    feed.apply_marker(t0 + 60, {"event": "stage_end", "index": 0, "name": "base",
                                "end_reason": "time"})
    feed.apply_marker(t0 + 60, {"event": "stage_start", "index": 1, "name": "steps",
                                "kind": "cadence", "duration_s": 600, "target_cadence_spm": 170,
                                "band_low_spm": 165, "band_high_spm": 175})
    feed.apply_marker(t0 + 60, {"event": "cue", "feedback_on": True, "metronome_spm": 170,
                                "band_low_spm": 165, "band_high_spm": 175, "target_spm": 170,
                                "valr_max_bw_per_s": None, "tibial_max_g": None})
    feed.apply_marker(t0 + 61, {"event": "beat", "n": 3, "spm": 170})
    # steps struck in this stage count against its until_steps
    steps = empty_steps(3)
    steps["strike_s"] = [t0 + 59, t0 + 60.5, t0 + 61]
    steps["cadence_spm"] = 170.0
    feed._steps_chunk(_StepsReader(), steps["strike_s"], steps_to_rows(steps))
    snap = feed.snapshot(t0 + 62)
    v = snap.session
    assert v.stages_done == (("base", "time"),)
    assert v.pending_checkins == (5,)  # carried over the stage change
    assert v.cue_band == (165.0, 175.0) and v.feedback_on and v.metronome_spm == 170.0
    assert v.beat_n == 3 and v.beat_s == t0 + 61
    assert snap.stage_steps == 2 and snap.stage_step_limit == 50
    feed.apply_marker(t0 + 70, {"event": "emergency_stop", "source": "gui"})
    feed.apply_marker(t0 + 70, {"event": "session_end", "reason": "emergency_stop"})
    v = feed.snapshot().session
    assert v.state == "finished" and v.end_reason == "emergency_stop" and not v.feedback_on
    assert "emergency_stop" in v.alert
    assert any(e.startswith("session_end") for e in feed.snapshot().events)
    assert not any(e.startswith("beat") for e in feed.snapshot().events)


def test_flash_is_asked_for_and_the_display_sees_a_beat_only_once_it_sounds(uid):
    base = _settings(uid).__dict__
    feed = LiveFeed(FeedSettings(**{**base, "beats_source_id": f"{uid}-beats"}))
    assert "beats" in feed._sources and feed._sources["beats"] == f"{uid}-beats"
    t0 = 1000.0
    feed.apply_marker(t0, {"event": "session_start"})
    feed.apply_marker(t0, {"event": "metronome", "spm": 150.0, "flash": True})
    assert feed.snapshot(t0).session.metronome_flash
    # the audio metronome's beat markers arrive about an output latency before they sound
    feed.apply_marker(t0 + 1.0, {"event": "beat", "n": 1, "spm": 150, "clock": "dac"})
    feed.apply_marker(t0 + 1.4, {"event": "beat", "n": 2, "spm": 150, "clock": "dac"})
    assert math.isnan(feed.snapshot(t0 + 0.9).beat_s)
    assert feed.snapshot(t0 + 1.2).beat_s == t0 + 1.0  # not the next one, not yet heard
    assert feed.snapshot(t0 + 1.5).beat_s == t0 + 1.4
    feed.apply_marker(t0 + 2, {"event": "metronome", "spm": 150.0})  # flash is off by default
    assert not feed.snapshot(t0 + 2).session.metronome_flash
    feed.apply_marker(t0 + 3, {"event": "metronome", "spm": None, "flash": True})
    assert not feed.snapshot(t0 + 3).session.metronome_flash  # no flash without a metronome


def _read_ops(inlet, n: int, timeout_s: float = 20.0) -> list[dict]:
    import time

    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        samples, _ = inlet.pull_chunk(timeout=0.2)
        out += [json.loads(s[0]) for s in samples]
    return out


def test_buttons_publish_operator_commands_and_closing_sends_abort(qtbot, uid, tmp_path):
    from PyQt5 import QtCore

    from labsuite.feedback.windows import GuiController

    feed = LiveFeed(_settings(uid, participant_id="P03", session_file="P03.h5")).start()
    console = OperatorConsole(uid, source="gui")
    gui = GuiController(feed, console, close_wait_s=5.0)
    qtbot.addWidget(gui.operator)
    qtbot.addWidget(gui.participant)
    gui.show(second_screen=False)
    try:
        inlet = plain_inlet(operator_source_id(uid))
        assert console.wait_for_session(30.0)
        # no session yet: the participant sees a black screen
        qtbot.waitUntil(lambda: gui.ticks > 3, timeout=10_000)
        blank = gui.participant.grab()
        img = blank.toImage()
        assert {img.pixel(x, y) & 0xFFFFFF for x in range(0, img.width(), 7)
                for y in range(0, img.height(), 7)} == {0}
        # steps without loading rates yet (NaN) are drawn without warnings (errors in pytest)
        steps = empty_steps(2)
        steps["strike_s"] = [1.0, 1.4]
        steps["crossover"] = 0
        feed._steps_chunk(_StepsReader(), steps["strike_s"], steps_to_rows(steps))
        ticks = gui.ticks
        qtbot.waitUntil(lambda: gui.ticks > ticks + 3, timeout=10_000)
        drawn = gui.operator.valr_curve.getData()[1]
        assert drawn is None or len(drawn) == 0
        t = pylsl.local_clock()
        feed.apply_marker(t, {"event": "session_start"})
        feed.apply_marker(t, {"event": "checkin_request", "id": 9})
        qtbot.waitUntil(lambda: "#9" in gui.operator.checkin_label.text(), timeout=10_000)
        gui.operator.pain_spin.setValue(7)
        for button in (gui.operator.pause_button, gui.operator.resume_button,
                       gui.operator.skip_button, gui.operator.checkin_button,
                       gui.operator.pain_button, gui.operator.estop_button):
            qtbot.mouseClick(button, QtCore.Qt.LeftButton)
        ops = _read_ops(inlet, 6)
        assert [o["op"] for o in ops] == ["pause", "resume", "skip", "checkin", "pain",
                                          "emergency_stop"]
        assert ops[4]["pain"] == 7 and ops[4]["id"] == 9
        assert all(o["source"] == "gui" for o in ops)
        # Start is enabled only while the belt waits for the operator
        assert not gui.operator.start_button.isEnabled()
        feed.apply_marker(pylsl.local_clock(), {"event": "paused", "reason": "awaiting_start"})
        feed.apply_marker(pylsl.local_clock(), {"event": "awaiting_start", "stage": "b", "speed_m_s": 3})
        qtbot.waitUntil(lambda: gui.operator.start_button.isEnabled(), timeout=10_000)
        assert gui.operator.state_label.text().startswith("WAITING FOR START")
        qtbot.mouseClick(gui.operator.start_button, QtCore.Qt.LeftButton)
        assert _read_ops(inlet, 1) == [{"op": "start", "source": "gui"}]
        feed.apply_marker(pylsl.local_clock(), {"event": "start_authorised", "source": "gui"})
        qtbot.waitUntil(lambda: not gui.operator.start_button.isEnabled(), timeout=10_000)
        # closing the participant display ends the session: abort, then wait for session_end
        gui.participant.close()
        assert _read_ops(inlet, 1) == [{"op": "abort", "source": "gui"}]
        assert gui.closing and not gui.done
        feed.apply_marker(pylsl.local_clock(), {"event": "session_end", "reason": "aborted"})
        qtbot.waitUntil(lambda: gui.done, timeout=10_000)
        assert not gui.operator.isVisible()
    finally:
        gui.stop_without_abort()
        feed.stop()
        console.close()
    assert np.isfinite(gui.gui_cpu_s)


def test_gui_role_runs_under_the_supervisor_and_stops_cleanly(uid):
    """The role `labsuite run --gui` adds: a separate process whose console appears on the bus,
    and which closes without sending anything when the supervisor stops it."""
    from labsuite.feedback.app import gui_role
    from labsuite.processes import Supervisor

    protocol = parse_protocol("schema: labsuite-protocol/1\nname: role\nspeed_m_s: 3.0\n"
                              "stages:\n  - {name: base, kind: baseline, duration_s: 60}\n")
    role = gui_role(
        protocol, lab_id=uid, participant_id="P09", session_file=None,
        plates={"single": f"{uid}-fp"}, steps_source_id=f"{uid}-steps",
        extra_source_ids=(f"{uid}-treadmill", None))
    assert (role.name, role.restart) == ("gui", False)
    assert role.kwargs["settings"].extra_source_ids == (f"{uid}-treadmill",)
    sup = Supervisor()
    sup.add_role(role)
    sup.start()
    try:
        inlet = plain_inlet(operator_source_id(uid), 90.0)
        assert sup.alive() == {"gui": True}
    finally:
        codes = sup.stop(timeout_s=30.0)
    assert codes == {"gui": 0}
    try:
        samples, _ = inlet.pull_chunk(timeout=1.0)
    except pylsl.util.LostError:  # the GUI process is gone; nothing was queued
        samples = []
    assert samples == []  # stopped by the supervisor: no abort sent
