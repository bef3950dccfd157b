"""Commands on the LSL bus, and the JSON encoding that commands and markers share.

The session publishes treadmill commands (speed, stop, emergency stop, heartbeat, incline) on
its commands stream; the treadmill driver obeys them. Its markers (stages, cues, beats, check-ins)
are defined once in :mod:`labsuite.markers`; operator commands in :mod:`labsuite.protocol.operator`.
One JSON object per LSL string sample keeps all three readable in any XDF/LSL viewer and parseable
without labsuite.
"""

from __future__ import annotations

import json
import math
from typing import Any

from labsuite.errors import DeviceError

# Treadmill commands (session -> treadmill driver).
CMD_SPEED = "speed"  # fields: right_m_s, left_m_s, accel_m_s2
CMD_STOP = "stop"  # ramped stop; fields: decel_m_s2 (optional)
CMD_EMERGENCY_STOP = "emergency_stop"  # stop at the treadmill's maximum safe deceleration
CMD_HEARTBEAT = "heartbeat"  # fields: seq; missing for HEARTBEAT_TIMEOUT_S -> the driver stops the belt
CMD_INCLINE = "incline"  # fields: incline_deg
TREADMILL_COMMANDS = (CMD_SPEED, CMD_STOP, CMD_EMERGENCY_STOP, CMD_HEARTBEAT, CMD_INCLINE)

HEARTBEAT_PERIOD_S = 0.1
HEARTBEAT_TIMEOUT_S = 0.5

# Two marker names kept here until labsuite/report.py reads markers through labsuite.markers
# (whose Metronome and Beat events they name); use the marker classes.
EVENT_METRONOME = "metronome"
EVENT_BEAT = "beat"


def encode(kind_field: str, name: str, /, **fields: Any) -> str:
    """Encode one marker or command as a compact JSON string; NaN becomes null."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in fields.items()}
    return json.dumps({kind_field: name, **clean}, separators=(",", ":"), sort_keys=False)


def command(name: str, /, **fields: Any) -> str:
    """Encode a treadmill command, e.g. ``command(CMD_SPEED, right_m_s=3.0, left_m_s=3.0)``."""
    if name not in TREADMILL_COMMANDS:
        raise DeviceError(f"unknown treadmill command {name!r}; expected one of {TREADMILL_COMMANDS}")
    return encode("cmd", name, **fields)


def marker(event: str, /, **fields: Any) -> str:
    """Encode a marker, e.g. ``marker('stage_start', stage='baseline')``."""
    return encode("event", event, **fields)


def decode(text: str) -> dict[str, Any]:
    """Decode a marker or command string; DeviceError naming the text if it is not a JSON object.

    A plain (non-JSON) marker from another LSL app is returned as ``{"event": text}``.
    """
    stripped = text.strip()
    if not stripped.startswith("{"):
        return {"event": stripped}
    try:
        obj = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise DeviceError(f"marker/command {text[:80]!r} is not valid JSON at character "
                          f"{exc.pos}: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise DeviceError(f"marker/command {text[:80]!r}: expected a JSON object")
    return obj
