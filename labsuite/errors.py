"""Typed errors for labsuite: every message names the file, field or byte and what was expected.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""


class LabsuiteError(Exception):
    """Base class of every error labsuite raises on purpose (bad input, unreachable device, ...)."""


class ConfigError(LabsuiteError):
    """A protocol, lab, calibration or command-line setting is missing or invalid."""


class DeviceError(LabsuiteError):
    """A device or stream could not be reached, or sent something it should not have."""


class CalibrationError(LabsuiteError):
    """A calibration file or a calibration check is invalid or out of tolerance."""


class ArchiveError(LabsuiteError):
    """A session file cannot be written or read as expected."""


class DataFileError(LabsuiteError):
    """An input data file (C3D, delimited text) is unreadable or lacks what was asked for."""
