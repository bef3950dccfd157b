"""Protocol files: every example validates; every broken file in the catalogue gets its precise error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from labsuite.cli import main
from labsuite.protocol.schema import ProtocolError, format_path, load_protocol, parse_protocol

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "protocols").glob("*.yaml"))
BROKEN = sorted((REPO / "tests" / "protocol_errors").glob("*.yaml"))


def expectations(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"# expect-(\w+): (.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_catalogue_is_big_enough_and_annotated():
    assert len(BROKEN) >= 20
    for path in BROKEN:
        assert "message" in expectations(path), path.name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_protocol_file_is_valid(path):
    p = load_protocol(path)
    if p.programme is not None:
        for n in range(1, len(p.programme.sessions) + 1):
            assert len(p.for_session(n).stages) == len(p.stages)


def test_the_issue_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"demo.yaml", "heiderscheit2011_step_rate.yaml", "willy2016_cadence_programme.yaml",
            "crowell_davis2011_tibial_shock.yaml"} <= names


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.name)
def test_broken_file_gets_its_precise_error(path, capsys):
    want = expectations(path)
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    err = info.value
    assert err.issues
    text = str(err)
    assert str(path) in text
    matching = [i for i in err.issues if want["message"] in i.message]
    assert matching, f"{want['message']!r} not in {text}"
    issue = matching[0]
    if "path" in want:
        assert issue.path == want["path"]
    if "line" in want:
        assert issue.line == int(want["line"])
    assert issue.line >= 1  # every problem points into the file
    # the CLI prints the same and exits non-zero
    assert main(["validate", "-q", str(path)]) == 1
    assert want["message"] in capsys.readouterr().err


@pytest.mark.parametrize("path", BROKEN[:6] + BROKEN[-6:], ids=lambda p: p.name)
def test_broken_file_never_starts_a_session(path, tmp_path, capsys):
    rc = main(["run", str(path), "--participant", "P01", "--simulate", "--headless",
               "--out", str(tmp_path)])
    assert rc == 1
    assert "invalid protocol" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_validate_accepts_the_examples_and_resolves_sessions(capsys):
    assert main(["validate", *map(str, EXAMPLES)]) == 0
    assert main(["validate", str(REPO / "protocols" / "willy2016_cadence_programme.yaml"),
                 "--session", "7"]) == 0
    out = capsys.readouterr().out
    assert "1800 s" in out and "feedback 25 %" in out
    assert main(["validate", str(REPO / "protocols" / "willy2016_cadence_programme.yaml"),
                 "--session", "9"]) == 1


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert "protocol file not found" in capsys.readouterr().err


def test_every_problem_is_listed_not_just_the_first():
    text = ("schema: labsuite-protocol/1\nname: x\nspeed_m_s: 3\nstages:\n"
            "  - {name: a, kind: rest, duration_s: -1}\n"
            "  - {name: b, kind: rest, duration_s: 5, colour: red}\n")
    with pytest.raises(ProtocolError) as info:
        parse_protocol(text, "x.yaml")
    assert [(i.path, i.line) for i in info.value.issues] == [("stages[0].duration_s", 5),
                                                             ("stages[1].colour", 6)]


def test_format_path():
    assert format_path(["stages", 2, "cues", "metronome", "spm"]) == "stages[2].cues.metronome.spm"
