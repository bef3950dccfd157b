"""``labsuite treadmill``: the operator's direct line to the belt controller (status, speed, stop).

Talks to the controller itself (no session, no LSL) through the same driver the session uses, so
the same limits, feedback checks and incline safety apply: the incline is read from a valid
feedback frame first and sent back unchanged, and no option goes beyond the model's hard ceiling.
"""

from __future__ import annotations

import argparse

COMMAND = "treadmill"
HELP = "Read or set the treadmill belts directly (status, speed, stop)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--bertec HOST:PORT`` and the status|speed|stop actions."""
    parser.add_argument("--bertec", metavar="HOST:PORT", required=True,
                        help="address of the Bertec treadmill controller (remote control, port 4000)")
    parser.add_argument("--max-speed", type=float, default=3.0, metavar="M_S",
                        help="refuse to go faster than this (m/s, default 3.0; at most the "
                             "treadmill model's hard ceiling, 6.5 m/s for the Bertec)")
    parser.add_argument("--accel", type=float, default=0.5, metavar="M_S2",
                        help="acceleration of a speed change (m/s^2, 0.05-2, default 0.5)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="S",
                        help="after sending, report the belt state for this many seconds")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("status", help="print belt speeds and incline")
    sp = sub.add_parser("speed", help="set the belt speed: M_S for both belts, or LEFT then RIGHT")
    sp.add_argument("speed_m_s", type=float, metavar="M_S",
                    help="belt speed in m/s (the left belt's when RIGHT_M_S is given)")
    sp.add_argument("right_m_s", type=float, nargs="?", metavar="RIGHT_M_S",
                    help="right belt speed in m/s (split-belt)")
    sub.add_parser("stop", help="ramp both belts to a stop")


def run(args: argparse.Namespace) -> int:
    """Connect, act, report; errors (unreachable controller, bad limits) exit with status 1."""
    import time

    from labsuite.drivers.bertec import BertecSettings, BertecTreadmill, parse_host_port
    from labsuite.drivers.treadmill import BERTEC_TREADMILL, TreadmillSettings
    from labsuite.errors import ConfigError
    from labsuite.streams.messages import CMD_SPEED, CMD_STOP

    host, port = parse_host_port(args.bertec)
    try:
        limits = TreadmillSettings(source_id="labsuite-cli-treadmill",
                                   manufacturer=BERTEC_TREADMILL.manufacturer,
                                   model=BERTEC_TREADMILL.model, max_speed_m_s=args.max_speed,
                                   default_accel_m_s2=args.accel)
    except ConfigError as exc:
        option = "--accel" if "accel" in str(exc) else "--max-speed"
        raise ConfigError(f"{option}: {exc}") from None
    driver = BertecTreadmill(BertecSettings(host=host, port=port, treadmill=limits))
    driver.open()
    try:
        if args.action == "speed":
            left = args.speed_m_s
            right = left if args.right_m_s is None else args.right_m_s
            for name, value in (("M_S", left), ("RIGHT_M_S", right)):
                if value < 0 or value > args.max_speed:
                    raise ConfigError(f"{name} = {value} m/s: expected 0..{args.max_speed} m/s "
                                      "(raise --max-speed to go faster, up to the treadmill's hard "
                                      f"ceiling of {BERTEC_TREADMILL.max_speed_m_s:g} m/s)")
            driver.handle_command({"cmd": CMD_SPEED, "right_m_s": right, "left_m_s": left,
                                   "accel_m_s2": args.accel})
        elif args.action == "stop":
            driver.handle_command({"cmd": CMD_STOP})
        if args.action != "status":
            sent = driver.last_command
            if sent is None:
                reason = driver.events[-1][2] if driver.events else "unknown reason"
                raise ConfigError(f"command not sent: {reason}")
            print(f"sent: right {sent.right_m_s:.3f} m/s, left {sent.left_m_s:.3f} m/s, "
                  f"accel {sent.accel_m_s2:.2f} m/s^2, incline {sent.incline_deg:.2f} deg (unchanged)")
        deadline = time.monotonic() + max(args.wait, 0.0)
        state = driver.poll_state(0.05)
        while time.monotonic() < deadline:
            state = driver.poll_state(0.05)
        assert state is not None  # open() guarantees a first valid state
        print(f"right {state.right_m_s:.3f} m/s, left {state.left_m_s:.3f} m/s, "
              f"incline {state.incline_deg:.2f} deg")
        if driver.health.frames_bad:
            print(f"feedback: {driver.health.frames_ok} valid frames, {driver.health.frames_bad} "
                  f"invalid ones ignored (last: {driver.health.last_error})")
    finally:
        driver.close()
    return 0
