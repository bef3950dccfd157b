"""Simulated gait lab: a virtual participant on an instrumented treadmill, one process per device."""
