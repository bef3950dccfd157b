"""Feedback windows offscreen (pytest-qt) on the simulated lab, the real processor and the real session.

The lab runs as supervised processes; the step processor (LiveRunner) and the session run in this
process over real LSL, as `labsuite run` wires them. Screenshots go to the test's tmp_path.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pylsl
import pytest
import pytestqt  # noqa: F401  (the qtbot fixture; in the test extra)
from lsl_helpers import plain_inlet

from labsuite.drivers.sim.lab import SimLabSettings, sim_lab_roles
from labsuite.feedback.feed import FeedSettings, LiveFeed
from labsuite.ids import operator_source_id
from labsuite.lab.live import LiveRunner
from labsuite.processes import Supervisor
from labsuite.protocol.operator import OperatorConsole
from labsuite.protocol.schema import parse_protocol
from labsuite.protocol.session import Session, SessionSettings
from labsuite.realtime.processor import PlateGeometry, ProcessorSettings
from labsuite.streams.acquisition import StreamQuery, StreamReader
from labsuite.streams.contracts import SPEED_RIGHT

# Short stages so a test sees a baseline, a cued stage with faded feedback, and the next stage.
PROTOCOL = """\
schema: labsuite-protocol/1
name: gui-test
speed_m_s: 3.0
safety: {accel_m_s2: 1.0, no_contact_timeout_s: 5.0}
checkins: {at_start: false, at_stage_boundaries: false}
stages:
  - {name: base, kind: baseline, duration_s: 6, measure_last_steps: 8}
  - name: up
    kind: cadence
    duration_s: 90
    target_percent: 7.5
    band_percent: 3
    cues:
      metronome: {spm: target, flash: true}
      visual_band: true
      loading_rate: {max_percent_of_baseline: 85}
      fading: {on_fraction: 0.5, period_s: 6}
  - {name: keep, kind: retention, duration_s: 90, target_percent: 7.5}
"""


class Rig:
    """Simulated lab (processes) + processor + session + both windows, all over real LSL."""

    def __init__(self, qtbot, uid: str, tmp_path, auto_start: str | None = "--auto-start") -> None:
        self.qtbot = qtbot
        self.sim = SimLabSettings(lab_id=uid, initial_speed_m_s=0.0)  # as `labsuite run` has it
        self.steps_sid = f"{uid}-steps"
        # the session's outlets first: the simulated treadmill's command listener resolves once
        # (drivers/base.py) and on a loaded machine was seen to miss a stream that appears later
        protocol = parse_protocol(PROTOCOL)
        self.session = Session(protocol, SessionSettings(
            lab_id=uid, participant_id="P07", steps_source_id=self.steps_sid,
            force_source_ids=(self.sim.source_id("fp-left"), self.sim.source_id("fp-right")),
            treadmill_source_id=self.sim.source_id("treadmill"), auto_start=auto_start,
            settle_s=1.0)).open()
        self.sup = Supervisor()
        for role in sim_lab_roles(self.sim):
            self.sup.add_role(replace(role, restart=False))
        self.sup.start()
        template = ProcessorSettings(rate_hz=1000.0, plates=(PlateGeometry.lab_aligned("left"),
                                                           PlateGeometry.lab_aligned("right")),
                                     body_mass_kg=self.sim.participant.mass_kg)
        self.runner = LiveRunner(template, {"left": self.sim.source_id("fp-left"),
                                            "right": self.sim.source_id("fp-right")},
                                 steps_source_id=self.steps_sid, steps_name=f"steps-{uid}").start()
        self.settings = FeedSettings.for_protocol(
            protocol, **_sim_feed_kwargs(self.sim, self.steps_sid, str(tmp_path / "P07.h5")))
        self.feed = LiveFeed(self.settings).start()
        self.console = OperatorConsole(uid, source="gui")
        from labsuite.feedback.windows import GuiController

        self.gui = GuiController(self.feed, self.console, close_wait_s=10.0)
        qtbot.addWidget(self.gui.operator)
        qtbot.addWidget(self.gui.participant)
        self.gui.show(second_screen=False)

    def start_session(self) -> None:
        assert self.runner.wait_started(90.0), self._missing(self.runner.readers)
        assert self.feed.wait_connected(60.0), self._missing(self.feed.readers)
        assert self.console.wait_for_session(60.0)
        missing = self.session.wait_ready(60.0)
        assert missing == [], (missing, self.session.log)
        self.session.start()
        self.until(lambda: self.view().stage_name == "base", 30)

    def _missing(self, readers) -> str:
        lost = [(str(r.query), len(pylsl.resolve_byprop("source_id", r.query.source_id, 0, 3.0)))
                for r in readers if not r.wait_connected(0.0)]  # (query, found by a fresh resolve)
        visible = len(pylsl.resolve_streams(2.0))
        return f"not connected: {lost}; {visible} streams visible on this machine; {self.sup.alive()}"

    def until(self, cond, timeout_s: float = 60.0) -> None:
        """Wait (processing Qt events) for ``cond``; fail with the session's state if it never holds."""
        try:
            self.qtbot.waitUntil(cond, timeout=int(timeout_s * 1000))
        except Exception as exc:  # pytest-qt's TimeoutError: add what the session was doing
            m = self.session.machine
            raise AssertionError(
                f"{exc}; machine {m.state} stage {m.stage_index} end {m.end_reason!r}; "
                f"log {self.session.log[-8:]}; gui events {self.feed.snapshot().events[-8:]}; "
                f"steps {self.runner.stats()}; {self._missing(self.feed.readers)}") from None

    def view(self):
        snap = self.gui.last_snapshot
        return snap.session if snap is not None else self.feed.snapshot().session

    def close(self) -> None:
        if not self.gui.done:
            self.gui.stop_without_abort()
        self.feed.stop()
        self.session.close()
        self.runner.stop()
        codes = self.sup.stop()
        self.console.close()
        assert all(code == 0 for code in codes.values()), codes


def _sim_feed_kwargs(sim, steps_sid: str, file: str) -> dict:
    base = FeedSettings.for_sim_lab(sim, steps_source_id=steps_sid)
    return {"lab_id": base.lab_id, "plates": base.plates, "imus": base.imus,
            "extra_source_ids": base.extra_source_ids, "steps_source_id": steps_sid,
            "participant_id": "P07", "session_file": file, "fps": 40.0}


@pytest.fixture
def rig(qtbot, uid, tmp_path, request):
    r = Rig(qtbot, uid, tmp_path, **getattr(request, "param", {}))
    try:
        yield r
    finally:
        r.close()


def _colour_pixels(image, rgb, tol: int = 40) -> int:
    """Number of pixels within ``tol`` of ``rgb`` in a QImage."""
    arr = _array(image)
    return int(np.sum(np.all(np.abs(arr[:, :, :3].astype(int) - rgb) <= tol, axis=2)))


def _array(image) -> np.ndarray:
    from PyQt5 import QtGui

    img = image.toImage().convertToFormat(QtGui.QImage.Format_RGB888)
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    return np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine())[
        :, :img.width() * 3].reshape(img.height(), img.width(), 3).copy()


def test_windows_show_the_simulated_lab_and_closing_aborts_the_session(rig, uid, tmp_path):
    from labsuite.feedback.windows import BAND_GREEN, BELT_COLOURS

    # an independent client of the left plate: what the console draws must be what the plate sent
    inlet = plain_inlet(rig.sim.source_id("fp-left"))
    rig.start_session()
    gui = rig.gui
    # the cued stage: band, metronome pulse, then the faded half (blank)
    rig.until(lambda: rig.view().stage_name == "up", 60)
    rig.until(lambda: gui.participant.cue == "cadence" and gui.participant.pulse_level > 0.3,
                    30)
    cued = gui.participant.grab()
    cued.save(str(tmp_path / "participant_cadence.png"))
    operator = gui.operator.grab()
    operator.save(str(tmp_path / "operator.png"))
    force = gui.operator.force_plot.grab()
    force.save(str(tmp_path / "operator_force.png"))
    gui.operator.cop_plot.grab().save(str(tmp_path / "operator_cop.png"))
    gui.operator.cadence_plot.grab().save(str(tmp_path / "operator_cadence.png"))
    # the belt now starts at the baseline (operator start), so a 6 s baseline brings ~15 steps:
    # wait for the processor's 20th step inside the cued stage (it lasts 90 s)
    rig.until(lambda: gui.last_snapshot is not None and gui.last_snapshot.steps_total >= 20, 30)
    snap = gui.last_snapshot
    v = snap.session
    # the stage view follows the session's markers
    assert v.state == "running" and v.feedback_on and v.metronome_spm == pytest.approx(v.target_spm)
    assert v.target_spm == pytest.approx(rig.session.machine.target_cadence_spm)
    assert v.band_spm == pytest.approx(rig.session.machine.band_spm)
    assert 0 < v.time_left_s(snap.now_s) <= 90
    assert "up" in gui.operator.stage_label.text() and "s left" in gui.operator.stage_label.text()
    assert "P07" in gui.operator.identity.text() and "P07.h5" in gui.operator.identity.text()
    # traces: both belts drawn in their colours, loaded well above body weight while running
    for belt in ("left", "right"):
        assert _colour_pixels(force, BELT_COLOURS[belt]) > 200, belt
    for tr in snap.traces:
        assert tr.t_s[-1] - tr.t_s[0] > 0.8 * rig.settings.window_s
        assert tr.fz_n.max() > 1.5 * rig.sim.participant.weight_n
        curve = gui.operator.curves[tr.belt]  # the data handed to the curve (before clipping)
        np.testing.assert_allclose(curve.yData, tr.fz_n)
        np.testing.assert_allclose(curve.xData, tr.t_s - snap.now_s)
    # the left trace equals the plate's own Fz channel (its plate z points down: lab Fz = plate Fz)
    samples, stamps = inlet.pull_chunk(timeout=1.0, max_samples=100_000)
    raw = dict(zip(np.round(np.asarray(stamps) * 1e4).astype(np.int64),
                   np.asarray(samples)[:, 2], strict=True))
    left = snap.traces[0]
    offset = rig.feed.readers[0].offset_s
    keys = np.round((left.t_s - offset) * 1e4).astype(np.int64)
    common = [i for i, k in enumerate(keys) if k in raw]
    assert len(common) > 1000
    np.testing.assert_allclose(left.fz_n[common], [raw[keys[i]] for i in common], atol=1e-3)
    # steps from the real processor reach the history plots
    assert snap.steps_total >= 20 and np.isfinite(snap.steps["valr_bw_per_s"]).sum() >= 10
    _, vy = gui.operator.valr_curve.getData()
    assert len(vy) >= 10
    # health table: every stream connected with a measured rate near nominal
    table = gui.operator.health
    assert table.rowCount() == len(rig.feed.readers)
    rig.until(lambda: all(r.spec is not None for r in rig.feed.readers), 60)
    time.sleep(5.0)  # a full rate window (5 s) for every stream
    rig.until(lambda: "–" not in [table.item(i, 1).text() for i in range(table.rowCount())], 10)
    for i, reader in enumerate(rig.feed.readers):
        nominal = reader.spec.rate_hz
        if nominal > 0:  # irregular streams (steps, markers) have no rate to compare
            assert abs(float(table.item(i, 1).text()) - nominal) < 0.1 * nominal, reader.query
        assert int(table.item(i, 3).text()) >= 0
    # participant display: a green band, a dot and a lit pulse on black
    assert _colour_pixels(cued, BAND_GREEN, 30) > 2000
    assert _array(cued).max() == 255
    # fading: feedback off for the second half of each 6 s period -> a black screen
    rig.until(lambda: gui.participant.cue == "blank" and rig.view().stage_name == "up",
                    30)
    blank = gui.participant.grab()
    blank.save(str(tmp_path / "participant_blank.png"))
    assert _array(blank).max() == 0
    # closing the console ends the session: an abort goes out and the session ends 'aborted'
    assert rig.session.machine.state == "running", rig.session.log[-5:]
    gui.operator.close()
    rig.until(lambda: gui.done, 30)
    assert gui.abort_sent
    assert rig.session.wait(30.0)
    assert rig.session.machine.end_reason == "aborted"
    assert rig.feed.snapshot().session.end_reason == "aborted"


@pytest.mark.parametrize("rig", [{"auto_start": None}], indirect=True)
def test_buttons_drive_the_real_session(rig, uid):
    # a plain pylsl client of the operator stream sees exactly what the buttons sent
    spy = plain_inlet(operator_source_id(uid))
    rig.start_session()
    gui, qtbot, session = rig.gui, rig.qtbot, rig.session
    from PyQt5 import QtCore

    treadmill = StreamReader(StreamQuery(source_id=rig.sim.source_id("treadmill")), buffer_s=5.0)
    treadmill.start()
    try:
        assert treadmill.wait_connected(30.0)

        def belt_m_s() -> float:
            _, rows = treadmill.ring.latest(1)
            return float(rows[0, treadmill.spec.channel_index(SPEED_RIGHT)]) if len(rows) else math.nan

        # the belt waits for the operator: Start is the only button that runs it
        rig.until(lambda: gui.operator.start_button.isEnabled(), 30)
        assert gui.operator.state_label.text().startswith("WAITING FOR START")
        rig.until(lambda: belt_m_s() == 0.0, 30)
        assert session.machine.awaiting_start
        qtbot.mouseClick(gui.operator.start_button, QtCore.Qt.LeftButton)
        rig.until(lambda: session.machine.state == "running", 30)
        rig.until(lambda: not gui.operator.start_button.isEnabled(), 10)
        rig.until(lambda: belt_m_s() > 0.5, 30)
        # the baseline runs to its end (skipping it early would end the session: no baseline)
        rig.until(lambda: rig.view().stage_name == "up", 60)
        qtbot.mouseClick(gui.operator.pause_button, QtCore.Qt.LeftButton)
        rig.until(lambda: session.machine.paused, 30)
        rig.until(lambda: gui.operator.state_label.text() == "PAUSED", 30)
        # the belt ramps to a stop (1 m/s^2 from 3 m/s)
        rig.until(lambda: belt_m_s() < 0.05, 30)
        qtbot.mouseClick(gui.operator.resume_button, QtCore.Qt.LeftButton)
        rig.until(lambda: session.machine.state == "running", 30)
        rig.until(lambda: gui.operator.state_label.text() == "RUNNING", 30)
        qtbot.mouseClick(gui.operator.skip_button, QtCore.Qt.LeftButton)
        rig.until(lambda: session.machine.stage_index == 2, 30)
        rig.until(lambda: rig.view().stage_name == "keep", 30)
        assert rig.view().stages_done == (("base", "time"), ("up", "skipped"))
        gui.operator.pain_spin.setValue(2)
        qtbot.mouseClick(gui.operator.checkin_button, QtCore.Qt.LeftButton)
        rig.until(lambda: bool(rig.view().pending_checkins), 30)
        rig.until(lambda: "check-in #" in gui.operator.checkin_label.text(), 10)
        cid = rig.view().pending_checkins[0]
        qtbot.mouseClick(gui.operator.pain_button, QtCore.Qt.LeftButton)
        rig.until(lambda: bool(session.machine.pain) and session.machine.pain[-1][1] == 2, 30)
        rig.until(lambda: not rig.view().pending_checkins, 30)
        rig.until(lambda: belt_m_s() > 2.0, 30)
        qtbot.mouseClick(gui.operator.estop_button, QtCore.Qt.LeftButton)
        assert session.wait(30.0)
        assert session.machine.end_reason == "emergency_stop"
        rig.until(lambda: "SESSION ENDED (emergency_stop)" in gui.operator.state_label.text(),
                        30)
        assert "emergency_stop" in gui.operator.alert_label.text()
        # the simulated treadmill obeyed the emergency stop
        rig.until(lambda: belt_m_s() < 0.05, 10)
    finally:
        treadmill.stop()
    sent = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(sent) < 7:
        samples, _ = spy.pull_chunk(timeout=0.5)
        sent += [json.loads(s[0]) for s in samples]
    assert [c["op"] for c in sent] == ["start", "pause", "resume", "skip", "checkin", "pain",
                                       "emergency_stop"]
    assert all(c["source"] == "gui" for c in sent)
    assert sent[5]["pain"] == 2 and sent[5]["id"] == cid
    assert [e for _, e in session.machine.view.events if e.event == "belt_fault"] == []
    # closing after the end sends nothing more
    gui.operator.close()
    rig.until(lambda: gui.done, 30)
    assert not gui.abort_sent
    assert math.isfinite(session.machine.records[-1].end_s)
