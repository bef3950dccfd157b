"""Ids: one rule each, and the source_id formats built from them."""

from __future__ import annotations

import pytest

from labsuite import ids
from labsuite.archive.writer import SessionWriter
from labsuite.cli import main
from labsuite.errors import ConfigError


@pytest.mark.parametrize("pid", ["-x", "--help", ".hidden", "_x", "", "a" * 33, "a/b", "Jane Doe",
                                 "P\u00e9", "P\n1", 7, None])
def test_participant_ids_that_are_options_hidden_files_paths_or_names_are_refused(pid):
    with pytest.raises(ConfigError, match="starting with a letter or digit"):
        ids.check_participant_id(pid)


@pytest.mark.parametrize("pid", ["P01", "7", "a-b_c", "A" * 32, "0-"])
def test_pseudonymous_ids_are_accepted(pid):
    assert ids.check_participant_id(pid) == pid


def test_every_entry_point_applies_the_rule(tmp_path, capsys):
    # issue 12: `-x` was accepted and made `-x_<time>.h5`
    with pytest.raises(ConfigError, match="participant_id"):
        SessionWriter(tmp_path / "x.h5", participant_id="-x")
    assert not list(tmp_path.iterdir())
    assert main(["run", "protocols/demo.yaml", "--participant=-x", "--simulate"]) == 1
    assert "--participant: expected a pseudonymous id" in capsys.readouterr().err
    assert main(["record", "--participant=-x", "--out", str(tmp_path), "--duration", "1"]) == 1
    assert "participant_id" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_stream_ids_of_a_lab():
    assert ids.markers_source_id("lab1") == "labsuite-session-lab1-markers"
    assert ids.commands_source_id("lab1") == "labsuite-session-lab1-commands"
    assert ids.operator_source_id("lab1") == "labsuite-session-lab1-operator"
    assert ids.steps_source_id("lab1") == "labsuite-steps-lab1"
    assert ids.device_source_id("lab1", "fp-left") == "labsuite-lab1-fp-left"
    assert ids.sim_source_id("lab1", "gait") == "labsuite-sim-lab1-gait"
    with pytest.raises(ConfigError, match="lab_id"):
        ids.markers_source_id("a'b")
    with pytest.raises(ConfigError, match="device name"):
        ids.device_source_id("lab1", "x y")
