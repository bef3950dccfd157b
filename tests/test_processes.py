"""The Supervisor: roles in real child processes, restarts, crash loops, clean stops."""

from __future__ import annotations

import time

from labsuite.processes import StopFlag, Supervisor


def waits_for_stop(stop) -> None:
    while not stop.wait(0.05):
        pass


def crashes_at_once(stop) -> None:
    raise SystemExit(7)


def _wait(cond, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_stop_flag_waits_and_never_blocks_on_set():
    flag = StopFlag()
    t0 = time.monotonic()
    assert flag.wait(0.1) is False and time.monotonic() - t0 >= 0.09
    flag.set()
    assert flag.is_set() and flag.wait(10.0) is True


def test_a_killed_role_restarts_and_stop_after_a_kill_does_not_hang():
    events: list[str] = []
    sup = Supervisor(restart_delay_s=0.3, on_event=lambda role, text: events.append(f"{role}: {text}"))
    sup.add("victim", waits_for_stop)
    sup.add("bystander", waits_for_stop, restart=False)
    sup.start()
    try:
        assert _wait(lambda: all(sup.alive().values()), 30)
        first = sup.pid("victim")
        sup.kill("victim")
        assert _wait(lambda: sup.pid("victim") not in (None, first), 30)
        assert sup.roles["victim"].starts == 2 and sup.roles["victim"].exits == [-9]
        # Killed again and stopped before the restart: stop() must return promptly.
        sup.kill("victim")
        time.sleep(0.1)
    finally:
        t0 = time.monotonic()
        codes = sup.stop(timeout_s=10)
        took = time.monotonic() - t0
    assert took < 10
    assert codes["bystander"] == 0 and codes["victim"] in (-9, 0)
    assert any("exited with code -9" in e for e in events)


def test_a_crash_looping_role_is_given_up_on():
    events: list[str] = []
    sup = Supervisor(restart_delay_s=0.05, on_event=lambda role, text: events.append(text))
    sup.add("broken", crashes_at_once, max_restarts_per_min=2)
    sup.start()
    try:
        assert _wait(lambda: sup.roles["broken"].gave_up, 60)
    finally:
        codes = sup.stop()
    assert sup.roles["broken"].starts == 3 and set(sup.roles["broken"].exits) == {7}
    assert codes["broken"] == 7
    assert any("not restarting" in e for e in events)
