"""Real-time step processing: filters, forces and COP, foot contacts, per-step loading metrics.

Kernels and plain objects only (no threads, no LSL, no Qt, no HDF5): :mod:`labsuite.realtime.processor`
(``ProcessorSettings``, ``StepProcessor``, ``process_arrays``) and :mod:`labsuite.realtime.files`
(C3D and text loaders for ``labsuite analyze``). Plate geometry is :mod:`labsuite.plates`; the
live runner that feeds the processor from LSL is :mod:`labsuite.lab.live`. See docs/processing.md.
"""
