"""Replay a recorded session (HDF5) or a C3D file as live LSL streams, with the original timing.

The reverse of the recorder: each stream gets an outlet carrying its original metadata (under a
source_id prefix so a replay never poses as a live device) and its samples are pushed at their
original relative times, scaled by ``speed``, so the whole lab side runs on recorded data.
Published timestamps keep the recorded spacing (at any speed), so metrics stay in real seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labsuite.errors import ConfigError, DataFileError
from labsuite.streams.contracts import (
    KIND_COMMANDS,
    KIND_STEPS,
    StreamSpec,
    force_plate_spec,
)

# Commands are never replayed by default: a replay must not drive a real treadmill.
DEFAULT_EXCLUDED_KINDS = (KIND_COMMANDS, KIND_STEPS)
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:-]{0,64}$")


@dataclass(frozen=True)
class ReplaySettings:
    """How to replay.

    ``speed``: 1 = real time, 2 = twice as fast. ``source_prefix`` is put before every source_id.
    ``exclude_kinds``: stream kinds not replayed (commands and steps by default; replay steps to
    feed a protocol or display without re-running the processor). ``lead_s``: time between the
    outlets appearing and the first sample, so consumers can connect first.
    """

    speed: float = 1.0
    source_prefix: str = "replay-"
    exclude_kinds: tuple[str, ...] = DEFAULT_EXCLUDED_KINDS
    only_source_ids: tuple[str, ...] = ()
    lead_s: float = 1.0
    chunk_s: float = 0.01
    loop: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speed) and 0.01 <= self.speed <= 100):
            raise ConfigError(f"speed: expected 0.01..100 (1 = real time), got {self.speed!r}")
        if not _PREFIX_RE.match(self.source_prefix):
            raise ConfigError(f"source_prefix: expected up to 64 characters from A-Z a-z 0-9 _ . : -, "
                              f"got {self.source_prefix!r}")
        if not (math.isfinite(self.lead_s) and 0 <= self.lead_s <= 60):
            raise ConfigError(f"lead_s: expected 0..60 s, got {self.lead_s!r}")
        if not (0.001 <= self.chunk_s <= 0.5):
            raise ConfigError(f"chunk_s: expected 0.001..0.5 s, got {self.chunk_s!r}")


@dataclass(frozen=True)
class ReplayStream:
    """One stream to publish: its description and samples at times ``t_s`` from the file start."""

    spec: StreamSpec
    t_s: np.ndarray
    data: Any  # (n, channels) array, or a list of strings for string streams

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return len(self.t_s)


def load_session_streams(path: str | Path, settings: ReplaySettings) -> list[ReplayStream]:
    """Read the streams of a session file to replay (corrected times, relative to the earliest)."""
    from labsuite.archive.reader import open_session

    out = []
    with open_session(path) as session:
        chosen = [sd for sd in session.streams.values()
                  if sd.n_samples and sd.spec.kind not in settings.exclude_kinds
                  and (not settings.only_source_ids or sd.spec.source_id in settings.only_source_ids)]
        if not chosen:
            raise DataFileError(f"{path}: no stream to replay (kinds excluded: "
                                f"{list(settings.exclude_kinds)}; streams: {sorted(session.streams)})")
        t0 = min(float(sd.timestamps[0]) for sd in chosen)
        for sd in chosen:
            spec = dataclasses.replace(sd.spec, source_id=settings.source_prefix + sd.spec.source_id)
            data = list(sd.data) if sd.spec.dtype == "string" else np.asarray(sd.data)
            out.append(ReplayStream(spec, np.asarray(sd.timestamps) - t0, data))
    return out


def load_c3d_streams(path: str | Path, settings: ReplaySettings) -> list[ReplayStream]:
    """Read a C3D file's force platforms as force-plate streams (calibrated Fx..Mz, N and N·m).

    Uses the processor's C3D reader (labsuite.realtime.files.load_c3d: CAL_MATRIX and scales
    applied, geometry in metres in labsuite's lab frame) so a replay feeds the live processor
    exactly what ``labsuite analyze`` processes. Samples are float64, as in the file.
    """
    from labsuite.realtime.files import load_c3d

    path = Path(path)
    data = load_c3d(path)
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", path.stem)
    out = []
    for plate in data.plates:
        t, ch = data.streams[plate.belt]
        spec = force_plate_spec(
            f"{settings.source_prefix}c3d-{stem}-fp-{plate.belt}", belt=plate.belt,
            corners_m=np.asarray(plate.corners_m), origin_m=plate.origin_m,
            calibration_id=f"c3d:{path.name}:FORCE_PLATFORM", rate_hz=data.rate_hz,
            name=f"c3d-{stem}-forceplate-{plate.belt}", model=f"replay of {path.name}")
        spec = dataclasses.replace(spec, dtype="float64")
        out.append(ReplayStream(spec, np.asarray(t, dtype=np.float64), np.asarray(ch, dtype=np.float64)))
    return out


def load_streams(path: str | Path, settings: ReplaySettings) -> list[ReplayStream]:
    """Load a session file (.h5/.hdf5) or a C3D file (.c3d) for replay."""
    p = Path(path)
    if not p.is_file():
        raise DataFileError(f"{p}: no such file")
    if p.suffix.lower() == ".c3d":
        return load_c3d_streams(p, settings)
    if p.suffix.lower() in (".h5", ".hdf5"):
        return load_session_streams(p, settings)
    raise DataFileError(f"{p}: expected a session file (.h5) or a C3D file (.c3d)")


class Replayer:
    """Publish streams over LSL at their recorded pace (call :meth:`run`, stop with :meth:`stop`)."""

    def __init__(self, streams: Sequence[ReplayStream], settings: ReplaySettings) -> None:
        if not streams:
            raise ConfigError("nothing to replay")
        self.streams = list(streams)
        self.settings = settings
        self._stop = threading.Event()
        self._outlets: list[Any] = []
        self.pushed = [0] * len(self.streams)
        self.duration_s = max(float(s.t_s[-1]) for s in self.streams if s.n_samples)
        self.base_lsl_s = math.nan

    def open(self) -> None:
        """Create the outlets (consumers can find them from now on)."""
        import pylsl

        self._outlets = [pylsl.StreamOutlet(s.spec.to_info(), 0, 360) for s in self.streams]

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self._stop.set()

    def run(self, *, progress: Any = None) -> None:
        """Publish every sample at its time; loops when ``settings.loop``. Returns when done or stopped."""
        import pylsl

        if not self._outlets:
            self.open()
        s = self.settings
        base = pylsl.local_clock() + s.lead_s
        period = self.duration_s + min((1.0 / x.spec.rate_hz for x in self.streams if x.spec.rate_hz > 0),
                                       default=0.01)
        self.base_lsl_s = base
        start_wall = time.monotonic() + s.lead_s
        next_report = time.monotonic() + 1.0
        loop_no = 0
        while not self._stop.is_set():
            index = [0] * len(self.streams)
            while not self._stop.is_set():
                elapsed = (time.monotonic() - start_wall) * s.speed  # recorded seconds due by now
                done = True
                for i, st in enumerate(self.streams):
                    k0 = index[i]
                    if k0 >= st.n_samples:
                        continue
                    done = False
                    k1 = int(np.searchsorted(st.t_s, elapsed, side="right"))
                    if k1 > k0:
                        self._push(i, st, k0, k1, base + loop_no * period)
                        index[i] = k1
                if done:
                    break
                if progress is not None and time.monotonic() >= next_report:
                    next_report += 1.0
                    progress(min(elapsed, self.duration_s), self.duration_s, list(self.pushed))
                self._stop.wait(s.chunk_s)
            if not s.loop:
                break
            loop_no += 1
            start_wall += period / s.speed

    def close(self) -> None:
        """Destroy the outlets."""
        self._outlets = []

    def _push(self, i: int, st: ReplayStream, k0: int, k1: int, base: float) -> None:
        outlet = self._outlets[i]
        ts = base + st.t_s[k0:k1]
        if st.spec.dtype == "string":
            for t, text in zip(ts, st.data[k0:k1], strict=True):
                # Multi-channel string samples are stored as a JSON list (see docs/archive.md).
                sample = json.loads(text) if st.spec.channel_count > 1 else [str(text)]
                outlet.push_sample(sample, float(t))
        else:
            chunk = np.ascontiguousarray(st.data[k0:k1], dtype=st.spec.numpy_dtype)
            outlet.push_chunk(chunk, np.ascontiguousarray(ts, dtype=np.float64))
        self.pushed[i] += k1 - k0
