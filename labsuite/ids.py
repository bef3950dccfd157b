"""Ids and the stream ids made from them: one rule each, checked before any is used.

A participant id goes into file names and a lab id into every stream's source_id, so both are
checked here once: letters, digits, '-' and '_', starting with a letter or digit (never an
option such as ``-x`` or a hidden file such as ``.x``). The source_id formats of the session's
streams, the processor's steps stream, lab-file devices and simulated devices are built here.
"""

from __future__ import annotations

import re

from labsuite.errors import ConfigError

PARTICIPANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
LAB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,40}$"
DEVICE_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"  # a lab file's device names
_PARTICIPANT = re.compile(PARTICIPANT_ID_PATTERN)
_LAB = re.compile(LAB_ID_PATTERN)
_DEVICE = re.compile(DEVICE_NAME_PATTERN)
PARTICIPANT_ID_RULE = "1-32 letters, digits, '-' or '_', starting with a letter or digit"
LAB_ID_RULE = "1-40 letters, digits, '-' or '_'"


def check_participant_id(participant_id: object, what: str = "participant id") -> str:
    """Return ``participant_id`` if it is a pseudonymous id safe in a file name; ConfigError if not.

    ``what`` names it in the message (``--participant``, ``participant_id``).
    """
    if not isinstance(participant_id, str) or not _PARTICIPANT.match(participant_id):
        raise ConfigError(f"{what}: expected a pseudonymous id of {PARTICIPANT_ID_RULE} "
                          f"(never a name), got {participant_id!r}")
    return participant_id


def check_lab_id(lab_id: object, what: str = "lab_id") -> str:
    """Return ``lab_id`` if it is 1-40 letters, digits, '-' or '_'; ConfigError otherwise."""
    if not isinstance(lab_id, str) or not _LAB.match(lab_id):
        raise ConfigError(f"{what}: expected {LAB_ID_RULE}, got {lab_id!r}")
    return lab_id


# ---- the session's streams -------------------------------------------------------------------

def markers_source_id(lab_id: str) -> str:
    """The session's marker stream (stages, cues, beats, check-ins, operator actions)."""
    return f"labsuite-session-{check_lab_id(lab_id)}-markers"


def commands_source_id(lab_id: str) -> str:
    """The session's treadmill command stream (speed, stop, emergency stop, heartbeat)."""
    return f"labsuite-session-{check_lab_id(lab_id)}-commands"


def operator_source_id(lab_id: str) -> str:
    """The operator command stream the session obeys (published by the GUI or a console)."""
    return f"labsuite-session-{check_lab_id(lab_id)}-operator"


def beats_source_id(lab_id: str) -> str:
    """The beat stream of the session's audio metronome role (one marker per click, at its DAC time)."""
    return f"labsuite-metronome-{check_lab_id(lab_id)}-beats"


def steps_source_id(lab_id: str) -> str:
    """The step stream of the session's processor."""
    return f"labsuite-steps-{check_lab_id(lab_id)}"


# ---- device streams --------------------------------------------------------------------------

def device_source_id(lab_id: str, device: str) -> str:
    """The stream of a lab-file device (``labsuite-<lab>-<device name>``)."""
    if not _DEVICE.match(device):
        raise ConfigError(f"device name: expected 1-32 letters, digits, '-' or '_', got {device!r}")
    return f"labsuite-{check_lab_id(lab_id)}-{device}"


def treadmill_events_source_id(treadmill_source_id: str) -> str:
    """A treadmill driver's events stream (its own belt stops, faults), from its state stream's id."""
    return f"{treadmill_source_id}-events"


def sim_source_id(lab_id: str, device: str) -> str:
    """The stream of a simulated device, or ``gait`` for the virtual participant's plan."""
    return f"labsuite-sim-{check_lab_id(lab_id)}-{device}"
