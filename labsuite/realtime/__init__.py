"""Real-time step processing: filters, forces and COP, foot contacts, per-step loading metrics.

Public pieces: :mod:`labsuite.realtime.geometry` (plate output ↔ lab GRF/COP/free moment),
:mod:`labsuite.realtime.processor` (``ProcessorSettings``, ``PlateGeometry``, ``StepProcessor``,
``process_arrays``), :mod:`labsuite.realtime.live` (``LiveRunner``: LSL in, ``labsuite-steps``
out) and :mod:`labsuite.realtime.files` (C3D and text loaders for ``labsuite analyze``). See
docs/processing.md.
"""
