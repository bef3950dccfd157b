"""Read a session file into numpy arrays: streams, steps, markers, stages, calibration, events.

The other end of labsuite.archive.writer: works on complete files, on files cut short by a crash
(``complete`` is False) and on files still being written (SWMR read; call :meth:`Session.refresh`).
Used by inspect, export, replay and reports.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from labsuite.archive import layout as L
from labsuite.errors import ArchiveError, LabsuiteError
from labsuite.stages import StageRecord
from labsuite.steps import STEP_DTYPE, empty_steps
from labsuite.streams.contracts import KIND_MARKERS, StreamSpec

MARKER_DTYPE = np.dtype([("time_s", np.float64), ("text", object), ("source_id", object)])


@dataclass(frozen=True)
class StreamData:
    """One recorded stream.

    ``timestamps`` are corrected LSL times (raw + the measured clock offset, interpolated between
    measurements); ``timestamps_raw`` as received; ``data`` (n, channels) numeric, or a list of
    strings for string streams; ``clock_offsets`` (k, 2): local time, offset s.
    """

    key: str
    spec: StreamSpec
    timestamps: np.ndarray
    timestamps_raw: np.ndarray
    data: Any
    clock_offsets: np.ndarray
    late: bool = False

    def __iter__(self) -> Any:
        # ``ts, data, spec = session.streams[sid]`` unpacks like a tuple.
        return iter((self.timestamps, self.data, self.spec))

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return len(self.timestamps)

    @property
    def duration_s(self) -> float:
        """Time from the first to the last sample, s (0 with fewer than two samples)."""
        return float(self.timestamps[-1] - self.timestamps[0]) if self.n_samples > 1 else 0.0

    @property
    def measured_rate_hz(self) -> float:
        """Mean sample rate over the recording, Hz (NaN with fewer than two samples)."""
        d = self.duration_s
        return (self.n_samples - 1) / d if d > 0 else math.nan

    def gaps(self, factor: float = 3.0) -> list[tuple[float, float]]:
        """Return (start_s, length_s) of holes longer than ``factor`` nominal sample periods."""
        if self.spec.rate_hz <= 0 or self.n_samples < 2:
            return []
        dt = np.diff(self.timestamps)
        idx = np.flatnonzero(dt > factor / self.spec.rate_hz)
        return [(float(self.timestamps[i]), float(dt[i])) for i in idx]


def corrected_times(raw: np.ndarray, clock_offsets: np.ndarray) -> np.ndarray:
    """Apply measured clock offsets to raw timestamps (linear between measurements, held outside)."""
    raw = np.asarray(raw, dtype=np.float64)
    co = np.asarray(clock_offsets, dtype=np.float64).reshape(-1, 2)
    co = co[np.isfinite(co).all(axis=1)]
    if len(co) == 0:
        return raw.copy()
    order = np.argsort(co[:, 0], kind="stable")
    return raw + np.interp(raw, co[order, 0], co[order, 1])


class Session:
    """An open session file; use :func:`open_session`. Attributes load on access."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ArchiveError(f"session file {self.path} does not exist")
        try:
            # SWMR read works on complete files, on files cut short and on files being written.
            self._file = h5py.File(self.path, "r", libver="latest", swmr=True)
        except OSError as exc:
            raise ArchiveError(f"cannot open session file {self.path}: {exc}") from None
        fmt = self._file.attrs.get("format")
        if fmt != L.FORMAT_NAME:
            self._file.close()
            raise ArchiveError(f"{self.path} is not a labsuite session file (root attribute 'format' is "
                               f"{fmt!r}, expected {L.FORMAT_NAME!r})")
        self._cache: dict[str, Any] = {}

    # ---- lifecycle ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """See what a live writer flushed since the last look (SWMR refresh)."""
        for obj in _datasets(self._file):
            obj.refresh()
        self._cache.clear()

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- metadata ----------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes: participant_id, mass_kg, protocol text and hash, versions, host..."""
        out = {}
        for k, v in self._file.attrs.items():
            out[k] = v.item() if isinstance(v, np.generic) else v
        return out

    @property
    def complete(self) -> bool:
        """True when the writer closed the file cleanly (False: cut short, or still being written)."""
        return bool(self._file.attrs.get("complete", False))

    @property
    def participant_id(self) -> str:
        """The pseudonymous participant id."""
        return str(self._file.attrs["participant_id"])

    @property
    def mass_kg(self) -> float:
        """Body mass, kg (NaN when not given)."""
        return float(self._file.attrs.get("mass_kg", math.nan))

    # ---- data --------------------------------------------------------------------------------
    @property
    def streams(self) -> dict[str, StreamData]:
        """Every recorded stream by source_id (late streams included, unused spare slots left out)."""
        if "streams" not in self._cache:
            out: dict[str, StreamData] = {}
            for key, g in self._file[L.STREAMS].items():
                sd = self._read_stream(key, g)
                if sd is not None:
                    out[sd.spec.source_id] = sd
            self._cache["streams"] = out
        return self._cache["streams"]

    def stream(self, name: str) -> StreamData:
        """Return a stream by source_id, stream name or group key; ArchiveError naming the choices."""
        streams = self.streams
        if name in streams:
            return streams[name]
        for sd in streams.values():
            if name in (sd.spec.name, sd.key):
                return sd
        raise ArchiveError(f"{self.path}: no stream {name!r}; recorded streams: "
                           f"{sorted(streams)}")

    def streams_of_kind(self, kind: str) -> list[StreamData]:
        """Streams of one labsuite kind (force_plate, imu, ...), in file order."""
        return [s for s in self.streams.values() if s.spec.kind == kind]

    @property
    def steps(self) -> np.ndarray:
        """The step table (``STEP_DTYPE`` structured array)."""
        if "steps" not in self._cache:
            g = self._file[L.STEPS]
            n = _trusted_rows(g, g["table"].shape[0])
            arr = g["table"][:n] if n else empty_steps(0)
            self._cache["steps"] = np.asarray(arr, dtype=STEP_DTYPE)
        return self._cache["steps"]

    @property
    def markers(self) -> np.ndarray:
        """Every marker, sorted by time: fields time_s (corrected LSL s), text, source_id.

        Holds the markers of recorded marker streams and those the session appended itself
        (source_id ``""``).
        """
        if "markers" not in self._cache:
            rows: list[tuple[float, str, str]] = []
            ts, texts = _read_text_log(self._file[L.MARKERS])
            rows += [(float(t), s, "") for t, s in zip(ts, texts, strict=False)]
            for sid, sd in self.streams.items():
                if sd.spec.kind == KIND_MARKERS:
                    rows += [(float(t), s, sid) for t, s in zip(sd.timestamps, sd.data, strict=False)]
            rows.sort(key=lambda r: r[0])
            arr = np.empty(len(rows), dtype=MARKER_DTYPE)
            for i, r in enumerate(rows):
                arr[i] = r
            self._cache["markers"] = arr
        return self._cache["markers"]

    @property
    def stages(self) -> list[StageRecord]:
        """The protocol stages as run (from ``stage_end`` markers), in order of their end."""
        if "stages" not in self._cache:
            _, texts = _read_text_log(self._file[L.STAGES])
            out = []
            for i, t in enumerate(texts):
                try:
                    out.append(StageRecord.from_marker(json.loads(t)))
                except (json.JSONDecodeError, LabsuiteError) as exc:
                    raise ArchiveError(f"{self.path}: stages row {i} is not a stage record: {exc}") from None
            self._cache["stages"] = out
        return self._cache["stages"]

    @property
    def calibration(self) -> list[dict[str, Any]]:
        """Calibration records stored during the session (JSON objects)."""
        _, texts = _read_text_log(self._file[L.CALIBRATION])
        return [json.loads(t) for t in texts]

    @property
    def events(self) -> list[dict[str, Any]]:
        """Writer/recorder events (gaps, reconnects, late streams, errors) with their time_s."""
        ts, texts = _read_text_log(self._file[L.EVENTS])
        out = []
        for t, text in zip(ts, texts, strict=False):
            obj = json.loads(text)
            obj["time_s"] = float(t)
            out.append(obj)
        return out

    def stages_steps(self) -> list[tuple[StageRecord, int]]:
        """Number of steps whose strike falls inside each stage."""
        strikes = self.steps["strike_s"]
        return [(st, int(np.count_nonzero((strikes >= st.start_s) & (strikes < st.end_s))))
                for st in self.stages]

    # ---- internals ---------------------------------------------------------------------------
    def _read_stream(self, key: str, g: h5py.Group) -> StreamData | None:
        late = bool(g.attrs.get("late_slot", False))
        if late:
            _, specs = _read_text_log(g, prefix="spec", with_time=False)
            if not specs:
                return None  # an unused spare slot
            spec = L.spec_from_json(specs[0])
        else:
            spec = L.spec_from_json(str(g.attrs["spec_json"]))
        raw = g[L.TIME_STAMPS][()]
        if spec.dtype == "string":
            _, texts = _read_text_log(g, with_time=False)
            n = min(len(raw), len(texts))
            data: Any = texts[:n]
        elif late:
            flat = g[L.TIME_SERIES][()]
            c = spec.channel_count
            n = min(len(raw), len(flat) // c)
            data = flat[: n * c].reshape(n, c).astype(spec.numpy_dtype)
        else:
            arr = g[L.TIME_SERIES]
            # After a crash the two datasets may differ by the last partial append: keep the rows
            # that have both a timestamp and a sample.
            n = min(len(raw), arr.shape[0])
            data = arr[:n]
        n = _trusted_rows(g, n)
        raw, data = raw[:n], data[:n]
        co = g[L.CLOCK_OFFSETS][()]
        return StreamData(key, spec, corrected_times(raw, co), raw, data, co, late)


def open_session(path: str | os.PathLike[str]) -> Session:
    """Open a session file for reading (complete, cut short, or still being written)."""
    return Session(path)


def _read_text_log(g: h5py.Group, *, prefix: str = "text", with_time: bool = True,
                   ) -> tuple[np.ndarray, list[str]]:
    data = g[f"{prefix}_data"][()]
    end = g[f"{prefix}_end"][()]
    # A reader may catch the writer between appends: keep entries whose bytes are all there.
    end = end[end <= len(data)]
    texts = L.decode_text_log(data, end)
    if with_time and L.TIME_STAMPS in g:
        ts = g[L.TIME_STAMPS][()]
        n = _trusted_rows(g, min(len(ts), len(texts)))
        return ts[:n], texts[:n]
    return np.empty(0), texts


def _trusted_rows(g: h5py.Group, n: int) -> int:
    """Rows the writer confirmed complete (it writes the count after the rows reached the disk)."""
    if L.COMMITTED in g:
        return min(n, int(g[L.COMMITTED][0]))
    return n


def _datasets(f: h5py.File) -> list[h5py.Dataset]:
    out: list[h5py.Dataset] = []
    f.visititems(lambda _n, obj: out.append(obj) if isinstance(obj, h5py.Dataset) else None)
    return out
