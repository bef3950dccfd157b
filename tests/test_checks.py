"""The shared settings checks: each rule refuses what it should, and names the field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labsuite import checks as check
from labsuite.errors import ConfigError


@pytest.mark.parametrize("value", [math.nan, math.inf, "3", True, None, [1.0], -0.1, 10.5])
def test_number_refuses_non_finite_text_bool_none_and_out_of_range(value):
    with pytest.raises(ConfigError, match=r"^S\.x: expected a finite number in \[0, 10\] m, got "):
        check.number("S.", "x", value, low=0.0, high=10.0, unit="m")


def test_number_accepts_numpy_scalars_open_ends_and_optional():
    check.number("S.", "x", np.float32(2.0), low=0.0, high=10.0)
    check.number("S.", "x", None, low=0.0, optional=True)
    with pytest.raises(ConfigError, match=r"expected a finite number > 0 or None, got 0"):
        check.number("S.", "x", 0, low=0.0, low_open=True, optional=True)
    with pytest.raises(ConfigError, match=r"in \[0, 0\.5\), got 0\.5"):
        check.number("S.", "x", 0.5, low=0.0, high=0.5, high_open=True)


def test_positive_integer_one_of_flag_text():
    class S:
        a, b, c = 1.0, 0.0, -1.0

    check.positive("S.", S, "a")
    check.positive("S.", S, "a", "b", zero_ok=True)
    with pytest.raises(ConfigError, match=r"S\.b: expected a finite number > 0, got 0\.0"):
        check.positive("S.", S, "a", "b")
    with pytest.raises(ConfigError, match=r"S\.n: expected an integer 1\.\.8, got 2\.0"):
        check.integer("S.", "n", 2.0, low=1, high=8)
    with pytest.raises(ConfigError, match=r"expected an integer >= 1, got True"):
        check.integer("S.", "n", True, low=1)
    with pytest.raises(ConfigError, match=r"S\.mode: expected one of \('run', 'walk'\), got 'jog'"):
        check.one_of("S.", "mode", "jog", ("run", "walk"))
    with pytest.raises(ConfigError, match="expected True or False, got 1"):
        check.flag("S.", "on", 1)
    with pytest.raises(ConfigError, match="port: expected a device path, got ''"):
        check.text("S ", "port", "", "a device path")
