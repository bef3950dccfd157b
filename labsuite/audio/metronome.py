"""The metronome: clicks placed on the output stream's sample clock, each reported at its DAC time.

The PortAudio callback writes every click at an exact sample frame (so timer jitter, a busy CPU or
a GIL pause shorter than the output latency cannot move it) and queues the beat; a delivery thread
turns the beat's frame into the LSL time at which it leaves the device (:mod:`labsuite.audio.clock`)
and hands a :class:`Beat` to ``on_beat``. Tempo changes apply from the next beat not yet written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from labsuite.audio.clicks import ClickSettings, beat_ear, ear_gains, synthesize
from labsuite.audio.clock import CONFIRM_OBSERVATIONS, ClockMapper, DacClock
from labsuite.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)

MIN_SPM = 20.0
MAX_SPM = 300.0
DEFAULT_RATE_HZ = 48000
# 0.1 s rides out the scheduling stalls measured on a loaded 2-core machine (scripts/bench_metronome.py)
DEFAULT_LATENCY_S = 0.1
_SETTLE_S = 5.0
_CLOCK_PERIOD_S = 0.25
_STALL_S = 1.0
_CONFIRM_WAIT_S = 0.5
HINDSIGHT_S = 1.5
DISRUPTED_S = 0.001
_SAME_CLOCK_S = 0.001
_RT_PRIORITY = 10
_NICE = -10


@dataclass(frozen=True)
class OutputSettings:
    """Which sound output and how.

    ``device`` (PortAudio name, part of it, or index; None = the system default), ``sample_rate_hz``,
    ``latency_s`` (the output buffer: how far ahead clicks are written).
    """

    device: str | int | None = None
    sample_rate_hz: int = DEFAULT_RATE_HZ
    latency_s: float = DEFAULT_LATENCY_S

    def __post_init__(self) -> None:
        if self.device is not None and (isinstance(self.device, bool)
                                        or not isinstance(self.device, (str, int))):
            raise ConfigError(f"audio device: expected a name, an index or none, got {self.device!r}")
        if isinstance(self.sample_rate_hz, bool) or not isinstance(self.sample_rate_hz, int) \
                or not 8000 <= self.sample_rate_hz <= 192000:
            raise ConfigError(f"audio sample_rate_hz: expected an integer 8000-192000, "
                              f"got {self.sample_rate_hz!r}")
        if not (isinstance(self.latency_s, (int, float)) and math.isfinite(self.latency_s)
                and 0.005 <= self.latency_s <= 1.0):
            raise ConfigError(f"audio latency_s: expected 0.005-1 s, got {self.latency_s!r}")

    @property
    def device_label(self) -> str:
        """How the device is named in messages."""
        return "the system default output" if self.device is None else f"output device {self.device!r}"


@dataclass(frozen=True)
class DeviceInfo:
    """The opened output: PortAudio name, host API, index, rate, channels and reported latency."""

    name: str
    host_api: str
    index: int
    sample_rate_hz: float
    channels: int
    output_latency_s: float


@dataclass(frozen=True)
class Beat:
    """One click, as scheduled.

    ``n`` counts from 1 and goes on across stops; ``spm`` is the tempo of the interval that ended
    with this beat; ``t_lsl_s`` the LSL time at which its first sample leaves the DAC and
    ``t_stream_s`` the same instant on the stream clock; ``frame`` its sample frame;
    ``written_lsl_s`` when it was written into the buffer; ``segment`` the device-timing segment
    (a new one after each discontinuity such as an underflow).
    """

    n: int
    spm: float
    ear: str
    t_lsl_s: float
    t_stream_s: float
    frame: int
    written_lsl_s: float
    segment: int


def import_sounddevice() -> Any:
    """Import sounddevice; DeviceError saying what to install when PortAudio is missing."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise DeviceError(f"audio output: PortAudio is not available ({exc}); install it "
                          "(Debian: apt-get install libportaudio2)") from None
    return sounddevice


def find_output(sd: Any, settings: OutputSettings) -> dict[str, Any]:
    """Return PortAudio's description of the output ``settings`` names; DeviceError naming it."""
    outputs = [d for d in sd.query_devices() if d["max_output_channels"] > 0]
    seen = ", ".join(repr(d["name"]) for d in outputs) or "none"
    try:
        info = sd.query_devices(settings.device, kind="output") if settings.device is not None \
            else sd.query_devices(kind="output")
    except (ValueError, sd.PortAudioError) as exc:
        raise DeviceError(f"audio output: cannot use {settings.device_label} ({exc}); "
                          f"output devices PortAudio sees: {seen}. Is the sound server "
                          "(PulseAudio or PipeWire) running?") from None
    if info["max_output_channels"] < 1:
        raise DeviceError(f"audio output: {settings.device_label} ({info['name']!r}) has no output "
                          f"channels; output devices PortAudio sees: {seen}")
    return dict(info)


def identify_stream_clock(read_stream_s: Callable[[], float]) -> tuple[str, Callable[[], float]]:
    """Which system clock the stream's times are on, and a lock-free reader of it.

    Reading the stream clock itself (``Pa_GetStreamTime``) goes through the ALSA plugin and its
    locks, and was measured to jump by 2-4 ms under CPU load; so when the stream clock is found to be
    CLOCK_REALTIME (PortAudio's ALSA host API stamps with gettimeofday) or the monotonic clock that
    LSL uses, that clock is read directly. Returns ('realtime' | 'monotonic' | 'stream', reader).
    """
    import pylsl

    def tightest(read: Callable[[], float]) -> float:
        best_w, best = math.inf, math.nan
        for _ in range(20):
            a = pylsl.local_clock()
            s = read()
            b = pylsl.local_clock()
            if b - a < best_w:
                best_w, best = b - a, s - 0.5 * (a + b)
        return best

    stream_offset = tightest(read_stream_s)
    if abs(stream_offset - tightest(time.time)) < _SAME_CLOCK_S:
        return "realtime", time.time
    if abs(stream_offset) < _SAME_CLOCK_S:
        return "monotonic", pylsl.local_clock
    return "stream", read_stream_s


@contextlib.contextmanager
def _raised_nice() -> Iterator[None]:
    """Run the block at nice -10 (when allowed), then go back to the thread's own level."""
    tid = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, tid)
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(before, _NICE))
    except OSError:
        pass
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, before)


def raise_thread_priority() -> str:
    """Give the calling (audio) thread real-time scheduling, or failing that a high nice level.

    A click written late is a click moved: under a CPU hog per core the callback was measured to
    stall for up to 446 ms at normal priority. Returns what was obtained ('SCHED_FIFO 10',
    'nice -10' or 'normal'); without the privilege (root or RLIMIT_RTPRIO) it stays normal.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(_RT_PRIORITY))
        return f"SCHED_FIFO {_RT_PRIORITY}"
    except (OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICE)
        return f"nice {_NICE}"
    except (OSError, AttributeError):
        return "normal"


class Metronome:
    """A click track on one output device.

    ``open()`` starts the output stream (silent until :meth:`set_tempo`); ``on_beat(beat)`` is called
    on the delivery thread for every click written, as soon as it is scheduled (typically one output
    latency before it sounds), with the LSL time at which it leaves the device. 1.5 s after the
    click played, ``on_disrupted(beat)`` is called if the device's timing broke meanwhile (an
    underflow, a stall of the sound server) or a fit with hindsight moves the click by more than
    1 ms: the reported time may then be wrong; the beat handed over carries the hindsight estimate.
    """

    def __init__(self, output: OutputSettings | None = None, click: ClickSettings | None = None, *,
                 on_beat: Callable[[Beat], None] | None = None,
                 on_disrupted: Callable[[Beat], None] | None = None) -> None:
        self.output = output or OutputSettings()
        self.click = click or ClickSettings()
        self.on_beat = on_beat
        self.on_disrupted = on_disrupted
        self.disrupted = 0
        self.device: DeviceInfo | None = None
        self.callbacks = 0
        self.underflows = 0
        self.errors: list[str] = []
        rate = self.output.sample_rate_hz
        self.dac = DacClock(rate)
        self.clock: ClockMapper | None = None
        self.clock_source = ""
        self.priority = ""
        self._rate = float(rate)
        self._block_s = 0.01
        self._channels = 2
        self._stream: Any = None
        self._commands: deque[tuple[str, Any, Any]] = deque()
        self._held: list[tuple[int, float | None]] = []
        self._beats: queue.SimpleQueue[tuple[int, int, float, str, int, float] | None] = \
            queue.SimpleQueue()
        self._frame = 0
        self._spm: float | None = None
        self._last_frame: float | None = None
        self._beat_n = 0
        self._wave = synthesize(self.click, self._rate)
        self._ear = self.click.ear
        self._active: list[tuple[int, np.ndarray, float, float]] = []
        self._last_callback = math.nan
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ---------------------------------------------------------------------------
    def open(self) -> Metronome:
        """Open and start the output stream; DeviceError naming the device when it cannot play."""
        import pylsl

        sd = import_sounddevice()
        info = find_output(sd, self.output)
        self._channels = min(2, int(info["max_output_channels"]))
        if self._channels < 2 and self.click.ear != "both":
            raise DeviceError(f"audio output {info['name']!r} is mono: ear {self.click.ear!r} "
                              "needs two channels")
        try:
            # threads created while the stream opens and starts (ALSA's pulse-plugin mainloop,
            # PortAudio's callback thread) inherit this thread's nice level (per thread on Linux)
            with _raised_nice():
                self._stream = sd.OutputStream(
                    device=info["index"], samplerate=self._rate, channels=self._channels,
                    dtype="float32", latency=self.output.latency_s, callback=self._callback)
                self._stream.start()
        except sd.PortAudioError as exc:
            self._stream = None
            raise DeviceError(f"audio output {info['name']!r} ({self.output.device_label}) cannot "
                              f"play {self._channels} channel(s) at {self._rate:g} Hz: {exc}") from None
        hostapi = sd.query_hostapis(info["hostapi"])["name"]
        self.device = DeviceInfo(name=str(info["name"]), host_api=str(hostapi), index=int(info["index"]),
                                 sample_rate_hz=float(self._stream.samplerate),
                                 channels=self._channels, output_latency_s=float(self._stream.latency))
        deadline = time.monotonic() + _SETTLE_S
        while not self.dac.settled and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.dac.settled:
            self.close()
            what = "asked for no samples" if not self.callbacks else "reported no steady timing"
            raise DeviceError(f"audio output {info['name']!r} opened but {what} within "
                              f"{_SETTLE_S:g} s (is the sound server stalled?)")
        self.clock_source, read = identify_stream_clock(lambda: float(self._stream.time))
        self.clock = ClockMapper(read, pylsl.local_clock)
        self.clock.measure()
        self._threads = [threading.Thread(target=self._clock_loop, name="metronome-clock", daemon=True),
                         threading.Thread(target=self._deliver_loop, name="metronome-beats", daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        """Stop the stream (clicks already in the buffer may be cut) and the threads."""
        self._stop.set()
        self._beats.put(None)
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.abort()
            stream.close()
        for t in self._threads:
            t.join(5.0)
        self._threads = []

    def __enter__(self) -> Metronome:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- control (any thread) -------------------------------------------------------------
    def set_tempo(self, spm: float | None, *, from_beat: int | None = None) -> None:
        """Click at ``spm`` steps/min (None: stop clicking) from beat ``from_beat`` on.

        Without ``from_beat`` the change applies to the next beat not yet written; the interval
        before a beat always has the tempo the beat reports, and a beat is never sooner than one new
        period after the previous one, nor written twice.
        """
        if spm is not None:
            if isinstance(spm, bool) or not isinstance(spm, (int, float)) or not math.isfinite(spm) \
                    or not MIN_SPM <= spm <= MAX_SPM:
                raise ConfigError(f"metronome spm: expected {MIN_SPM:g}-{MAX_SPM:g} steps/min or none, "
                                  f"got {spm!r}")
            spm = float(spm)
        if from_beat is not None and (isinstance(from_beat, bool) or not isinstance(from_beat, int)
                                      or from_beat < 1):
            raise ConfigError(f"metronome from_beat: expected a beat number >= 1, got {from_beat!r}")
        self._commands.append(("tempo", spm, from_beat))

    def set_click(self, click: ClickSettings) -> None:
        """Change the sound, volume or ear from the next beat not yet written."""
        self._commands.append(("click", click, synthesize(click, self._rate)))
        self.click = click

    def check(self) -> None:
        """DeviceError when the output stream stopped or asked for no samples for 1 s."""
        stream = self._stream
        if stream is None or not stream.active:
            raise DeviceError(f"audio output {self._device_name()!r} stopped")
        if self.clock is not None and self.clock.readings and \
                time.monotonic() - self._last_callback > _STALL_S:
            raise DeviceError(f"audio output {self._device_name()!r} asked for no samples for "
                              f"{time.monotonic() - self._last_callback:.1f} s")
        if self.errors:
            raise DeviceError(f"metronome: {self.errors[0]}")

    def stats(self) -> dict[str, Any]:
        """Counters for logs and benchmarks."""
        return {"callbacks": self.callbacks, "underflows": self.underflows, "beats": self._beat_n,
                "disrupted": self.disrupted,
                "segments": self.dac.segment + 1,
                "clock_steps": self.clock.steps if self.clock else 0, "clock_source": self.clock_source,
                "priority": self.priority,
                "clock_uncertainty_s": self.clock.uncertainty_s if self.clock else math.nan}

    def _device_name(self) -> str:
        return self.device.name if self.device else self.output.device_label

    # ---- the audio callback (PortAudio's thread; keep it short) ----------------------------
    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if not self.priority:
            self.priority = raise_thread_priority()
        start = self._frame
        end = start + frames
        self.callbacks += 1
        self._block_s = frames / self._rate
        self._last_callback = time.monotonic()
        underflow = bool(status.output_underflow)
        if underflow:
            self.underflows += 1
        observation = self.dac.observe(start, float(time_info.outputBufferDacTime),
                                       float(time_info.currentTime), discontinuity=underflow)
        while self._commands:
            self._apply(self._commands.popleft())
        outdata.fill(0)
        # no click until the device's timing has settled (startup prefill, recovery after an
        # underflow): a click postponed is reported where it plays, a click misdated is not
        while self.dac.settled:
            self._apply_held()
            spm = self._spm
            if spm is None:
                break
            period = 60.0 * self._rate / spm
            due = start if self._last_frame is None else max(float(start), self._last_frame + period)
            if due >= end:
                break
            self._beat_n += 1
            self._last_frame = due
            onset = round(due)
            left, right = ear_gains(self._ear, self._beat_n)
            self._active.append((onset, self._wave, left, right))
            self._beats.put((self._beat_n, onset, spm, beat_ear(self._ear, self._beat_n), observation,
                             float(time_info.currentTime)))
        keep = []
        for onset, wave, left, right in self._active:
            lo = max(0, onset - start)
            src = max(0, start - onset)
            n = min(frames - lo, len(wave) - src)
            if n > 0:
                chunk = wave[src:src + n]
                outdata[lo:lo + n, 0] += left * chunk
                if self._channels > 1:
                    outdata[lo:lo + n, 1] += right * chunk
            if onset + len(wave) > end:
                keep.append((onset, wave, left, right))
        self._active = keep
        self._frame = end

    def _apply(self, command: tuple[str, Any, Any]) -> None:
        kind, a, b = command
        if kind == "click":
            self._wave, self._ear = b, a.ear
        elif b is None or b <= self._beat_n + 1:
            self._spm = a
        else:
            self._held.append((b, a))
            self._held.sort(key=lambda h: h[0])

    def _apply_held(self) -> None:
        while self._held and self._held[0][0] <= self._beat_n + 1:
            self._spm = self._held.pop(0)[1]

    # ---- threads -------------------------------------------------------------------------
    def _clock_loop(self) -> None:
        assert self.clock is not None
        while not self._stop.wait(_CLOCK_PERIOD_S):
            try:
                self.clock.measure()
            except Exception as exc:  # a closed stream raises from PortAudio; check() reports it
                if not self._stop.is_set():
                    self.errors.append(f"clock reading failed: {exc}")
                return

    def _deliver_loop(self) -> None:
        assert self.clock is not None
        pending: deque[tuple[Beat, int]] = deque()
        while True:
            try:
                item = self._beats.get(timeout=max(0.005, self._block_s))
                if item is None:
                    return
                beat, observation = self._schedule_report(item)
                pending.append((beat, observation))
                self._hand_out(self.on_beat, beat)
            except queue.Empty:
                pass
            while pending:
                beat, _ = pending[0]
                # Judged in hindsight: PulseAudio's interpolated timing shows a stall of the server
                # only when its next timing update arrives, up to about a second later (measured by
                # stopping the null-sink server for 0.3 s).
                judged = self.dac.first_after(beat.t_stream_s + HINDSIGHT_S)
                if judged is None or self.dac.count <= judged + CONFIRM_OBSERVATIONS:
                    break
                pending.popleft()
                segment = self.dac.segment_of(judged)
                hindsight = self.dac.dac_time(beat.frame, segment)
                # a new segment since the write (an underflow, a stall of the sound server) or a
                # refit that moved the click: its reported time may be wrong, so say so
                if segment != beat.segment or not abs(hindsight - beat.t_stream_s) <= DISRUPTED_S:
                    self.disrupted += 1
                    self._hand_out(self.on_disrupted, dataclasses.replace(
                        beat, t_stream_s=hindsight, t_lsl_s=self.clock.to_lsl(hindsight), segment=segment))

    def _schedule_report(self, item: tuple[int, int, float, str, int, float]) -> tuple[Beat, int]:
        assert self.clock is not None
        n, frame, spm, ear, observation, written_s = item
        # wait for the observations that confirm (or not) a jump at the write: a few callbacks,
        # still well before the click sounds
        deadline = time.monotonic() + _CONFIRM_WAIT_S
        while self.dac.count <= observation + CONFIRM_OBSERVATIONS and time.monotonic() < deadline \
                and not self._stop.is_set():
            time.sleep(max(0.001, self._block_s))
        segment = self.dac.segment_of(observation)
        t_stream = self.dac.dac_time(frame, segment)
        beat = Beat(n=n, spm=spm, ear=ear, t_lsl_s=self.clock.to_lsl(t_stream), t_stream_s=t_stream,
                    frame=frame, written_lsl_s=self.clock.to_lsl(written_s), segment=segment)
        return beat, observation

    def _hand_out(self, callback: Callable[[Beat], None] | None, beat: Beat) -> None:
        if callback is None:
            return
        try:
            callback(beat)
        except Exception as exc:
            log.exception("metronome callback failed for beat %d", beat.n)
            self.errors.append(f"callback failed for beat {beat.n}: {exc!r}")
