"""Operator commands over LSL: how a GUI (or any process) drives a running session.

The session reads a JSON string stream whose source_id is ``labsuite.ids.operator_source_id(lab)``;
each sample is one command such as ``{"op":"pause"}`` or ``{"op":"pain","pain":2,"id":3}``.
:class:`OperatorConsole` publishes them; the session (:mod:`labsuite.protocol.session`) obeys them.
"""

from __future__ import annotations

import threading
from typing import Any

from labsuite.errors import ConfigError, DeviceError
from labsuite.ids import check_lab_id, operator_source_id
from labsuite.streams.contracts import commands_spec
from labsuite.streams.messages import decode, encode

OP_START = "start"  # the operator's Start: the belt waiting for it may move
OP_PAUSE = "pause"
OP_RESUME = "resume"
OP_SKIP = "skip"
OP_ABORT = "abort"
OP_EMERGENCY_STOP = "emergency_stop"
OP_CHECKIN = "checkin"  # ask for a pain rating now
OP_PAIN = "pain"  # fields: pain (0-10), id (the checkin_request id answered; optional)
OPERATOR_COMMANDS = (OP_START, OP_PAUSE, OP_RESUME, OP_SKIP, OP_ABORT, OP_EMERGENCY_STOP, OP_CHECKIN, OP_PAIN)


def operator_command(op: str, /, **fields: Any) -> str:
    """Encode an operator command; ConfigError for an unknown one or a bad pain rating."""
    if op not in OPERATOR_COMMANDS:
        raise ConfigError(f"operator command {op!r}: expected one of {OPERATOR_COMMANDS}")
    if op == OP_PAIN:
        pain = fields.get("pain")
        if isinstance(pain, bool) or not isinstance(pain, int) or not 0 <= pain <= 10:
            raise ConfigError(f"operator command pain: field pain expected an integer 0-10, got {pain!r}")
    return encode("op", op, **fields)


def parse_operator_command(text: str) -> dict[str, Any]:
    """Decode one operator command; ConfigError naming the text when it is not one."""
    try:
        obj = decode(text)
    except DeviceError as exc:
        raise ConfigError(f"operator command {text[:80]!r}: {exc}") from None
    op = obj.get("op")
    if op not in OPERATOR_COMMANDS:
        raise ConfigError(f"operator command {text[:80]!r}: field 'op' expected one of "
                          f"{OPERATOR_COMMANDS}")
    if op == OP_PAIN:
        pain = obj.get("pain")
        if isinstance(pain, bool) or not isinstance(pain, int) or not 0 <= pain <= 10:
            raise ConfigError(f"operator command {text[:80]!r}: field 'pain' expected an integer 0-10")
    return obj


class OperatorConsole:
    """Publish operator commands for the session of ``lab_id`` (what the GUI uses).

    ``source`` names the sender in the session's ``operator`` markers (e.g. 'gui').
    """

    def __init__(self, lab_id: str, *, source: str = "console") -> None:
        import pylsl

        self.lab_id = check_lab_id(lab_id)
        self.source = source
        spec = commands_spec(operator_source_id(lab_id), name=f"labsuite-operator-{lab_id}")
        self._outlet = pylsl.StreamOutlet(spec.to_info())
        self._lock = threading.Lock()

    def wait_for_session(self, timeout_s: float) -> bool:
        """Block until the session has connected to this console (True) or the timeout passed."""
        return bool(self._outlet.wait_for_consumers(timeout_s))

    def send(self, op: str, /, **fields: Any) -> None:
        """Publish one command now."""
        text = operator_command(op, source=self.source, **fields)
        with self._lock:
            self._outlet.push_sample([text])

    def start(self) -> None:
        """Start the belt that waits for the operator (the console's Start button)."""
        self.send(OP_START)

    def pause(self) -> None:
        """Pause the session (belt ramps to a stop, stage clock frozen)."""
        self.send(OP_PAUSE)

    def resume(self) -> None:
        """Resume a paused session."""
        self.send(OP_RESUME)

    def skip(self) -> None:
        """End the current stage and start the next."""
        self.send(OP_SKIP)

    def abort(self) -> None:
        """End the session (ramped stop)."""
        self.send(OP_ABORT)

    def emergency_stop(self) -> None:
        """Emergency stop: the session sends emergency_stop to the treadmill at once."""
        self.send(OP_EMERGENCY_STOP)

    def request_checkin(self) -> None:
        """Ask the participant for a pain rating now."""
        self.send(OP_CHECKIN)

    def pain(self, rating: int, checkin_id: int | None = None) -> None:
        """Answer a check-in with a pain rating 0-10."""
        fields: dict[str, Any] = {"pain": rating}
        if checkin_id is not None:
            fields["id"] = checkin_id
        self.send(OP_PAIN, **fields)

    def close(self) -> None:
        """Destroy the outlet."""
        self._outlet = None
