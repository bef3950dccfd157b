"""LSL helpers shared by the tests: find a stream with plain pylsl as an outside client would; a heartbeat."""

from __future__ import annotations

import threading

import pylsl


def plain_inlet(source_id: str, timeout_s: float = 60.0):
    """A plain pylsl inlet on ``source_id``, found with a continuous resolver.

    One-shot resolves in a process that owns outlets were measured to miss new streams about half
    the time (labsuite/streams/acquisition.py), and a continuous resolver started among many others
    in one process was seen to stay blind (labsuite/protocol/session.py): renew it every 3 s.
    """
    import time

    deadline = time.monotonic() + timeout_s
    resolver, renew_at = None, 0.0
    while time.monotonic() < deadline:
        if time.monotonic() >= renew_at:
            resolver = pylsl.ContinuousResolver(prop="source_id", value=source_id)
            renew_at = time.monotonic() + 3.0
        found = resolver.results()
        if found:
            # recover=False: a pull on a lost stream raises at once instead of waiting in liblsl
            inlet = pylsl.StreamInlet(found[0], max_buflen=60, recover=False)
            inlet.open_stream(timeout=10.0)
            return inlet
        time.sleep(0.1)
    raise AssertionError(f"stream {source_id} not found in {timeout_s} s")


class HeartbeatSender:
    """The session's heartbeat (every 0.1 s, with a sequence number) on ``outlet``, from a thread.

    A context manager, as session.py sends it; for driver tests that need a live session.
    """

    def __init__(self, outlet, period_s: float = 0.1) -> None:
        self.outlet = outlet
        self.period_s = period_s
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from labsuite.streams.messages import command

        while not self._stop.wait(self.period_s):
            self.sent += 1
            self.outlet.push_sample([command("heartbeat", seq=self.sent)])

    def __enter__(self) -> HeartbeatSender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
