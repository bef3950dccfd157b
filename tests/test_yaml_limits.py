"""The one YAML loader of protocol, lab and calibration files refuses hostile files fast, with a line."""

from __future__ import annotations

from pathlib import Path

import pytest

from labsuite.calibration import load_calibration, parse_calibration
from labsuite.errors import ConfigError
from labsuite.labconfig import parse_lab_config
from labsuite.protocol.schema import load_protocol, parse_protocol
from labsuite.yamlfile import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, parse_yaml

REPO = Path(__file__).resolve().parents[1]

# 9 levels of 9 aliases each: 9^9 (387 million) values once expanded, 200 bytes on disk.
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))


def _message(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    return str(exc.value)


@pytest.mark.parametrize("parse", [
    lambda t: parse_protocol(t, "p.yaml"),
    lambda t: parse_lab_config(t, "lab.yaml"),
    lambda t: parse_calibration(t, "cal.yaml"),
])
def test_alias_bomb_is_refused_by_every_file_kind_with_its_line(parse):
    with pytest.raises(ConfigError) as exc:
        parse(BOMB)
    msg = _message(exc)
    assert f"more than {MAX_NODES} values" in msg
    # refused while composing line 5, where the running total first passes the limit (9^5 values)
    assert ".yaml:5:" in msg


def test_nesting_deeper_than_the_limit_is_refused_not_a_recursion_error():
    text = "stages: " + "[" * 5000 + "]" * 5000
    with pytest.raises(ConfigError) as exc:
        parse_protocol(text, "p.yaml")
    msg = _message(exc)
    assert f"nested more than {MAX_DEPTH} levels" in msg and "p.yaml:1:" in msg


def test_a_recursive_alias_is_refused():
    with pytest.raises(ConfigError) as exc:
        parse_protocol("stages: &s [1, *s]\n", "p.yaml")
    assert "recursive alias" in _message(exc)


def test_many_values_under_the_size_limit_are_refused():
    text = "stages:\n" + "  - {name: a, kind: rest, duration_s: 10}\n" * 3000
    assert len(text) < MAX_FILE_BYTES
    with pytest.raises(ConfigError) as exc:
        parse_protocol(text, "p.yaml")
    assert f"more than {MAX_NODES} values" in _message(exc)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    p = tmp_path / "huge.yaml"
    p.write_text("stages:\n" + "- {}\n" * 60_000)
    with pytest.raises(ConfigError) as exc:
        load_protocol(p)
    assert str(p) in _message(exc) and "256 KiB" in _message(exc)
    with pytest.raises(ConfigError, match="256 KiB"):
        load_calibration(p)


def test_a_folder_is_not_read_as_a_file(tmp_path):
    with pytest.raises(ConfigError, match="not a regular file"):
        load_protocol(tmp_path)


def test_aliases_within_the_limits_still_work():
    _, data = parse_yaml("base: &b {kind: rest, duration_s: 10}\nstages: [*b, *b]\n")
    assert data["stages"] == [{"kind": "rest", "duration_s": 10}] * 2


def test_exponent_numbers_read_as_yaml_1_2_floats():
    _, data = parse_yaml("a: 1e9\nb: -2E-3\nc: 1.0e+9\nd: 3e\ne: e9\nf: 10\n")
    assert data == {"a": 1e9, "b": -2e-3, "c": 1e9, "d": "3e", "e": "e9", "f": 10}
    assert isinstance(data["a"], float) and isinstance(data["f"], int)


def test_duration_1e9_is_a_number_checked_against_its_range():
    demo = (REPO / "protocols" / "demo.yaml").read_text(encoding="utf-8")
    text = demo.replace("duration_s: 30", "duration_s: 1e9", 1)
    with pytest.raises(ConfigError) as exc:
        parse_protocol(text, "p.yaml")
    msg = _message(exc)
    assert "stages[1].duration_s" in msg and "not a valid number" not in msg
