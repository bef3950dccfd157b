"""The metronome role: a supervised process that plays the session's metronome and publishes the beats.

It follows the session's metronome markers, plays the clicks and publishes one beat marker per
click, time-stamped with the click's DAC time on the LSL clock.

Why a process of its own and not a thread of the session: PortAudio calls a Python callback that
needs the GIL on time (every 25 ms at the default latency), and the session process holds the stage
machine, the operator keys, LSL readers and the treadmill heartbeat. A stuck or crashed sound stack
(ALSA, PulseAudio, a USB card unplugged) must never stall the heartbeat that keeps the belt safe, and
a metronome that dies is restarted by the supervisor like a driver (the gap shows in its stream).
The cost is one LSL hop for tempo changes (a few ms; they apply from the next beat not yet written).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labsuite import markers as mk
from labsuite.audio.clicks import ClickSettings
from labsuite.audio.metronome import Beat, DeviceInfo, Metronome, OutputSettings
from labsuite.errors import ConfigError, DeviceError, LabsuiteError
from labsuite.markers import BeatDisrupted
from labsuite.streams import messages as msg
from labsuite.streams.contracts import KIND_MARKERS, Channel, StreamSpec

log = logging.getLogger(__name__)

_CHECK_S = 0.2
_ROLE_NICE = -10
# Published after a click played when the device's timing broke while it was in flight (an
# underflow, a stall of the sound server): that beat's reported DAC time may be wrong.
EVENT_BEAT_DISRUPTED = BeatDisrupted.EVENT
# Click settings a metronome marker may carry (the cue's protocol settings), by ClickSettings field.
CLICK_FIELDS = ("sound", "volume_db", "ear", "tone_hz")


@dataclass(frozen=True)
class MetronomeRoleSettings:
    """Which session markers to follow, where the beats go, and the output and click to use."""

    session_markers_source_id: str
    beats_source_id: str
    name: str = "labsuite-metronome"
    output: OutputSettings = field(default_factory=OutputSettings)
    click: ClickSettings = field(default_factory=ClickSettings)

    def __post_init__(self) -> None:
        for name in ("session_markers_source_id", "beats_source_id", "name"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "'" in value:
                raise ConfigError(f"metronome role {name}: expected a non-empty id without quotes, "
                                  f"got {value!r}")


def beats_spec(settings: MetronomeRoleSettings, metronome: Metronome) -> StreamSpec:
    """The beat marker stream, describing the output device it plays on in ``desc/setup/audio``."""
    dev = metronome.device
    if dev is None:
        raise DeviceError("metronome: the output is not open")
    return StreamSpec(
        name=settings.name, kind=KIND_MARKERS, channels=(Channel("marker", "", "Marker"),),
        rate_hz=0.0, dtype="string", source_id=settings.beats_source_id, model=dev.name,
        setup={"audio": {"device": dev.name, "host_api": dev.host_api, "sample_rate_hz": dev.sample_rate_hz,
                         "channels": dev.channels, "output_latency_s": dev.output_latency_s,
                         "timestamps": "dac"}})


def beat_marker(beat: Beat, click: ClickSettings) -> str:
    """The JSON of one beat marker; its LSL timestamp is ``beat.t_lsl_s`` (the DAC time)."""
    return mk.Beat(n=beat.n, spm=beat.spm, clock=mk.BEAT_CLOCK_DAC, ear=beat.ear, sound=click.sound,
                   dac_lsl_s=round(beat.t_lsl_s, 6), lead_s=round(beat.t_lsl_s - beat.written_lsl_s, 4),
                   segment=beat.segment).encode()


def click_from_marker(fields: dict[str, Any], current: ClickSettings) -> ClickSettings:
    """The click a metronome marker asks for: its click fields over ``current``; ConfigError if bad."""
    given = {k: fields[k] for k in CLICK_FIELDS if fields.get(k) is not None}
    if not given:
        return current
    values = {k: getattr(current, k) for k in CLICK_FIELDS} | given
    return ClickSettings(**values)


class MetronomeFollower:
    """Apply session metronome markers to a :class:`Metronome` and publish its beats on ``outlet``.

    ``outlet`` needs ``push_sample(values, timestamp)``; kept apart from LSL resolution so the same
    object serves the role process and in-process tests.
    """

    def __init__(self, metronome: Metronome, outlet: Any) -> None:
        self.metronome = metronome
        self.outlet = outlet
        self.rejected: list[str] = []
        self._lock = threading.Lock()
        metronome.on_beat = self._on_beat
        metronome.on_disrupted = self._on_disrupted

    def _on_beat(self, beat: Beat) -> None:
        with self._lock:
            self.outlet.push_sample([beat_marker(beat, self.metronome.click)], beat.t_lsl_s)

    def _on_disrupted(self, beat: Beat) -> None:
        import pylsl

        # stamped now (it is known only after the click played); it names the beat it concerns
        with self._lock:
            self.outlet.push_sample([msg.marker(EVENT_BEAT_DISRUPTED, n=beat.n,
                                                hindsight_dac_lsl_s=round(beat.t_lsl_s, 6))],
                                    pylsl.local_clock())

    def on_marker(self, text: str) -> None:
        """Handle one session marker (anything but ``metronome`` is ignored)."""
        try:
            fields = msg.decode(text)
        except DeviceError as exc:
            self.rejected.append(str(exc))
            return
        if fields.get("event") != msg.EVENT_METRONOME:
            return
        try:
            click = click_from_marker(fields, self.metronome.click)
            spm = fields.get("spm")
            if spm is not None and not (isinstance(spm, (int, float)) and math.isfinite(spm)):
                raise ConfigError(f"metronome marker spm: expected a number or null, got {spm!r}")
            if click != self.metronome.click:
                self.metronome.set_click(click)
            self.metronome.set_tempo(None if spm is None else float(spm))
        except ConfigError as exc:
            # a bad marker must not silence a running metronome: keep the last good settings
            log.error("metronome: ignored marker %s: %s", text[:120], exc)
            self.rejected.append(f"{text[:120]}: {exc}")


def probe_output(output: OutputSettings) -> DeviceInfo:
    """Open ``output`` as the metronome would (until its timing settled), close it, describe it.

    DeviceError naming the device when it cannot play; run by the composition root in a child
    process before a session with a metronome starts.
    """
    metronome = Metronome(output).open()
    try:
        metronome.check()
        assert metronome.device is not None
        return metronome.device
    finally:
        metronome.close()


def probe_output_to(conn: Any, output: OutputSettings) -> None:
    """Child-process entry of the composition root's sound check (:func:`probe_output`).

    Sends ``("ok", DeviceInfo)`` or ``("error", message)`` on ``conn``.
    """
    try:
        conn.send(("ok", probe_output(output)))
    except LabsuiteError as exc:
        conn.send(("error", str(exc)))
    finally:
        conn.close()


def run_metronome(stop: Any, settings: MetronomeRoleSettings) -> None:
    """Role entry (``Supervisor.add('metronome', run_metronome, {'settings': ...})``).

    Opens the output first (a DeviceError naming the device ends the role), then publishes the beat
    stream, follows the session's markers, and checks the output every 0.2 s: a stopped or stalled
    stream raises, so the supervisor restarts the role and the gap shows in the beat stream.
    """
    import os

    import pylsl

    from labsuite.streams.acquisition import StreamQuery, StreamReader

    # Before any thread starts, so all inherit it (Linux nice is per thread): the audio callback
    # needs the GIL, and a thread of this process preempted while holding it stalls the callback.
    try:
        os.setpriority(os.PRIO_PROCESS, 0, _ROLE_NICE)
    except OSError as exc:
        log.warning("metronome: could not raise the process priority (%s); clicks may be late under load",
                    exc)
    metronome = Metronome(settings.output, settings.click).open()
    reader: StreamReader | None = None
    try:
        outlet = pylsl.StreamOutlet(beats_spec(settings, metronome).to_info())
        follower = MetronomeFollower(metronome, outlet)

        def on_chunk(_reader: StreamReader, _ts: np.ndarray, data: np.ndarray) -> None:
            for row in data:
                follower.on_marker(str(row[0]))

        reader = StreamReader(StreamQuery(source_id=settings.session_markers_source_id),
                              on_chunk=on_chunk, buffer_s=5.0).start()
        dev = metronome.device
        log.info("metronome on %s (%s, %g Hz, output latency %.1f ms)", dev.name if dev else "?",
                 dev.host_api if dev else "?", dev.sample_rate_hz if dev else math.nan,
                 1e3 * (dev.output_latency_s if dev else math.nan))
        while not stop.wait(_CHECK_S):
            metronome.check()
    finally:
        if reader is not None:
            reader.stop()
        metronome.close()
