"""The driver contract suite: every driver, simulated or real, must pass :func:`check_driver_contract`.

It runs the driver under :class:`DriverRunner` in a thread, and a plain pylsl client (no labsuite code
on the reading side) resolves every declared stream by source_id, reads the metadata back, pulls
for a few seconds and checks: metadata as declared, timestamps monotonic, measured rate within 1 %
of nominal (regular streams; an irregular one, such as a driver's events, may be quiet), and a
clean shutdown (the loop ends, the device is closed, the
outlets disappear).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pylsl

from labsuite.drivers.base import Driver, DriverRunner
from labsuite.streams.contracts import StreamSpec


@dataclass
class ContractResult:
    """What the contract check measured for each stream (for the test's own extra asserts)."""

    specs: list[StreamSpec]
    read_back: list[StreamSpec]
    timestamps: list[np.ndarray]
    samples: list[np.ndarray]
    rates_hz: list[float]


def check_driver_contract(make_driver: Callable[[], Driver], *, measure_s: float = 5.0,
                          rate_tolerance: float = 0.01) -> ContractResult:
    """Run the driver, read it with plain pylsl, assert the contract; returns what was measured."""
    driver = make_driver()
    specs = driver.stream_specs()
    runner = DriverRunner(driver)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runner.run()
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        inlets = []
        read_back = []
        for spec in specs:
            found = pylsl.resolve_byprop("source_id", spec.source_id, minimum=1, timeout=15.0)
            assert found, f"stream {spec.name} ({spec.source_id}) was not published"
            inlet = pylsl.StreamInlet(found[0], max_buflen=int(measure_s) + 30)
            full = inlet.info(timeout=10.0)
            back = StreamSpec.from_info(full)
            assert back.labels == spec.labels, f"{spec.name}: labels {back.labels} != {spec.labels}"
            assert back.units == spec.units, f"{spec.name}: units {back.units} != {spec.units}"
            assert back.kind == spec.kind and back.rate_hz == spec.rate_hz
            assert full.type() == spec.lsl_type
            inlet.open_stream(timeout=10.0)
            inlets.append(inlet)
            read_back.append(back)
        # Discard what was buffered while connecting, then measure over a clean window.
        time.sleep(0.5)
        for inlet in inlets:
            inlet.pull_chunk(timeout=0.0, max_samples=1_000_000)
        stamps: list[list[float]] = [[] for _ in specs]
        data: list[list[list[float]]] = [[] for _ in specs]
        t_end = time.monotonic() + measure_s
        while time.monotonic() < t_end:
            for i, inlet in enumerate(inlets):
                chunk, ts = inlet.pull_chunk(timeout=0.0, max_samples=100_000)
                stamps[i].extend(ts)
                data[i].extend(chunk)
            time.sleep(0.02)
        rates = []
        ts_arrays = []
        for spec, ts_list in zip(specs, stamps, strict=True):
            ts = np.asarray(ts_list)
            ts_arrays.append(ts)
            assert np.all(np.diff(ts) > 0), f"{spec.name}: timestamps not strictly increasing"
            if spec.rate_hz > 0:
                assert len(ts) > 1, f"{spec.name}: no samples in {measure_s} s"
                rate = (len(ts) - 1) / (ts[-1] - ts[0])
                assert abs(rate / spec.rate_hz - 1) <= rate_tolerance, (
                    f"{spec.name}: measured {rate:.2f} Hz, nominal {spec.rate_hz} Hz")
                rates.append(rate)
            else:
                rates.append(float("nan"))
    finally:
        runner.stop()
        thread.join(timeout=15.0)
    assert not thread.is_alive(), "driver loop did not end within 15 s of stop()"
    assert not errors, f"driver loop raised {errors[0]!r}"
    assert runner.outlets == [], "outlets still held after shutdown"
    # The streams disappear from the network once the outlets are gone.
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        left = [s for s in specs if pylsl.resolve_byprop("source_id", s.source_id, timeout=0.3)]
        if not left:
            break
    else:
        raise AssertionError(f"streams still visible after shutdown: {[s.name for s in left]}")
    return ContractResult(specs, read_back, ts_arrays,
                          [np.asarray(d, dtype=float) for d in data], rates)
