"""The two feedback windows (PyQt5 + pyqtgraph): the operator console and the participant display.

Sits at the end of the data flow: a :class:`GuiController` timer takes one
:class:`~labsuite.feedback.feed.Snapshot` per frame from the :class:`LiveFeed` and hands it to both
windows, which only draw it. The console's buttons publish operator commands (the session obeys
them); closing either window ends the session with an ``abort`` command (documented in
docs/feedback.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pylsl
import pyqtgraph as pg
from PyQt5 import QtCore, QtGui, QtWidgets

from labsuite.feedback.feed import LiveFeed, Snapshot
from labsuite.protocol import operator as op

log = logging.getLogger(__name__)

BELT_COLOURS = {"left": (230, 70, 70), "right": (60, 140, 255), "single": (40, 190, 90)}
BAND_GREEN = (40, 170, 70)
# How long the metronome pulse stays lit after a beat (s): short enough to feel like a click.
PULSE_DECAY_S = 0.12
COP_MIN_FORCE_N = 50.0
COP_POINTS_PER_S = 250.0


class TimedPlot(pg.PlotWidget):
    """A plot that notes when each frame was painted and the newest sample time it showed.

    ``shown_s`` is set by the drawing code before the repaint; with ``frames`` not None every
    paint appends ``(paint_end_lsl_s, shown_s)`` (for latency benchmarks).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shown_s: tuple[float, ...] = ()
        self.paints = 0
        self.frames: deque[tuple[float, tuple[float, ...]]] | None = None

    def paintEvent(self, ev: Any) -> None:
        """Paint, then note the frame."""
        super().paintEvent(ev)
        self.paints += 1
        if self.frames is not None:
            self.frames.append((pylsl.local_clock(), self.shown_s))


def _pen(rgb: tuple[int, int, int], width: float = 1.0) -> Any:
    # width 1: wider pens made the software rasteriser ~7 ms slower per curve and frame (profiled)
    return pg.mkPen(color=rgb, width=width)


def _fmt(value: float, spec: str = ".0f", unit: str = "") -> str:
    return f"{value:{spec}}{unit}" if math.isfinite(value) else "–"


class OperatorWindow(QtWidgets.QMainWindow):
    """Stream health, force and COP traces, step metrics, stage progress, session controls."""

    def __init__(self, feed: LiveFeed, console: op.OperatorConsole | None,
                 on_close: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.feed = feed
        self.console = console
        self.on_close = on_close
        s = feed.settings
        self.setWindowTitle(f"labsuite operator console — lab {s.lab_id}")
        self.resize(1400, 900)
        central = QtWidgets.QWidget()
        self.setCentralWidget(central)
        root = QtWidgets.QHBoxLayout(central)

        # ---- left column: identity, stage, controls, health, events ----
        panel = QtWidgets.QWidget()
        panel.setFixedWidth(480)
        left = QtWidgets.QVBoxLayout(panel)
        left.setContentsMargins(0, 0, 0, 0)
        root.addWidget(panel, 0)
        self.identity = QtWidgets.QLabel(
            f"Participant <b>{s.participant_id or '–'}</b><br>File <b>{s.session_file or '–'}</b>")
        self.identity.setTextFormat(QtCore.Qt.RichText)
        self.identity.setWordWrap(True)
        left.addWidget(self.identity)
        self.state_label = QtWidgets.QLabel("waiting for the session")
        self.state_label.setStyleSheet("font-size: 16px; font-weight: bold")
        left.addWidget(self.state_label)
        self.stage_label = QtWidgets.QLabel("")
        self.stage_label.setWordWrap(True)
        self.stage_label.setStyleSheet("font-size: 15px")
        left.addWidget(self.stage_label)
        self.alert_label = QtWidgets.QLabel("")
        self.alert_label.setStyleSheet("color: #c00; font-weight: bold")
        self.alert_label.setWordWrap(True)
        left.addWidget(self.alert_label)

        buttons = QtWidgets.QGridLayout()
        left.addLayout(buttons)
        self.start_button = QtWidgets.QPushButton("Start")
        self.pause_button = QtWidgets.QPushButton("Pause")
        self.resume_button = QtWidgets.QPushButton("Resume")
        self.skip_button = QtWidgets.QPushButton("Skip stage")
        self.abort_button = QtWidgets.QPushButton("Abort")
        self.estop_button = QtWidgets.QPushButton("EMERGENCY STOP")
        self.estop_button.setStyleSheet("background: #d00; color: white; font-weight: bold; "
                                        "font-size: 16px; padding: 10px")
        for i, b in enumerate((self.start_button, self.pause_button, self.resume_button,
                               self.skip_button, self.abort_button)):
            buttons.addWidget(b, i // 3, i % 3)
        buttons.addWidget(self.estop_button, 2, 0, 1, 3)
        # enabled while the belt waits for the operator (_draw_stage): it never starts by itself
        self.start_button.setEnabled(False)
        self.start_button.setToolTip("starts the belt when the session waits for you (the stage "
                                     "about to run the belt)")
        self.start_button.setStyleSheet("font-weight: bold")
        self.start_button.clicked.connect(lambda: self._send(op.OP_START))
        self.pause_button.clicked.connect(lambda: self._send(op.OP_PAUSE))
        self.resume_button.clicked.connect(lambda: self._send(op.OP_RESUME))
        self.skip_button.clicked.connect(lambda: self._send(op.OP_SKIP))
        self.abort_button.clicked.connect(lambda: self._send(op.OP_ABORT))
        self.estop_button.clicked.connect(lambda: self._send(op.OP_EMERGENCY_STOP))

        checkin = QtWidgets.QHBoxLayout()
        left.addLayout(checkin)
        self.checkin_button = QtWidgets.QPushButton("Ask pain")
        self.pain_spin = QtWidgets.QSpinBox()
        self.pain_spin.setRange(0, 10)
        self.pain_button = QtWidgets.QPushButton("Send pain")
        checkin.addWidget(self.checkin_button)
        checkin.addWidget(QtWidgets.QLabel("pain 0-10"))
        checkin.addWidget(self.pain_spin)
        checkin.addWidget(self.pain_button)
        self.checkin_label = QtWidgets.QLabel("")
        left.addWidget(self.checkin_label)
        self.checkin_button.clicked.connect(lambda: self._send(op.OP_CHECKIN))
        self.pain_button.clicked.connect(self._send_pain)
        for b in (self.pause_button, self.resume_button, self.skip_button, self.abort_button,
                  self.estop_button, self.checkin_button, self.pain_button):
            b.setEnabled(console is not None)

        self.health = QtWidgets.QTableWidget(0, 6)
        self.health.setHorizontalHeaderLabels(["stream", "rate Hz", "nominal", "gaps", "dropped",
                                               "lag ms"])
        self.health.verticalHeader().setVisible(False)
        header = self.health.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeToContents)
        header.setStretchLastSection(True)
        self.health.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        left.addWidget(self.health, 2)
        self.events = QtWidgets.QListWidget()
        left.addWidget(self.events, 1)
        self._events_shown = 0

        # ---- right: plots ----
        grid = QtWidgets.QGridLayout()
        root.addLayout(grid, 1)
        self.force_plot = TimedPlot(title="vertical force per belt (N)")
        self.force_plot.setLabel("bottom", "time", units="s")
        self.force_plot.addLegend(offset=(5, 5))
        self.force_plot.setXRange(-s.window_s, 0.0, padding=0)
        self.force_plot.enableAutoRange(axis="y")
        self.curves: dict[str, Any] = {}
        self.cop_curves: dict[str, Any] = {}
        self._cop_ds: dict[str, int] = {}
        self.cop_plot = TimedPlot(title="COP, top view (m): butterfly")
        self.cop_plot.setLabel("bottom", "medio-lateral (left ←)")
        self.cop_plot.setLabel("left", "anterior-posterior (forward ↑)")
        self.cop_plot.setAspectLocked(True)
        for axis in ("bottom", "left"):
            self.cop_plot.getAxis(axis).enableAutoSIPrefix(False)
        for belt, _ in s.plates:
            rgb = BELT_COLOURS[belt]
            curve = self.force_plot.plot(pen=_pen(rgb), name=belt)
            curve.setDownsampling(auto=True, method="peak")
            curve.setClipToView(True)
            self.curves[belt] = curve
            self.cop_curves[belt] = self.cop_plot.plot(pen=_pen(rgb, 1.0))
        self.load_plot = TimedPlot(title="loading rate per step (BW/s)")
        self.load_plot.setLabel("bottom", "step")
        self.load_plot.addLegend(offset=(5, 5))
        self.valr_curve = self.load_plot.plot(pen=None, symbol="o", symbolSize=5,
                                              symbolBrush=(230, 140, 30), name="VALR")
        self.vilr_curve = self.load_plot.plot(pen=None, symbol="t", symbolSize=5,
                                              symbolBrush=(150, 80, 200), name="VILR")
        self.valr_base_line = pg.InfiniteLine(angle=0, pen=pg.mkPen((200, 200, 200),
                                                                    style=QtCore.Qt.DashLine))
        self.valr_max_line = pg.InfiniteLine(angle=0, pen=pg.mkPen((220, 40, 40), width=2))
        for line in (self.valr_base_line, self.valr_max_line):
            line.setVisible(False)
            self.load_plot.addItem(line)
        self.cadence_plot = TimedPlot(title="cadence (steps/min) and the stage target")
        self.cadence_plot.setLabel("bottom", "step")
        self.band = pg.LinearRegionItem(values=(0, 1), orientation="horizontal", movable=False,
                                        brush=pg.mkBrush(*BAND_GREEN, 70))
        self.band.setVisible(False)
        self.cadence_plot.addItem(self.band)
        self.target_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(BAND_GREEN, width=2))
        self.target_line.setVisible(False)
        self.cadence_plot.addItem(self.target_line)
        self.cadence_curve = self.cadence_plot.plot(pen=_pen((240, 240, 240), 1.0), symbol="o",
                                                    symbolSize=4, symbolBrush=(240, 240, 240))
        grid.addWidget(self.force_plot, 0, 0, 1, 2)
        grid.addWidget(self.cop_plot, 1, 0)
        grid.addWidget(self.cadence_plot, 1, 1)
        grid.addWidget(self.load_plot, 2, 0, 1, 2)

    # ---- commands --------------------------------------------------------------------------
    def _send(self, name: str) -> None:
        if self.console is None:
            return
        self.console.send(name)

    def _send_pain(self) -> None:
        if self.console is None:
            return
        pending = self._pending
        self.console.pain(int(self.pain_spin.value()), pending[0] if pending else None)

    _pending: tuple[int, ...] = ()
    _steps_key: tuple[Any, ...] = ()

    # ---- drawing ---------------------------------------------------------------------------
    def draw(self, snap: Snapshot) -> None:
        """Draw one frame from a snapshot (no computing beyond what is drawn)."""
        shown = []
        for tr in snap.traces:
            curve = self.curves[tr.belt]
            curve.setData(tr.t_s - snap.now_s, tr.fz_n)
            loaded = tr.fz_n >= COP_MIN_FORCE_N
            # the butterfly's shape needs ~250 points a second, not the plate's 1-2 kHz
            ds = max(1, int(len(tr.t_s) / (self.feed.settings.window_s * COP_POINTS_PER_S)))
            if self._cop_ds.get(tr.belt) != ds:
                self.cop_curves[tr.belt].setDownsampling(ds=ds, method="subsample")
                self._cop_ds[tr.belt] = ds
            # top view: x forward is up the screen, lab +y (left) is to the screen's left
            self.cop_curves[tr.belt].setData(-tr.cop_m[loaded, 1], tr.cop_m[loaded, 0],
                                             connect="finite")
            shown.append(float(tr.t_s[-1]) if len(tr.t_s) else math.nan)
        self.force_plot.shown_s = tuple(shown)
        self._draw_steps(snap)
        self._draw_stage(snap)

    def _draw_steps(self, snap: Snapshot) -> None:
        v = snap.session
        # steps arrive a few times a second: redraw these plots only when something changed
        key = (snap.steps_total, v.stage_index, v.feedback_on, v.target_spm, v.band_spm,
               v.valr_max_bw_per_s, v.baseline_valr_bw_per_s)
        if key == self._steps_key:
            return
        self._steps_key = key
        steps = snap.steps
        n = len(steps)
        x = np.arange(snap.steps_total - n, snap.steps_total, dtype=np.float64)
        ok = ~(steps["crossover"] >= 1)
        # only finite points: pyqtgraph's scatter bounds warn on all-NaN data (no impact yet)
        for curve, name in ((self.valr_curve, "valr_bw_per_s"), (self.vilr_curve, "vilr_bw_per_s")):
            keep = ok & np.isfinite(steps[name])
            curve.setData(x[keep], steps[name][keep])
        keep = np.isfinite(steps["cadence_spm"])
        self.cadence_curve.setData(x[keep], steps["cadence_spm"][keep])
        base = v.baseline_valr_bw_per_s
        self.valr_base_line.setVisible(math.isfinite(base))
        if math.isfinite(base):
            self.valr_base_line.setValue(base)
        self.valr_max_line.setVisible(v.feedback_on and math.isfinite(v.valr_max_bw_per_s))
        if math.isfinite(v.valr_max_bw_per_s):
            self.valr_max_line.setValue(v.valr_max_bw_per_s)
        low, high = v.band_spm
        has_band = math.isfinite(low) and math.isfinite(high)
        self.band.setVisible(has_band)
        if has_band:
            self.band.setRegion((low, high))
        self.target_line.setVisible(math.isfinite(v.target_spm))
        if math.isfinite(v.target_spm):
            self.target_line.setValue(v.target_spm)

    def _draw_stage(self, snap: Snapshot) -> None:
        v = snap.session
        state = {"waiting": "waiting for the session", "running": "RUNNING", "paused": "PAUSED",
                 "finished": f"SESSION ENDED ({v.end_reason})"}.get(v.state, v.state)
        if v.awaiting_start and v.state == "paused":
            state = "WAITING FOR START: press Start to run the belt"
        self.state_label.setText(state)
        self.start_button.setEnabled(self.console is not None and v.awaiting_start
                                     and v.state == "paused")
        if v.stage_index >= 0 and v.state != "finished":
            if snap.stage_step_limit:
                left = f"{max(0, snap.stage_step_limit - snap.stage_steps)} steps left"
            else:
                left = f"{_fmt(v.time_left_s(snap.now_s))} s left"
            target = ""
            if math.isfinite(v.target_spm):
                target = (f"<br>target {v.target_spm:.0f} spm "
                          f"(band {_fmt(v.band_spm[0])}–{_fmt(v.band_spm[1])})")
            cadence = float(snap.steps["cadence_spm"][-1]) if len(snap.steps) else math.nan
            self.stage_label.setText(
                f"stage {v.stage_index + 1}: <b>{v.stage_name}</b> ({v.stage_kind}) — {left}"
                f"{target}<br>cadence now {_fmt(cadence)} spm · {snap.stage_steps} steps in stage"
                f" · feedback {'on' if v.feedback_on else 'off'}"
                + (f" · metronome {v.metronome_spm:.0f} spm" if v.metronome_spm else ""))
        else:
            self.stage_label.setText("")
        self.alert_label.setText(v.alert)
        self._pending = v.pending_checkins
        self.checkin_label.setText(
            f"check-in #{v.pending_checkins[0]} waiting: ask the participant for pain 0-10"
            if v.pending_checkins else "")
        if len(snap.events) != self._events_shown or (snap.events and self.events.count() == 0):
            self.events.clear()
            self.events.addItems(list(snap.events[-100:]))
            self.events.scrollToBottom()
            self._events_shown = len(snap.events)

    def draw_health(self) -> None:
        """Refresh the stream health table (twice a second is plenty)."""
        rows = self.feed.health()
        self.health.setRowCount(len(rows))
        for i, row in enumerate(rows):
            st = row.stats
            regular = row.nominal_rate_hz > 0
            # lag means something only for a regular stream; an irregular one is just quiet
            values = [row.label, _fmt(st.measured_rate_hz, ".1f"),
                      _fmt(row.nominal_rate_hz, ".0f") if regular else "irregular",
                      str(st.gaps), str(st.dropped), _fmt(st.lag_s * 1000, ".0f") if regular else "–"]
            for j, text in enumerate(values):
                item = self.health.item(i, j)
                if item is None:
                    item = QtWidgets.QTableWidgetItem()
                    self.health.setItem(i, j, item)
                item.setText(text)
            colour = QtGui.QColor(255, 255, 255) if st.connected else QtGui.QColor(255, 200, 200)
            for j in range(len(values)):
                self.health.item(i, j).setBackground(colour)

    def closeEvent(self, ev: Any) -> None:
        """Closing the window ends the session (see GuiController.close_session)."""
        if self.on_close is not None:
            self.on_close()
        super().closeEvent(ev)


class ParticipantWindow(QtWidgets.QWidget):
    """One large cue on black: cadence against the band, or a loading / tibial-shock bar; a pulse.

    Blank while the stage's feedback is off (fading schedule) or no session runs.
    """

    def __init__(self, on_close: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.on_close = on_close
        self.setWindowTitle("labsuite participant display")
        self.resize(1024, 640)
        self.setAutoFillBackground(True)
        pal = self.palette()
        pal.setColor(QtGui.QPalette.Window, QtGui.QColor(0, 0, 0))
        self.setPalette(pal)
        self.snap: Snapshot | None = None
        self.cue = "blank"  # what the last frame drew: blank, cadence, loading, tibial, paused
        self.pulse_level = 0.0

    def show_on_second_screen(self) -> None:
        """Full screen on the second screen when there is one; a normal window otherwise."""
        screens = QtWidgets.QApplication.screens()
        if len(screens) > 1:
            self.setGeometry(screens[1].geometry())
            self.showFullScreen()
        else:
            self.show()

    def draw(self, snap: Snapshot) -> None:
        """Take the frame's snapshot and repaint."""
        self.snap = snap
        self.update()

    # the cue values: a few numbers picked from the snapshot, drawn below
    def _latest(self, name: str, n: int = 4) -> float:
        assert self.snap is not None
        steps = self.snap.steps[-n:]
        vals = steps[name][~(steps["crossover"] >= 1)]
        vals = vals[np.isfinite(vals)]
        return float(vals[-1]) if len(vals) else math.nan

    def paintEvent(self, ev: Any) -> None:
        """Draw the cue of the last snapshot on black."""
        p = QtGui.QPainter(self)
        try:
            p.setRenderHint(QtGui.QPainter.Antialiasing)
            p.fillRect(self.rect(), QtGui.QColor(0, 0, 0))
            self.cue = self._paint(p)
        finally:
            p.end()

    def _paint(self, p: Any) -> str:
        snap = self.snap
        if snap is None:
            return "blank"
        v = snap.session
        w, h = self.width(), self.height()
        if v.pending_checkins:
            self._text(p, "How much pain? 0–10", QtCore.QRectF(0, 0.05 * h, w, 0.15 * h), 0.07 * h,
                       (255, 220, 120))
        if v.state == "paused":
            self._text(p, "PAUSED", QtCore.QRectF(0, 0.35 * h, w, 0.3 * h), 0.15 * h, (160, 160, 160))
            return "paused"
        if v.state != "running" or not v.feedback_on:
            self.pulse_level = 0.0
            return "blank"
        self._pulse(p, snap, w, h)
        if v.cue_band is not None:
            self._cadence(p, snap, w, h)
            return "cadence"
        if math.isfinite(v.valr_max_bw_per_s):
            self._bar(p, self._latest("valr_bw_per_s"), v.valr_max_bw_per_s, "loading", w, h)
            return "loading"
        if math.isfinite(v.tibial_max_g):
            self._bar(p, self._latest("tibial_peak_g"), v.tibial_max_g, "tibial shock", w, h)
            return "tibial"
        return "pulse" if v.metronome_spm and v.metronome_flash else "blank"

    def _pulse(self, p: Any, snap: Snapshot, w: int, h: int) -> None:
        v = snap.session
        # only when the cue asks for it (metronome flash: true): a flash is a second cue
        if not v.metronome_spm or not v.metronome_flash or not math.isfinite(snap.beat_s):
            self.pulse_level = 0.0
            return
        age = snap.now_s - snap.beat_s
        self.pulse_level = math.exp(-max(0.0, age) / PULSE_DECAY_S) if age < 1.0 else 0.0
        level = int(40 + 215 * self.pulse_level)
        r = 0.06 * h
        p.setPen(QtCore.Qt.NoPen)
        p.setBrush(QtGui.QColor(level, level, level))
        p.drawEllipse(QtCore.QPointF(w / 2, 0.28 * h), r, r)

    def _cadence(self, p: Any, snap: Snapshot, w: int, h: int) -> None:
        v = snap.session
        assert v.cue_band is not None
        low, high = v.cue_band
        cadence = self._latest("cadence_spm", 1)
        half = max(high - low, 4.0)
        lo, hi = low - 1.5 * half, high + 1.5 * half
        x0, x1, y, th = 0.08 * w, 0.92 * w, 0.58 * h, 0.12 * h

        def px(spm: float) -> float:
            return x0 + (min(max(spm, lo), hi) - lo) / (hi - lo) * (x1 - x0)

        p.setPen(QtCore.Qt.NoPen)
        p.setBrush(QtGui.QColor(60, 60, 60))
        p.drawRoundedRect(QtCore.QRectF(x0, y - th / 2, x1 - x0, th), 8, 8)
        p.setBrush(QtGui.QColor(*BAND_GREEN))
        p.drawRect(QtCore.QRectF(px(low), y - th / 2, px(high) - px(low), th))
        if math.isfinite(cadence):
            inside = low <= cadence <= high
            p.setBrush(QtGui.QColor(255, 255, 255) if inside else QtGui.QColor(255, 150, 0))
            p.drawEllipse(QtCore.QPointF(px(cadence), y), 0.09 * h, 0.09 * h)
        self._text(p, _fmt(cadence), QtCore.QRectF(0, 0.72 * h, w, 0.18 * h), 0.12 * h,
                   (230, 230, 230))
        self._text(p, "steps / min", QtCore.QRectF(0, 0.88 * h, w, 0.08 * h), 0.04 * h,
                   (150, 150, 150))

    def _bar(self, p: Any, value: float, limit: float, label: str, w: int, h: int) -> None:
        x0, x1, y, th = 0.1 * w, 0.9 * w, 0.6 * h, 0.16 * h
        full = 1.5 * limit
        frac = min(max(value / full, 0.0), 1.0) if math.isfinite(value) and full > 0 else 0.0
        p.setPen(QtCore.Qt.NoPen)
        p.setBrush(QtGui.QColor(60, 60, 60))
        p.drawRect(QtCore.QRectF(x0, y - th / 2, x1 - x0, th))
        over = math.isfinite(value) and value > limit
        p.setBrush(QtGui.QColor(220, 50, 50) if over else QtGui.QColor(*BAND_GREEN))
        p.drawRect(QtCore.QRectF(x0, y - th / 2, frac * (x1 - x0), th))
        xl = x0 + (x1 - x0) / 1.5
        p.setPen(QtGui.QPen(QtGui.QColor(255, 255, 255), 6))
        p.drawLine(QtCore.QPointF(xl, y - 0.7 * th), QtCore.QPointF(xl, y + 0.7 * th))
        self._text(p, label, QtCore.QRectF(0, 0.78 * h, w, 0.1 * h), 0.06 * h, (200, 200, 200))

    @staticmethod
    def _text(p: Any, text: str, rect: Any, size_px: float, rgb: tuple[int, int, int]) -> None:
        font = QtGui.QFont()
        font.setPixelSize(max(8, int(size_px)))
        font.setBold(True)
        p.setFont(font)
        p.setPen(QtGui.QColor(*rgb))
        p.drawText(rect, QtCore.Qt.AlignCenter, text)

    def closeEvent(self, ev: Any) -> None:
        """Closing the window ends the session (see GuiController.close_session)."""
        if self.on_close is not None:
            self.on_close()
        super().closeEvent(ev)


class GuiController(QtCore.QObject):
    """Owns the windows and the frame timer; ends the session when a window is closed.

    Every frame: one snapshot, drawn by both windows. ``ticks``, ``gui_cpu_s`` (thread CPU time
    spent in frame slots) and ``frame_wall_s`` are kept for benchmarks. ``finished`` is emitted once
    the windows are closed and the session has ended (or ``close_wait_s`` passed).
    """

    finished = QtCore.pyqtSignal()

    def __init__(self, feed: LiveFeed, console: op.OperatorConsole | None, *,
                 close_wait_s: float = 5.0) -> None:
        super().__init__()
        self.feed = feed
        self.console = console
        self.close_wait_s = close_wait_s
        self.operator = OperatorWindow(feed, console, on_close=self.close_session)
        self.participant = ParticipantWindow(on_close=self.close_session)
        self.ticks = 0
        self.gui_cpu_s = 0.0
        self.last_snapshot: Snapshot | None = None
        self.closing = False
        self.done = False
        self.abort_sent = False
        self._close_deadline = 0.0
        self._close_started = 0.0
        self._timer = QtCore.QTimer(self)
        self._timer.setTimerType(QtCore.Qt.PreciseTimer)
        self._timer.timeout.connect(self.frame)
        self._health_timer = QtCore.QTimer(self)
        self._health_timer.timeout.connect(self.operator.draw_health)
        self._close_timer = QtCore.QTimer(self)
        self._close_timer.timeout.connect(self._check_closed)

    def show(self, *, second_screen: bool = True) -> None:
        """Show both windows and start drawing."""
        self.operator.show()
        if second_screen:
            self.participant.show_on_second_screen()
        else:
            self.participant.show()
        self._timer.start(max(1, round(1000.0 / self.feed.settings.fps)))
        self._health_timer.start(500)

    def frame(self) -> None:
        """One frame: snapshot the feed, hand it to both windows (they repaint on their own)."""
        t0 = time.thread_time()
        snap = self.feed.snapshot()
        self.operator.draw(snap)
        self.participant.draw(snap)
        self.last_snapshot = snap
        self.ticks += 1
        self.gui_cpu_s += time.thread_time() - t0

    def close_session(self) -> None:
        """A window was closed: send ``abort`` unless the session already ended, then wait for it."""
        if self.closing:
            return
        self.closing = True
        self._timer.stop()
        self._health_timer.stop()
        for w in (self.operator, self.participant):
            if w.isVisible():
                w.hide()
        snap = self.feed.snapshot()
        if self.console is not None and snap.session.state != "finished":
            self.console.abort()
            self.abort_sent = True
        self._close_started = time.monotonic()
        self._close_deadline = self._close_started + self.close_wait_s
        self._close_timer.start(50)

    def stop_without_abort(self) -> None:
        """Close the windows because the run is ending anyway (the supervisor asked)."""
        self.closing = True
        self._timer.stop()
        self._health_timer.stop()
        self.operator.hide()
        self.participant.hide()
        self._finish()

    def _check_closed(self) -> None:
        state = self.feed.snapshot().session.state
        ended = state == "finished"
        # an abort of a session that never started ends nothing: do not wait for it, but give the
        # command a moment on the wire before the outlet goes
        never_started = state == "waiting" and time.monotonic() - self._close_started > 0.5
        if ended or never_started or time.monotonic() >= self._close_deadline:
            if not ended and not never_started:
                log.warning("the session did not confirm the abort within %.1f s", self.close_wait_s)
            self._finish()

    def _finish(self) -> None:
        self._close_timer.stop()
        if not self.done:
            self.done = True
            self.finished.emit()
