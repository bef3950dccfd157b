"""labsuite: run a gait-retraining lab on an instrumented treadmill.

Drivers publish device streams over Lab Streaming Layer; the lab side acquires them, computes
per-step loading metrics in real time, runs scripted cadence protocols and archives each session
to one HDF5 file. See DESIGN.md in the shared folder for the data flow.
"""

__version__ = "0.1.0"
