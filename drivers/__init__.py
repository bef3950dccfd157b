"""Device side of labsuite (installed as ``labsuite.drivers``): one module per device family.

A driver reads its hardware (or the simulator), calibrates, and publishes LSL outlets described by
``labsuite.streams.contracts``. Drivers know nothing of processing, protocols or archives.
"""
