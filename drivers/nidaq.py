"""Analog force plates through a National Instruments DAQ (``nidaqmx``, the optional ``nidaq`` extra).

A continuous hardware-clocked voltage task reads the plate amplifier's 6 (or 8) outputs; the DAQ's
sample clock is mapped onto the LSL clock, tare and calibration matrix (volts -> N, N·m) applied,
and Fx..Mz published with the calibration id. Without nidaqmx installed, opening raises a
DeviceError saying how to install it; listing and lab-file validation still work.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labsuite import checks as check
from labsuite.calibration import PlateCalibration, PlateCalibrator, TareSettings
from labsuite.drivers.base import Chunk, Driver
from labsuite.drivers.serial_plate import DeviceClock
from labsuite.errors import ConfigError, DeviceError
from labsuite.streams.contracts import BELTS, StreamSpec

log = logging.getLogger(__name__)

TERMINALS = ("differential", "rse", "nrse")


@dataclass(frozen=True)
class NIDAQPlateSettings:
    """Physical channels (e.g. ``Dev1/ai0:5``), range, terminal configuration, rate, calibration."""

    channels: str
    source_id: str
    belt: str
    calibration: PlateCalibration
    rate_hz: float = 1000.0
    tare: TareSettings = field(default_factory=TareSettings)
    min_voltage_v: float = -10.0
    max_voltage_v: float = 10.0
    terminal: str = "differential"
    buffer_s: float = 10.0
    name: str | None = None

    def __post_init__(self) -> None:
        if not self.channels:
            raise ConfigError("NI DAQ channels: expected physical channels such as 'Dev1/ai0:5'")
        check.one_of("NI DAQ plate ", "belt", self.belt, BELTS)
        check.positive("NI DAQ ", self, "rate_hz")
        if not self.min_voltage_v < self.max_voltage_v:
            raise ConfigError(f"NI DAQ min_voltage_v: expected < max_voltage_v, got "
                              f"{self.min_voltage_v} and {self.max_voltage_v}")
        check.one_of("NI DAQ ", "terminal", self.terminal, TERMINALS)


class NIDAQPlateDriver(Driver):
    """One analog plate on an NI DAQ, published as a labsuite force-plate stream."""

    def __init__(self, settings: NIDAQPlateSettings) -> None:
        super().__init__()
        self.settings = settings
        self.calibrator = PlateCalibrator(settings.calibration, settings.rate_hz, settings.tare)
        self.clock = DeviceClock()
        self._task: Any = None
        self._reader: Any = None
        self._sample_index = 0
        self._buffer = np.zeros((settings.calibration.n_inputs, max(1, int(settings.rate_hz))))
        self.health.extra["tare_ok"] = 0.0

    def stream_specs(self) -> list[StreamSpec]:
        """The plate stream, with the calibration's geometry, id and plate serial."""
        s = self.settings
        return [s.calibration.stream_spec(s.source_id, belt=s.belt, rate_hz=s.rate_hz, name=s.name,
                                          model=f"NI DAQ {s.channels}")]

    def open(self) -> None:
        """Create and start a continuous voltage task; DeviceError naming the problem."""
        try:
            import nidaqmx
            from nidaqmx.constants import AcquisitionType, TerminalConfiguration
            from nidaqmx.stream_readers import AnalogMultiChannelReader
        except ImportError:
            raise DeviceError("NI DAQ plate: the nidaqmx package is not installed "
                              "(pip install 'labsuite[nidaq]', plus NI-DAQmx drivers)") from None
        s = self.settings
        terminal = {
            "differential": getattr(TerminalConfiguration, "DIFF", None)
            or getattr(TerminalConfiguration, "DIFFERENTIAL", None),
            "rse": TerminalConfiguration.RSE,
            "nrse": TerminalConfiguration.NRSE,
        }[s.terminal]
        try:
            task = nidaqmx.Task()
            self._task = task
            task.ai_channels.add_ai_voltage_chan(s.channels, terminal_config=terminal,
                                                 min_val=s.min_voltage_v, max_val=s.max_voltage_v)
            n = task.number_of_channels
            if n != s.calibration.n_inputs:
                raise DeviceError(f"NI DAQ channels {s.channels!r} give {n} inputs but calibration "
                                  f"{s.calibration.calibration_id!r} expects {s.calibration.n_inputs}")
            task.timing.cfg_samp_clk_timing(s.rate_hz, sample_mode=AcquisitionType.CONTINUOUS,
                                            samps_per_chan=int(s.rate_hz * s.buffer_s))
            self._reader = AnalogMultiChannelReader(task.in_stream)
            task.start()
        except nidaqmx.errors.DaqError as exc:
            self.close()
            raise DeviceError(f"NI DAQ {s.channels!r}: cannot start acquisition ({exc})") from None
        except DeviceError:
            self.close()
            raise
        self._sample_index = 0
        self.clock.reset()
        if self.calibrator.offsets is None and not self.calibrator.taring:
            self.calibrator.start_tare()

    def close(self) -> None:
        """Stop and clear the task (safe twice)."""
        task, self._task = self._task, None
        self._reader = None
        if task is not None:
            import nidaqmx  # a task exists only if nidaqmx imported

            try:
                task.close()
            except nidaqmx.errors.DaqError as exc:  # a removed device cannot be closed cleanly
                log.warning("NI DAQ: closing the task failed: %s", exc)

    def read(self, timeout_s: float) -> list[Chunk]:
        """Read the samples acquired so far (waiting up to ``timeout_s`` for the first)."""
        import nidaqmx
        import pylsl

        if self._task is None:
            raise DeviceError("NI DAQ plate: not open")
        try:
            available = self._task.in_stream.avail_samp_per_chan
            if available == 0:
                time.sleep(timeout_s)
                available = self._task.in_stream.avail_samp_per_chan
            if available == 0:
                return []
            n = min(available, self._buffer.shape[1])
            view = self._buffer[:, :n]
            self._reader.read_many_sample(view, number_of_samples_per_channel=n, timeout=1.0)
        except nidaqmx.errors.DaqError as exc:
            raise DeviceError(f"NI DAQ {self.settings.channels!r}: acquisition failed ({exc})") from None
        arrival = pylsl.local_clock()
        index = self._sample_index + np.arange(n)
        self._sample_index += n
        self.health.frames_ok += n
        ts = self.clock.map(index / self.settings.rate_hz, arrival)
        return [Chunk(0, ts, self.process_volts(view.T).astype(np.float32))]

    def process_volts(self, volts: np.ndarray) -> np.ndarray:
        """Tare and calibrate a block of raw voltages (n, k) into (n, 6) N and N·m."""
        was_taring = self.calibrator.taring
        out = self.calibrator.process(volts)
        if was_taring and not self.calibrator.taring:
            ok = not self.calibrator.tare_error
            self.health.extra["tare_ok"] = 1.0 if ok else 0.0
            if not ok:
                self.health.last_error = self.calibrator.tare_error
                log.warning("%s", self.calibrator.tare_error)
        return out
