"""Session archive: one crash-safe HDF5 file per session, readers, replay and exports."""
