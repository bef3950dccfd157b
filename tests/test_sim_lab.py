"""The simulated lab over real LSL: driver contract, the simulate command, killed devices, commands."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pylsl
import pytest
from driver_contract import check_driver_contract

from labsuite.drivers.sim import gait
from labsuite.drivers.sim.lab import (
    SimLabSettings,
    gait_plan_spec,
    make_driver,
    run_participant,
    sim_lab_roles,
)
from labsuite.processes import Supervisor
from labsuite.streams import contracts as c
from labsuite.streams.acquisition import (
    EVENT_LOST,
    EVENT_RECONNECTED,
    Acquisition,
    StreamQuery,
    StreamReader,
)
from labsuite.streams.messages import CMD_HEARTBEAT, CMD_SPEED, command


def _wait(cond, timeout_s: float, period_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(period_s)
    return cond()


@pytest.fixture
def participant(uid):
    """A running participant process (so plates and IMUs render real gait), its lab settings."""
    settings = SimLabSettings(lab_id=uid)
    sup = Supervisor()
    sup.add("participant", run_participant, {"settings": settings}, restart=False)
    sup.start()
    yield settings
    assert sup.stop()["participant"] == 0


@pytest.mark.parametrize("device", ["fp-left", "fp-right", "imu-left", "camera", "treadmill"])
def test_every_simulated_driver_passes_the_contract(participant, device):
    result = check_driver_contract(lambda: make_driver(participant, device))
    data = result.samples[0]
    if device.startswith("fp-"):
        # The participant is running on the plate: loaded samples well above body weight occur.
        fz = data[:, 2]
        assert fz.max() > 1.5 * participant.participant.weight_n
        # Flight / swing: the plate sees only noise of a few N.
        quiet = fz[np.abs(fz) < 40]
        assert 4.0 < quiet.std() < 12.0
    if device.startswith("imu-"):
        ax_g = data[:, 0] / 9.81
        assert ax_g.max() > 3.0  # tibial shock of a rearfoot runner
    if device == "treadmill":
        np.testing.assert_allclose(data[:, 0], participant.participant.initial_speed_m_s, atol=1e-6)


def test_single_belt_plate_carries_both_feet(uid):
    settings = SimLabSettings(lab_id=uid, participant=gait.ParticipantSettings(single_belt=True))
    sup = Supervisor()
    sup.add("participant", run_participant, {"settings": settings}, restart=False)
    sup.start()
    try:
        result = check_driver_contract(lambda: make_driver(settings, "fp-single"), measure_s=5.0)
    finally:
        sup.stop()
    spec = result.read_back[0]
    assert spec.setup["force_platform"]["belt"] == "single"
    # Lateral COP swings between the feet: moments about x change sign from step to step.
    mx = result.samples[0][:, 3]
    fz = result.samples[0][:, 2]
    loaded = fz > 500
    assert (mx[loaded] > 5).any() and (mx[loaded] < -5).any()


def test_simulate_command_streams_are_readable_by_a_plain_pylsl_client(uid):
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "labsuite", "simulate", "--duration", "12", "--lab-id", uid,
         "--no-view"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    settings = SimLabSettings(lab_id=uid)
    expected = {spec.source_id: spec for specs in settings.stream_specs().values() for spec in specs}
    try:
        inlets = {}
        for source_id, spec in expected.items():
            found = pylsl.resolve_byprop("source_id", source_id, 1, 15.0)
            assert found, f"{spec.name} not found"
            inlet = pylsl.StreamInlet(found[0], max_buflen=30)
            info = inlet.info(timeout=10.0)
            ch = info.desc().child("channels").child("channel")
            labels, units = [], []
            while not ch.empty():
                labels.append(ch.child_value("label"))
                units.append(ch.child_value("unit"))
                ch = ch.next_sibling("channel")
            assert tuple(labels) == spec.labels and tuple(units) == spec.units
            assert info.nominal_srate() == spec.rate_hz and info.type() == spec.lsl_type
            inlet.open_stream(timeout=10.0)
            inlets[source_id] = inlet
        time.sleep(0.5)
        for inlet in inlets.values():
            inlet.pull_chunk(timeout=0.0, max_samples=100_000)
        stamps: dict[str, list[float]] = {s: [] for s in inlets}
        t_end = time.monotonic() + 5.0
        while time.monotonic() < t_end:
            for s, inlet in inlets.items():
                _, ts = inlet.pull_chunk(timeout=0.0, max_samples=100_000)
                stamps[s].extend(ts)
            time.sleep(0.05)
        for s, ts_list in stamps.items():
            ts = np.asarray(ts_list)
            spec = expected[s]
            assert np.all(np.diff(ts) > 0), f"{spec.name}: timestamps not monotonic"
            if spec.rate_hz == 0:
                continue  # the treadmill's events: irregular, quiet while nothing happens
            span = ts[-1] - ts[0]
            if spec.can_drop_samples:
                # Camera: frames may drop, but the frame grid stays at the nominal rate.
                period = np.median(np.diff(ts))
                assert abs(1 / period / spec.rate_hz - 1) < 0.01
            else:
                rate = (len(ts) - 1) / span
                assert abs(rate / spec.rate_hz - 1) < 0.01, f"{spec.name}: {rate:.2f} Hz"
    finally:
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped cleanly" in out


def test_killing_a_device_process_leaves_a_gap_and_the_others_running(uid):
    settings = SimLabSettings(lab_id=uid)
    sup = Supervisor(restart_delay_s=1.0)
    for role in sim_lab_roles(settings):
        sup.add_role(role)
    events: dict[str, list[str]] = {}
    watched = ["fp-left", "fp-right", "imu-left", "treadmill"]
    readers = {d: StreamReader(StreamQuery(source_id=settings.source_id(d)),
                               on_event=lambda r, kind, text, d=d: events.setdefault(d, []).append(kind))
               for d in watched}
    sup.start()
    acq = Acquisition(readers.values()).start()
    try:
        assert _wait(lambda: all(r.stats().samples > 2000 or (d == "treadmill" and r.stats().samples > 100)
                                 for d, r in readers.items()), 30.0)
        before = {d: r.stats() for d, r in readers.items()}
        assert all(s.gaps == 0 for s in before.values())
        sup.kill("sim-fp-left")
        assert _wait(lambda: EVENT_LOST in events.get("fp-left", []), 15.0)
        assert _wait(lambda: EVENT_RECONNECTED in events.get("fp-left", []), 30.0)
        assert _wait(lambda: readers["fp-left"].stats().gaps >= 1, 10.0)
        time.sleep(1.0)
        after = {d: r.stats() for d, r in readers.items()}
        # The killed plate: a gap of at least the restart delay, counted in samples.
        assert after["fp-left"].dropped >= 1000 * 1.0 * 0.9
        assert after["fp-left"].reconnects == 1 and after["fp-left"].connected
        # Everyone else carried on without a gap.
        for d in ("fp-right", "imu-left", "treadmill"):
            assert after[d].gaps == 0 and after[d].samples > before[d].samples
            assert EVENT_LOST not in events.get(d, [])
        assert sup.roles["sim-fp-left"].starts == 2
    finally:
        acq.stop()
        codes = sup.stop()
    assert all(code == 0 for code in codes.values()), codes


def test_treadmill_obeys_session_commands_and_participant_stands_when_the_belt_stops(uid):
    settings = SimLabSettings(lab_id=uid)
    sup = Supervisor()
    for role in sim_lab_roles(settings):
        if role.name in ("sim-participant", "sim-fp-left", "sim-fp-right", "sim-treadmill"):
            sup.add_role(role)
    commands = pylsl.StreamOutlet(c.commands_spec(settings.session_commands_source_id).to_info())
    belt = StreamReader(settings.source_id("treadmill"), buffer_s=60).start()
    plates = [StreamReader(settings.source_id(f"fp-{b}"), buffer_s=60).start() for b in ("left", "right")]
    gait_reader = StreamReader(gait_plan_spec(settings).source_id, buffer_s=60).start()
    sup.start()
    try:
        assert _wait(lambda: belt.stats().samples > 50 and all(p.stats().samples > 1000 for p in plates), 30)
        # The driver only acts on a heartbeat-backed session: send heartbeats, then a stop (speed 0).
        deadline = time.monotonic() + 8.0
        sent_stop = False
        while time.monotonic() < deadline:
            commands.push_sample([command(CMD_HEARTBEAT, seq=1)])
            if not sent_stop and time.monotonic() > deadline - 7.0:
                commands.push_sample([command(CMD_SPEED, right_m_s=0.0, left_m_s=0.0, accel_m_s2=2.0)])
                sent_stop = True
            time.sleep(0.1)
        _, state = belt.ring.latest(1)
        assert state[0, 0] == pytest.approx(0.0, abs=1e-6)
        # Standing still: each plate carries part of body weight, steadily (no flight phases).
        weight = settings.participant.weight_n
        total = None
        for p in plates:
            _, data = p.ring.latest(1000)  # the last second
            fz = data[:, 2].astype(float)
            total = fz if total is None else total + fz
            assert fz.min() > 0.1 * weight
        assert np.mean(total) == pytest.approx(weight, rel=0.05)
        _, planned = gait_reader.ring.latest()
        kinds = planned[:, gait.PLANNED_STEP_FIELDS.index("kind")]
        assert (kinds == gait.KINDS.index("stand")).any()
        # Heartbeats stop: the watchdog would stop a moving belt; here we check it is still stopped
        # and nothing crashed.
        codes_alive = sup.alive()
        assert all(codes_alive.values()), codes_alive
    finally:
        for r in [belt, gait_reader, *plates]:
            r.stop()
        codes = sup.stop()
        del commands
    assert all(code == 0 for code in codes.values()), codes


def test_participant_follows_the_session_metronome_over_tens_of_steps(uid):
    from labsuite.streams.messages import EVENT_METRONOME, marker

    settings = SimLabSettings(lab_id=uid)
    preferred = settings.participant.preferred_cadence_at(settings.participant.initial_speed_m_s)
    target = round(preferred * 1.10, 1)
    markers = pylsl.StreamOutlet(c.markers_spec(settings.session_markers_source_id).to_info())
    sup = Supervisor()
    sup.add("participant", run_participant, {"settings": settings}, restart=False)
    plan = StreamReader(gait_plan_spec(settings).source_id, buffer_s=120).start()
    sup.start()
    try:
        assert _wait(lambda: plan.stats().samples > 10, 20)
        # The participant's reader must be connected to our markers before the metronome starts.
        assert _wait(lambda: markers.have_consumers(), 20)
        t_cmd = pylsl.local_clock()
        # junk first, in the same chunk: another program's text, broken JSON, a JSON list, a bad
        # field; the participant must still hear the metronome that follows
        markers.push_chunk([["hello from another app"], ["{not json"], ["[1, 2]"],
                            ['{"event": "metronome", "spm": "fast"}'],
                            [marker(EVENT_METRONOME, spm=target)]])
        time.sleep(16.0)
        _, rows = plan.ring.latest()
        steps = [gait.PlannedStep.from_vector(r) for r in rows]
        steps = [s for s in steps if s.kind == "step"]
        strikes = np.array([s.strike_s for s in steps])
        spm = 60.0 / np.diff(strikes)
        after = strikes[1:] > t_cmd + 1.0
        first = spm[after][:3].mean()
        last = spm[after][-10:].mean()
        before = spm[strikes[1:] < t_cmd].mean()
        assert before == pytest.approx(preferred, rel=0.03)
        # Not at once: the first steps after the command are still well short of the target ...
        assert first < before + 0.7 * (target - before)
        # ... but after ~16 s (tens of steps) the participant is close to it.
        assert last == pytest.approx(target, rel=0.02)
    finally:
        plan.stop()
        sup.stop()
