"""Stream contracts, ring buffer and acquisition over real LSL on loopback."""

from __future__ import annotations

import threading
import time

import numpy as np
import pylsl
import pytest

from labsuite.errors import ConfigError, DeviceError
from labsuite.steps import STEP_FIELD_NAMES
from labsuite.streams import contracts as c
from labsuite.streams.acquisition import (
    EVENT_CONNECTED,
    EVENT_LOST,
    EVENT_RECONNECTED,
    StreamQuery,
    StreamReader,
    discover,
)
from labsuite.streams.messages import command, decode, marker
from labsuite.streams.ring import RingBuffer

CORNERS = np.array([[0.9, 0.5, 0.0], [-0.9, 0.5, 0.0], [-0.9, 0.0, 0.0], [0.9, 0.0, 0.0]])


def _specs(uid: str) -> list[c.StreamSpec]:
    return [
        c.force_plate_spec(f"{uid}-fp", belt="left", corners_m=CORNERS, origin_m=(0.0, 0.0, -0.02),
                           calibration_id="cal-42", rate_hz=1000.0),
        c.imu_spec(f"{uid}-imu", location="left distal tibia", side="left"),
        c.camera_spec(f"{uid}-cam", rate_hz=100.0),
        c.treadmill_spec(f"{uid}-tm"),
        c.markers_spec(f"{uid}-mk"),
        c.steps_spec(f"{uid}-st"),
        c.commands_spec(f"{uid}-cmd"),
    ]


def test_every_stream_kind_round_trips_through_lsl_metadata(uid):
    specs = _specs(uid)
    outlets = [pylsl.StreamOutlet(s.to_info()) for s in specs]
    for spec in specs:
        found = pylsl.resolve_byprop("source_id", spec.source_id, 1, 10.0)
        assert found, spec.name
        inlet = pylsl.StreamInlet(found[0])
        full = inlet.info(timeout=10.0)
        back = c.StreamSpec.from_info(full)
        # Setup values come back as text; compare everything else field by field.
        assert (back.name, back.kind, back.channels, back.rate_hz, back.dtype, back.source_id) == (
            spec.name, spec.kind, spec.channels, spec.rate_hz, spec.dtype, spec.source_id)
        assert back.can_drop_samples == spec.can_drop_samples
        assert full.type() == spec.lsl_type
        # XDF conventions, read with plain pylsl calls.
        ch = full.desc().child("channels").child("channel")
        assert ch.child_value("label") == spec.channels[0].label
        assert ch.child_value("unit") == spec.channels[0].unit
        assert full.desc().child("acquisition").child_value("manufacturer") == "labsuite"
    fp = c.StreamSpec.from_info(pylsl.StreamInlet(
        pylsl.resolve_byprop("source_id", f"{uid}-fp", 1, 10.0)[0]).info(timeout=10.0))
    np.testing.assert_allclose(c.setup_floats(fp, "force_platform", "corners_m"), CORNERS.ravel())
    np.testing.assert_allclose(c.setup_floats(fp, "force_platform", "origin_m"), [0, 0, -0.02])
    assert fp.setup["force_platform"]["calibration_id"] == "cal-42"
    assert fp.units == ("N", "N", "N", "N*m", "N*m", "N*m")
    cam = next(s for s in specs if s.kind == c.KIND_CAMERA)
    assert cam.can_drop_samples
    steps = next(s for s in specs if s.kind == c.KIND_STEPS)
    assert steps.labels == STEP_FIELD_NAMES
    del outlets


def test_spec_validation_names_the_field():
    with pytest.raises(ConfigError, match="rate_hz"):
        c.imu_spec("x", location="tibia", side="left", rate_hz=-1)
    with pytest.raises(ConfigError, match="side"):
        c.imu_spec("x", location="tibia", side="middle")
    with pytest.raises(ConfigError, match="corners_m"):
        c.force_plate_spec("x", belt="left", corners_m=np.zeros((3, 3)), origin_m=(0, 0, 0),
                           calibration_id="c")
    with pytest.raises(ConfigError, match="belt"):
        c.force_plate_spec("x", belt="middle", corners_m=CORNERS, origin_m=(0, 0, 0), calibration_id="c")
    spec = c.imu_spec("x", location="tibia", side="left")
    with pytest.raises(DeviceError, match="no channel 'Fz'"):
        spec.channel_index("Fz")


def test_messages_round_trip_and_reject_garbage():
    m = marker("stage_start", name="baseline", spm=float("nan"))
    assert decode(m) == {"event": "stage_start", "name": "baseline", "spm": None}
    assert decode(command("speed", right_m_s=3.0))["right_m_s"] == 3.0
    assert decode("plain marker from another app") == {"event": "plain marker from another app"}
    with pytest.raises(DeviceError, match="not valid JSON"):
        decode("{broken")
    with pytest.raises(DeviceError, match="unknown treadmill command"):
        command("fly")


def _ring_reference(rows: list[tuple[float, np.ndarray]], capacity: int):
    kept = rows[-capacity:]
    return np.array([t for t, _ in kept]), np.array([d for _, d in kept]).reshape(len(kept), -1)


def test_ring_buffer_matches_a_plain_list_for_any_chunking():
    rng = np.random.default_rng(3)
    ring = RingBuffer(37, 2)
    rows: list[tuple[float, np.ndarray]] = []
    t = 0.0
    for _ in range(200):
        n = int(rng.integers(0, 60))
        ts = t + np.arange(n) * 0.01
        t += n * 0.01
        data = rng.normal(size=(n, 2))
        ring.write(ts, data)
        rows.extend(zip(ts, data, strict=True))
        want_t, want_d = _ring_reference(rows, 37)
        got_t, got_d = ring.latest()
        np.testing.assert_array_equal(got_t, want_t)
        np.testing.assert_array_equal(got_d, want_d.reshape(got_d.shape))
        k = int(rng.integers(0, 40))
        got_t, _ = ring.latest(k)
        np.testing.assert_array_equal(got_t, want_t[len(want_t) - min(k, len(want_t)):])
    assert ring.total_written == len(rows)
    cut = rows[-10][0]
    ts_since, _ = ring.since(cut)
    assert np.all(ts_since > cut) and len(ts_since) == 9


def test_query_validation():
    with pytest.raises(ConfigError):
        StreamQuery()
    with pytest.raises(ConfigError, match="quote"):
        StreamQuery(source_id="a'b")
    assert StreamQuery(source_id="a", type="IMU").predicate() == "source_id='a' and type='IMU'"


class _CounterSource:
    """An outlet pushing a sample counter at a fixed rate on an exact timestamp grid.

    Sample k has timestamp t0 + k / rate; a restarted source given the same t0 resumes the grid at
    the current time, so the samples of the downtime are exactly the missing counter values.
    """

    def __init__(self, spec: c.StreamSpec, t0: float | None = None) -> None:
        self.spec = spec
        self.t0 = pylsl.local_clock() if t0 is None else t0
        self.index = int((pylsl.local_clock() - self.t0) * spec.rate_hz)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> _CounterSource:
        self._thread.start()
        return self

    def _run(self) -> None:
        outlet = pylsl.StreamOutlet(self.spec.to_info())
        rate = self.spec.rate_hz
        t0 = self.t0
        while not self._stop.is_set():
            due = int((pylsl.local_clock() - t0) * rate)
            if due > self.index:
                k = np.arange(self.index, due)
                data = np.zeros((len(k), self.spec.channel_count), dtype=np.float32)
                data[:, 0] = k
                outlet.push_chunk(data, t0 + k / rate)
                self.index = due
            time.sleep(0.005)
        del outlet

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _wait(cond, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_reader_counts_nothing_dropped_then_survives_a_source_dying_and_returning(uid):
    spec = c.imu_spec(f"{uid}-imu", location="left distal tibia", side="left", rate_hz=500.0)
    got: list[np.ndarray] = []
    events: list[str] = []
    reader = StreamReader(spec.source_id, on_chunk=lambda r, ts, d: got.append(d[:, 0].copy()),
                          on_event=lambda r, kind, text: events.append(kind)).start()
    source = _CounterSource(spec).start()
    try:
        assert reader.wait_connected(15.0)
        assert _wait(lambda: reader.stats().samples > 1000, 20.0)
        before = reader.stats()
        assert before.gaps == 0 and before.dropped == 0
        assert abs(before.measured_rate_hz / 500.0 - 1) < 0.01
        counter = np.concatenate(got)
        assert np.all(np.diff(counter) == 1), "samples lost or reordered while connected"
        # Kill the source, keep the clock running, bring it back further on.
        source.stop()
        assert _wait(lambda: EVENT_LOST in events, 15.0)
        time.sleep(1.5)  # at least 750 samples are never sent
        source = _CounterSource(spec, t0=source.t0).start()
        assert _wait(lambda: EVENT_RECONNECTED in events, 15.0)
        assert _wait(lambda: reader.stats().gaps >= 1, 15.0)
        after = reader.stats()
        assert after.reconnects == 1
        counter = np.concatenate(got)
        jumps = np.diff(counter)
        missing = int(jumps[jumps > 1].sum() - np.count_nonzero(jumps > 1))
        # What the reader counted as dropped is exactly what the counter says never arrived.
        assert after.dropped == missing and missing >= 750
        assert events[0] == EVENT_CONNECTED
        ts, data = reader.ring.latest(100)
        assert np.all(np.diff(ts) > 0) and data.shape == (100, 6)
        assert reader.clock_offsets().shape[1] == 2 and len(reader.clock_offsets()) >= 1
    finally:
        source.stop()
        reader.stop()


def test_discover_lists_visible_streams_with_their_contracts(uid):
    specs = _specs(uid)[:3]
    outlets = [pylsl.StreamOutlet(s.to_info()) for s in specs]
    found = {s.source_id: s for s in discover(2.0)}
    for spec in specs:
        assert found[spec.source_id].labels == spec.labels
    only_imu = discover(2.0, lsl_type="IMU")
    assert any(s.source_id == f"{uid}-imu" for s in only_imu)
    assert all(s.kind == c.KIND_IMU for s in only_imu)
    del outlets
