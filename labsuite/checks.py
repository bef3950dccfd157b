"""Checks for frozen settings: one call per rule, messages that name the settings and the field.

Every settings class (drivers, the simulator, the processor, the session, the console) validates
itself in ``__post_init__`` with these, so a bad value always reads the same way:
``<where><field>: expected <rule>, got <value>`` (a :class:`~labsuite.errors.ConfigError`).
``where`` is the prefix that names the settings, e.g. ``"ProcessorSettings."`` or ``"x-IMU3 "``.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import numpy as np

from labsuite.errors import ConfigError


def _is_number(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer,
                                                                          np.floating))


def number(where: str, name: str, value: Any, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, optional: bool = False,
           unit: str = "") -> None:
    """``value`` is a finite number within [low, high] (open ends with ``low_open``/``high_open``).

    ``optional``: None is accepted too.
    """
    if value is None and optional:
        return
    ok = _is_number(value) and math.isfinite(float(value))
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if ok and high is not None:
        ok = float(value) < high if high_open else float(value) <= high
    if not ok:
        raise ConfigError(f"{where}{name}: expected {_rule(low, high, low_open, high_open, unit)}"
                          f"{' or None' if optional else ''}, got {value!r}")


def positive(where: str, settings: Any, *names: str, zero_ok: bool = False) -> None:
    """Each named field of ``settings`` is a finite number > 0 (>= 0 with ``zero_ok``)."""
    for name in names:
        number(where, name, getattr(settings, name), low=0.0, low_open=not zero_ok)


def integer(where: str, name: str, value: Any, *, low: int | None = None,
            high: int | None = None) -> None:
    """``value`` is an integer (not a bool) within [low, high]."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if ok and low is not None:
        ok = value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bounds = ("" if low is None and high is None else f" {low}..{high}" if low is not None
                  and high is not None else f" >= {low}" if low is not None else f" <= {high}")
        raise ConfigError(f"{where}{name}: expected an integer{bounds}, got {value!r}")


def one_of(where: str, name: str, value: Any, choices: Collection[Any]) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{where}{name}: expected one of {tuple(choices)}, got {value!r}")


def flag(where: str, name: str, value: Any) -> None:
    """``value`` is True or False (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{where}{name}: expected True or False, got {value!r}")


def text(where: str, name: str, value: Any, what: str) -> None:
    """``value`` is a non-empty string; ``what`` says what it should be (``a device path ...``)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}{name}: expected {what}, got {value!r}")


def _rule(low: float | None, high: float | None, low_open: bool, high_open: bool, unit: str) -> str:
    u = f" {unit}" if unit else ""
    if low is not None and high is not None:
        return (f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}"
                f"{')' if high_open else ']'}{u}")
    if low is not None:
        return f"a finite number {'>' if low_open else '>='} {low:g}{u}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high:g}{u}"
    return "a finite number"
