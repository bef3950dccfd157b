"""Real-time step processing: filters, forces and COP, foot contacts, per-step loading metrics."""
