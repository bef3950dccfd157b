"""Live feedback windows (PyQt5 + pyqtgraph): operator console and participant display."""
