"""Live feedback windows (PyQt5 + pyqtgraph): operator console and participant display.

The last box of the live data flow: :mod:`labsuite.feedback.feed` (no Qt) reads the lab's streams,
the ``labsuite-steps`` stream and the session markers on worker threads and keeps drawable buffers;
:mod:`labsuite.feedback.windows` draws them on a QTimer and publishes operator commands;
:mod:`labsuite.feedback.app` runs both (``run_gui``, or ``run_gui_role`` under the Supervisor).
Importing this package imports no Qt: only ``windows`` and the functions of ``app`` do.
"""
