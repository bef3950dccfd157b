"""Entry points of the feedback GUI: run it in this process, or as a Supervisor role of a session.

``labsuite run --gui`` / ``labsuite demo --gui`` hand :func:`gui_role` to the run, which adds it
to its Supervisor (restart=False: closing the windows is the operator's decision). The GUI reads
the lab's streams, the steps and the session markers, and publishes operator commands; it never
touches the file.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from labsuite.feedback.feed import FeedSettings, LiveFeed
from labsuite.processes import RoleSpec

log = logging.getLogger(__name__)


def run_gui(settings: FeedSettings, *, stop: Any = None, close_wait_s: float = 5.0,
            second_screen: bool = True) -> int:
    """Open the operator console and the participant display; return 0 when they are closed.

    Closing either window sends ``abort`` to the session (unless it has ended) and waits up to
    ``close_wait_s`` for its ``session_end`` marker. ``stop`` (an Event) set from elsewhere closes
    the windows without sending anything (the run is ending anyway).
    """
    from PyQt5 import QtCore, QtWidgets

    from labsuite.feedback.windows import GuiController
    from labsuite.protocol.operator import OperatorConsole

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    feed = LiveFeed(settings).start()
    console = OperatorConsole(settings.lab_id, source="gui")
    controller = GuiController(feed, console, close_wait_s=close_wait_s)
    controller.finished.connect(app.quit)
    poll = QtCore.QTimer()
    if stop is not None:
        def check_stop() -> None:
            if stop.is_set() and not controller.done:
                controller.stop_without_abort()

        poll.timeout.connect(check_stop)
        poll.start(100)
    try:
        controller.show(second_screen=second_screen)
        if not controller.done:
            app.exec_()
    finally:
        poll.stop()
        feed.stop()
        console.close()
    return 0


def run_gui_role(stop: Any, settings: FeedSettings, close_wait_s: float = 5.0) -> None:
    """Supervisor role: the GUI in its own process (see :func:`run_gui`)."""
    run_gui(settings, stop=stop, close_wait_s=close_wait_s)


def gui_role(protocol: Any, *, lab_id: str, participant_id: str, session_file: Any,
             plates: Mapping[str, str], steps_source_id: str, imus: Mapping[str, str] | None = None,
             extra_source_ids: Iterable[str | None] = (), beats_source_id: str | None = None) -> RoleSpec:
    """The GUI as a Supervisor role for ``labsuite run --gui`` (handed in by the CLI).

    ``plates`` maps belt to source_id, ``imus`` side to source_id; ``extra_source_ids`` (treadmill,
    camera, ...) appear in the health table; ``protocol`` gives the stages' step limits;
    ``beats_source_id`` is the audio metronome's beat stream (the clicks the display flashes on).
    restart is False: closing the windows is the operator's decision, not a crash.
    """
    settings = FeedSettings.for_protocol(
        protocol, lab_id=lab_id, participant_id=participant_id,
        session_file="" if session_file is None else str(session_file),
        plates=tuple(plates.items()), imus=tuple((imus or {}).items()),
        extra_source_ids=tuple(s for s in extra_source_ids if s), steps_source_id=steps_source_id,
        beats_source_id=beats_source_id or "")
    return RoleSpec("gui", run_gui_role, {"settings": settings}, restart=False)
