"""XDF export read back with pyxdf (the LSL community's reader): same samples, timestamps, metadata."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import pyxdf
from session_files import make_session

from labsuite.archive.reader import open_session
from labsuite.archive.writer import SessionWriter
from labsuite.archive.xdf import export_xdf
from labsuite.streams.contracts import markers_spec, treadmill_spec


@pytest.fixture(scope="module")
def session_file(tmp_path_factory):
    return make_session(tmp_path_factory.mktemp("xdf") / "S.h5")


def _by_source(streams):
    return {st["info"]["source_id"][0]: st for st in streams}


def test_every_stream_round_trips_through_pyxdf(session_file, tmp_path):
    out = tmp_path / "s.xdf"
    with open_session(session_file) as s:
        rep = export_xdf(s, out)
        recorded = s.streams
        assert rep.streams == len(recorded) and rep.samples == sum(sd.n_samples for sd in recorded.values())
        raw, header = pyxdf.load_xdf(str(out), synchronize_clocks=False, dejitter_timestamps=False,
                                     handle_clock_resets=False)
        synced, _ = pyxdf.load_xdf(str(out))
        raw, synced = _by_source(raw), _by_source(synced)
        assert set(raw) == set(recorded)
        assert header["info"]["participant_id"] == ["FUZZ1"]
        for sid, sd in recorded.items():
            st = raw[sid]
            info = st["info"]
            assert info["name"] == [sd.spec.name] and info["type"] == [sd.spec.lsl_type]
            assert int(info["channel_count"][0]) == sd.spec.channel_count
            chans = info["desc"][0]["channels"][0]["channel"]
            assert [c["label"][0] for c in chans] == list(sd.spec.labels)
            assert [c["unit"][0] or "" for c in chans] == list(sd.spec.units)
            # raw timestamps exactly as recorded, samples bit for bit
            assert np.array_equal(st["time_stamps"], sd.timestamps_raw)
            if sd.spec.dtype == "string":
                assert [row[0] for row in st["time_series"]] == list(sd.data)
            else:
                assert st["time_series"].dtype == np.asarray(sd.data).dtype
                assert np.array_equal(st["time_series"], sd.data)
            # clock offsets: the values as measured, collection times on the stream's clock
            co = sd.clock_offsets
            assert np.allclose(st["clock_values"], co[:, 1], rtol=0, atol=0)
            assert np.allclose(st["clock_times"], co[:, 0] - co[:, 1], rtol=0, atol=1e-12)
            # pyxdf's own clock synchronisation gives our corrected times
            assert np.abs(synced[sid]["time_stamps"] - sd.timestamps).max() < 1e-6
        plate = raw["fuzz-fp-left"]["info"]["desc"][0]
        assert plate["setup"][0]["force_platform"][0]["belt"] == ["left"]


def test_markers_of_the_session_process_become_a_marker_stream(tmp_path, uid):
    path = tmp_path / "m.h5"
    with SessionWriter(path, participant_id="P1") as w:
        h = w.add_stream(treadmill_spec(uid))
        mk = w.add_stream(markers_spec(f"{uid}-mk"))
        w.append(h, [1.0, 1.02, 1.04], np.ones((3, 3)))
        w.append(mk, [1.01], [[json.dumps({"event": "x"})]])
        w.append_marker(1.03, "own ü")
    with open_session(path) as s:
        rep = export_xdf(s, tmp_path / "m.xdf")
    streams, _ = pyxdf.load_xdf(str(tmp_path / "m.xdf"), synchronize_clocks=False, dejitter_timestamps=False)
    by = _by_source(streams)
    own = by["m-session-markers"]
    assert own["time_series"] == [["own ü"]] and np.array_equal(own["time_stamps"], [1.03])
    assert by[f"{uid}-mk"]["time_series"] == [[json.dumps({"event": "x"})]]
    assert any("session process" in n for n in rep.notes)


def test_export_cli_writes_xdf(session_file, tmp_path):
    out = tmp_path / "cli.xdf"
    res = subprocess.run([sys.executable, "-m", "labsuite", "export", str(session_file), "--xdf", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "5 streams, 80004 samples" in res.stdout
    assert out.read_bytes()[:4] == b"XDF:"
