"""Session archive: one crash-safe HDF5 file per session, readers, replay and exports.

``writer.SessionWriter`` (SWMR, own thread, flush at least once a second) and ``recorder.Recorder``
(LSL streams into it) write; ``reader.open_session`` reads; ``inspect``, ``export`` (C3D, CSV) and
``replay`` (session or C3D back onto LSL) build on the reader. The layout is in docs/archive.md.
Nothing is imported here: h5py and pylsl load only when a submodule is used.
"""
