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


def test_caller_pulls_sees_nothing_until_it_pulls_then_all_of_it_in_its_own_thread(uid):
    spec = c.imu_spec(f"{uid}-imu", location="left distal tibia", side="left", rate_hz=500.0)
    calls: list[tuple[int, np.ndarray, np.ndarray]] = []
    events: list[str] = []
    reader = StreamReader(
        spec.source_id, caller_pulls=True,
        on_chunk=lambda r, ts, d: calls.append((threading.get_ident(), ts.copy(), d[:, 0].copy())),
        on_event=lambda r, kind, text: events.append(kind)).start()
    raw = StreamReader(spec.source_id, raw_timestamps=True, caller_pulls=True).start()
    source = _CounterSource(spec).start()
    try:
        assert reader.wait_connected(15.0) and raw.wait_connected(15.0)
        assert _wait(lambda: reader.connected and raw.connected, 10.0)
        time.sleep(1.0)
        # the worker found and opened the stream but pulled nothing: the owner decides when
        assert calls == [] and reader.stats().samples == 0
        n = reader.pull()
        assert n >= 400, n  # a second of samples at 500 Hz, drained at once (several chunks if need be)
        assert {ident for ident, _, _ in calls} == {threading.get_ident()}
        counter = np.concatenate([k for _, _, k in calls])
        assert len(counter) == n and np.all(np.diff(counter) == 1)
        # pulling again drains only what arrived meanwhile; a second call at once finds ~nothing
        time.sleep(0.2)
        assert 50 <= reader.pull() <= 400
        assert reader.pull() <= 10
        # timestamps: consumers get them corrected onto this clock, the archive's reader raw
        raw_ts: list[np.ndarray] = []
        raw.on_chunk = lambda r, ts, d: raw_ts.append(ts.copy())
        assert raw.pull() > 0
        ring_ts, _ = raw.ring.latest(len(np.concatenate(raw_ts)))
        np.testing.assert_array_equal(ring_ts, np.concatenate(raw_ts) + raw.offset_s)
        ring_ts, _ = reader.ring.latest(len(calls[-1][1]))
        np.testing.assert_array_equal(ring_ts, calls[-1][1])
        # a source that dies is found lost by the pull, reported by the worker, and found again
        source.stop()
        assert _wait(lambda: (reader.pull(), EVENT_LOST in events)[1], 15.0)
        assert not reader.connected and reader.pull() == 0
        source = _CounterSource(spec, t0=source.t0).start()
        assert _wait(lambda: EVENT_RECONNECTED in events, 15.0)
        assert _wait(lambda: reader.pull() > 0, 10.0)
        assert reader.stats().reconnects == 1
        with pytest.raises(ConfigError, match="caller_pulls"):
            StreamReader(spec.source_id).pull()
    finally:
        source.stop()
        reader.stop()
        raw.stop()


@pytest.mark.parametrize("caller_pulls", [False, True])
def test_a_failing_callback_is_counted_logged_once_and_the_reader_goes_on(uid, caller_pulls, caplog):
    spec = c.imu_spec(f"{uid}-imu", location="left distal tibia", side="left", rate_hz=500.0)
    good: list[np.ndarray] = []
    events: list[tuple[str, str]] = []

    def on_chunk(reader, ts, data):
        if len(good) % 2 == 0:
            good.append(np.empty(0))
            raise ValueError("a consumer bug")
        good.append(data[:, 0].copy())

    def on_event(reader, kind, text):
        events.append((kind, text))
        if kind == "connected":
            raise RuntimeError("an on_event bug")

    reader = StreamReader(spec.source_id, on_chunk=on_chunk, on_event=on_event,
                          caller_pulls=caller_pulls).start()
    source = _CounterSource(spec).start()
    try:
        with caplog.at_level("ERROR", logger="labsuite.streams.acquisition"):
            assert reader.wait_connected(15.0)

            def enough() -> bool:
                if caller_pulls:
                    reader.pull()
                    time.sleep(0.02)
                return reader.stats().chunks >= 20

            assert _wait(enough, 20.0)
        reader.stop()
        st = reader.stats()
        # every other chunk failed; the reader kept pulling and counted each failure
        failed = sum(1 for g in good if len(g) == 0)
        assert st.callback_errors == failed + 1 and failed >= 10  # + the on_event failure
        assert len(good) == st.chunks and sum(len(g) for g in good) > 0
        logged = [r for r in caplog.records if "raised" in r.getMessage()]
        # logged once per distinct error, with its cause (the traceback)
        assert len(logged) == 2, [r.getMessage() for r in logged]
        assert all(r.exc_info is not None for r in logged)
        assert {m.split(" raised ")[0].split(": ")[-1] for m in (r.getMessage() for r in logged)} == {
            "on_chunk", "on_event"}
        reported = [text for kind, text in events if kind == "callback_error"]
        assert reported == ["on_chunk raised ValueError: a consumer bug"]
    finally:
        source.stop()
        reader.stop()


@pytest.mark.parametrize("kind", ["numeric", "string"])
def test_a_chunk_is_handed_over_as_it_arrives_not_when_the_pull_window_ends(uid, kind):
    # A pull waits for the first sample only: with a 20 s window, a 3-sample chunk must reach the
    # consumer long before the window could have filled or ended (issue 15, item 2).
    spec = (c.imu_spec(f"{uid}-imu", location="left distal tibia", side="left", rate_hz=500.0)
            if kind == "numeric" else c.markers_spec(f"{uid}-mk"))
    got: list[tuple[float, int]] = []
    arrived = threading.Event()

    def on_chunk(reader, ts, data):
        got.append((pylsl.local_clock(), len(ts)))
        arrived.set()

    outlet = pylsl.StreamOutlet(spec.to_info())
    reader = StreamReader(spec.source_id, on_chunk=on_chunk, pull_timeout_s=20.0).start()
    try:
        assert reader.wait_connected(15.0)
        time.sleep(0.5)  # the inlet is open and its pull is waiting
        if kind == "numeric":
            outlet.push_chunk(np.arange(18, dtype=np.float32).reshape(3, 6).tolist())
        else:
            outlet.push_chunk([["a"], ["b"], ["c"]])
        pushed = pylsl.local_clock()
        assert arrived.wait(10.0), "the chunk waited for the pull window"
        t, n = got[0]
        assert n == 3 and sum(k for _, k in got) == 3
        assert t - pushed < 10.0
    finally:
        reader.request_stop()
        del outlet
