"""The composition root: which processes a session runs, and how they are wired over LSL.

* :mod:`~labsuite.lab.run` — ``labsuite run``: plan the roles (drivers, processor, recorder, an
  optional GUI handed in by the caller), supervise them, run the session here.
* :mod:`~labsuite.lab.live` — the processor role: plate and IMU streams in, ``labsuite-steps`` out.

Nothing below imports this package; it imports the boxes it wires (docs/architecture.md).
"""
