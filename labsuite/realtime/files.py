"""Recorded force data from files (C3D via ezc3d, delimited text) into processor input.

Used by ``labsuite analyze``: each loader returns a :class:`LoadedData` that
:func:`labsuite.realtime.processor.process_arrays` runs through the same processor as live data.
Bad files raise :class:`~labsuite.errors.DataFileError` naming the file and the column/parameter.
"""

from __future__ import annotations

import csv
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labsuite.errors import ConfigError, DataFileError
from labsuite.plates import plate_axes
from labsuite.realtime.processor import PlateGeometry

TEXT_KEYS = ("fz", "fx", "fy", "copx", "copy")
# Force plates sample at up to ~10 kHz; above this a rate is a typo, and the processor's buffers
# (sized in samples per second) would not fit in memory (--rate-hz 1e9 asked for 57 GiB).
MAX_RATE_HZ = 100_000.0
# A recording shorter than this holds no step (a running contact alone lasts ~0.2 s).
MIN_RECORDING_S = 1.0
_LENGTH_TO_M = {"m": 1.0, "mm": 1e-3, "cm": 1e-2}
_MOMENT_TO_NM = {"nm": 1.0, "n.m": 1.0, "n*m": 1.0, "nmm": 1e-3, "n.mm": 1e-3, "n*mm": 1e-3}


@dataclass(frozen=True)
class LoadedData:
    """Force data ready for the processor: one stream per belt, time from the file start (s).

    ``lab_frame`` False: streams hold plate channels (n, 6) for ``plates``; True: lab GRF x y z
    (N) and COP x y (m) (n, 5) on lab-aligned plates. ``has_fx``/``has_fy`` say whether horizontal
    forces were in the file (impulses are meaningless otherwise).
    """

    path: Path
    rate_hz: float
    plates: tuple[PlateGeometry, ...]
    streams: Mapping[str, tuple[np.ndarray, np.ndarray]]
    lab_frame: bool
    has_fx: bool = True
    has_fy: bool = True

    @property
    def layout(self) -> str:
        """'single' for one plate, 'split' for a left and a right belt."""
        return "single" if len(self.plates) == 1 else "split"

    def mean_vertical_force_n(self) -> float:
        """Mean total vertical GRF over the file (N): body weight for steady treadmill gait.

        Samples that cannot be real are left out: non-finite ones and those beyond 20 times the
        median force magnitude (the processor's plausible range is 20 body weights).
        """
        total = 0.0
        for p in self.plates:
            _, data = self.streams[p.belt]
            if self.lab_frame:
                vert = data[:, 2]
            else:
                rot = plate_axes(np.asarray(p.corners_m))
                with np.errstate(invalid="ignore", over="ignore"):
                    vert = -(data[:, :3] @ rot.T)[:, 2]
            total += _plausible_mean(vert)
        return total


def _plausible_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return math.nan
    limit = 20.0 * float(np.median(np.abs(finite)))
    return float(np.mean(finite[np.abs(finite) <= limit]))


def _param(params: Mapping, group: str, name: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(params[group][name]["value"])
    except KeyError:
        raise DataFileError(f"{path}: C3D parameter {group}:{name} is missing") from None


def load_c3d(path: str | Path) -> LoadedData:
    """Read force platforms (C3D TYPE 2 or 4) from a C3D file with ezc3d.

    The lab frame is rebuilt as labsuite's: z along the plate normal pointing up, x along the
    plate's long side (the belt), y to the left. Files disagree on whether plate channels are the
    force on the plate or its reaction (ANALOG:SCALE sign); the sign that makes the vertical GRF
    positive in stance is taken (COP does not depend on it).
    """
    from labsuite.realtime.c3dsafe import read_c3d

    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    # In a child process: ezc3d crashes or hangs on some damaged headers (labsuite/realtime/c3dsafe.py).
    raw = read_c3d(path)
    c3d = {"parameters": raw["parameters"], "data": {"analogs": raw["analogs"]}}
    params = c3d["parameters"]
    if "FORCE_PLATFORM" not in params:
        raise DataFileError(f"{path}: C3D has no FORCE_PLATFORM parameters (no force plates)")
    used = int(_param(params, "FORCE_PLATFORM", "USED", path).ravel()[0])
    if used < 1:
        raise DataFileError(f"{path}: FORCE_PLATFORM:USED is {used}; expected at least one plate")
    if used > 2:
        raise DataFileError(f"{path}: FORCE_PLATFORM:USED is {used}; labsuite analyses one plate "
                            "(single belt) or two (split belts)")
    types = _param(params, "FORCE_PLATFORM", "TYPE", path).ravel()
    channel = _param(params, "FORCE_PLATFORM", "CHANNEL", path)
    if channel.ndim == 1:
        channel = channel.reshape(6, -1, order="F")
    if channel.shape[0] != 6 or channel.shape[1] < used:
        raise DataFileError(f"{path}: FORCE_PLATFORM:CHANNEL has shape {channel.shape}; expected "
                            f"6 channels for each of {used} plate(s)")
    corners_all = _param(params, "FORCE_PLATFORM", "CORNERS", path)
    origin_all = _param(params, "FORCE_PLATFORM", "ORIGIN", path)
    if corners_all.ndim == 2:
        corners_all = corners_all[:, :, None]
    if origin_all.ndim == 1:
        origin_all = origin_all[:, None]
    rate = float(_param(params, "ANALOG", "RATE", path).ravel()[0])
    if not (math.isfinite(rate) and 0 < rate <= MAX_RATE_HZ):
        raise DataFileError(f"{path}: ANALOG:RATE is {rate!r}; expected a rate of 0-{MAX_RATE_HZ:g} Hz")
    analogs = np.asarray(c3d["data"]["analogs"])[0]  # (channels, samples), scaled by ezc3d
    _check_c3d_length(path, c3d, analogs.shape[1])
    units = [str(u).strip().lower() for u in params["ANALOG"].get("UNITS", {}).get("value", [])]
    point_unit = str(params.get("POINT", {}).get("UNITS", {}).get("value", ["mm"])[0]).strip().lower()
    if point_unit not in _LENGTH_TO_M:
        raise DataFileError(f"{path}: POINT:UNITS is {point_unit!r}; expected m, cm or mm")
    to_m = _LENGTH_TO_M[point_unit]
    raw_plates = []
    for i in range(used):
        kind = int(types[i])
        if kind not in (2, 4):
            raise DataFileError(f"{path}: FORCE_PLATFORM:TYPE of plate {i + 1} is {kind}; "
                                "labsuite reads types 2 and 4 (six channels Fx..Mz)")
        idx = [int(v) - 1 for v in channel[:, i]]
        if min(idx) < 0 or max(idx) >= analogs.shape[0]:
            raise DataFileError(f"{path}: FORCE_PLATFORM:CHANNEL of plate {i + 1} points at "
                                f"analog channels {[v + 1 for v in idx]}, the file has "
                                f"{analogs.shape[0]}")
        ch = analogs[idx].T.astype(np.float64)
        if kind == 4:
            cal = _param(params, "FORCE_PLATFORM", "CAL_MATRIX", path)
            if cal.ndim == 2:
                cal = cal[:, :, None]
            ch = ch @ cal[:, :, i].T
        for j in (3, 4, 5):  # moments to N*m
            unit = units[idx[j]] if idx[j] < len(units) else "nmm"
            factor = _MOMENT_TO_NM.get(unit.replace(" ", ""))
            if factor is None:
                raise DataFileError(f"{path}: ANALOG:UNITS of moment channel {idx[j] + 1} is "
                                    f"{unit!r}; expected Nmm or Nm")
            ch[:, j] *= factor
        # non-finite samples are not refused: the processor flags them bad (and analyze says where)
        corners = corners_all[:, :, i].T * to_m  # (4, 3) in the C3D lab frame
        origin = origin_all[:, i] * to_m
        raw_plates.append((ch, corners, origin))
    # rebuild the lab frame from the first plate: z = plate normal (up), x = long side
    ch0, corners0, _ = raw_plates[0]
    normal = plate_axes(corners0)[:, 2]
    z_axis = int(np.argmax(np.abs(normal)))
    side_a = corners0[0] - corners0[1]
    side_b = corners0[0] - corners0[3]
    long_side = side_a if np.linalg.norm(side_a) >= np.linalg.norm(side_b) else side_b
    rest = [a for a in range(3) if a != z_axis]
    x_axis = max(rest, key=lambda a: abs(long_side[a]))
    ez = np.zeros(3)
    ez[z_axis] = 1.0
    ex = np.zeros(3)
    ex[x_axis] = 1.0
    ey = np.cross(ez, ex)
    to_lab = np.vstack([ex, ey, ez])  # rows: labsuite axes in C3D lab coordinates
    n = ch0.shape[0]
    t = np.arange(n) / rate
    plates = []
    streams: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    geoms = []
    for ch, corners, origin in raw_plates:
        corners_lab = corners @ to_lab.T
        rot = plate_axes(corners_lab)
        with np.errstate(invalid="ignore", over="ignore"):
            grf_z = -(ch[:, :3] @ rot.T)[:, 2]
        if _plausible_mean(grf_z) < 0:  # the channels carry the reaction: flip to force on the plate
            ch = -ch
        geoms.append((corners_lab, origin, ch))
    if len(geoms) == 1:
        belts = ["single"]
    else:
        ys = [float(np.mean(g[0][:, 1])) for g in geoms]
        belts = ["left", "right"] if ys[0] > ys[1] else ["right", "left"]
    for belt, (corners_lab, origin, ch) in zip(belts, geoms, strict=True):
        try:
            plates.append(PlateGeometry.from_arrays(belt, corners_lab, origin))
        except ConfigError as exc:
            raise DataFileError(f"{path}: FORCE_PLATFORM:CORNERS: {exc}") from None
        streams[belt] = (t, ch)
    return LoadedData(path=path, rate_hz=rate, plates=tuple(plates), streams=streams,
                      lab_frame=False)


def _c3d_header_frames(path: Path) -> int | None:
    """Frames the C3D header announces (words 4-5), read from the bytes: ezc3d shortens its copy.

    The parameter block's processor byte says the byte order (86 = MIPS, big-endian; Intel and
    DEC store integers little-endian). None when the header cannot be read.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(512)
            if len(head) < 512 or head[1] != 0x50:
                return None
            fh.seek((head[0] - 1) * 512)
            param = fh.read(4)
    except OSError:
        return None
    order = ">" if len(param) == 4 and param[3] == 86 else "<"
    first, last = struct.unpack(order + "HH", head[6:10])
    return last - first + 1 if last >= first else None


def _check_c3d_length(path: Path, c3d: object, analog_samples: int) -> None:
    """Refuse a C3D whose data stop before the frame count its header and POINT:FRAMES announce.

    ezc3d reads a truncated file silently (and sets its header to what it read), so a file cut at
    half its bytes would be analysed as a recording half as long, body weight included.
    """
    params = c3d["parameters"]  # type: ignore[index]
    announced = _c3d_header_frames(path)
    frames_param = np.asarray(params.get("POINT", {}).get("FRAMES", {}).get("value", []), dtype=float).ravel()
    n_param = int(frames_param[0]) if len(frames_param) and np.isfinite(frames_param[0]) else 0
    # POINT:FRAMES holds the count when the 16-bit header word overflows (> 65535 frames).
    if announced is None or (announced >= 65535 and n_param > announced):
        announced = n_param if n_param > 0 else None
    if not announced:
        return
    point_rate = float(np.asarray(params.get("POINT", {}).get("RATE", {}).get("value", [0.0])).ravel()[0])
    analog_rate = float(np.asarray(params["ANALOG"]["RATE"]["value"]).ravel()[0])
    per_frame = max(1, round(analog_rate / point_rate)) if point_rate > 0 else 1
    expected = announced * per_frame
    if analog_samples < expected:
        raise DataFileError(
            f"{path}: the C3D header announces {announced} frames ({expected} analog samples at "
            f"{analog_rate:g} Hz, {expected / analog_rate:.2f} s) but the file holds only "
            f"{analog_samples} ({analog_samples / analog_rate:.2f} s, "
            f"{100 * analog_samples / expected:.1f} %): it is cut short (truncated copy or "
            "interrupted export); analyse the complete file")


def parse_map(text: str) -> dict[str, str]:
    """Parse ``fz=COL,fx=COL,...`` into {key: column}; ConfigError naming the bad item.

    A column written ``-COL`` is negated (for files whose axis points the other way, e.g. RBDS,
    whose Z axis points to the runner's right while our y points left).
    """
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, col = item.partition("=")
        key = key.strip().lower()
        if not sep or not col.strip():
            raise ConfigError(f"--map item {item!r}: expected KEY=COLUMN")
        if key not in TEXT_KEYS:
            raise ConfigError(f"--map key {key!r}: expected one of {', '.join(TEXT_KEYS)}")
        if key in out:
            raise ConfigError(f"--map key {key!r} given twice")
        out[key] = col.strip()
    if "fz" not in out:
        raise ConfigError("--map: the vertical force column is required (fz=COLUMN)")
    return out


def load_text(path: str | Path, *, rate_hz: float, mapping: Mapping[str, str],
              length_unit: str = "m") -> LoadedData:
    """Read a delimited text file with a header row; columns mapped onto fz fx fy copx copy.

    Our axes: z vertical up, x anterior-posterior, y medio-lateral (+ left). One plate, both
    feet. COP columns in ``length_unit``; COP is ignored where fz is not positive.
    """
    path = Path(path)
    if not (math.isfinite(rate_hz) and 0 < rate_hz <= MAX_RATE_HZ):
        raise ConfigError(f"--rate-hz: expected the file's sampling rate, 0-{MAX_RATE_HZ:g} Hz "
                          f"(force plates sample at up to ~10 kHz), got {rate_hz!r}")
    if length_unit not in _LENGTH_TO_M:
        raise ConfigError(f"--length-unit: expected one of {sorted(_LENGTH_TO_M)}, got {length_unit!r}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: cannot be read as text ({exc})") from None
    lines = text.splitlines()
    if not lines:
        raise DataFileError(f"{path}: empty file; expected a header row and data")
    header_line = lines[0]
    delim = _delimiter(header_line)
    header = _split(header_line, delim)
    sign = {key: -1.0 if col.startswith("-") and col not in header else 1.0
            for key, col in mapping.items()}
    names = {key: col[1:] if sign[key] < 0 else col for key, col in mapping.items()}
    missing = [col for col in names.values() if col not in header]
    if missing:
        raise DataFileError(f"{path}: column(s) {missing} not in the header row; it has {header}")
    idx = {key: header.index(col) for key, col in names.items()}
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = _split(line, delim)
        row = []
        for key in TEXT_KEYS:
            if key not in idx:
                row.append(0.0 if key in ("fx", "fy") else math.nan)
                continue
            j = idx[key]
            if j >= len(fields):
                raise DataFileError(f"{path} line {lineno}: has {len(fields)} fields, column "
                                    f"{mapping[key]!r} is field {j + 1}")
            try:
                row.append(sign[key] * float(fields[j]))
            except ValueError:
                raise DataFileError(f"{path} line {lineno}, column {mapping[key]!r}: "
                                    f"{fields[j]!r} is not a number") from None
        rows.append(row)
    if len(rows) < 10:
        raise DataFileError(f"{path}: only {len(rows)} data rows; expected a recording")
    if len(rows) / rate_hz < MIN_RECORDING_S:
        raise ConfigError(f"--rate-hz {rate_hz:g}: {len(rows)} rows of {path} would last "
                          f"{1000 * len(rows) / rate_hz:.1f} ms, too short to hold one step; give "
                          "the rate the file was sampled at")
    data = np.asarray(rows, dtype=np.float64)
    # non-finite or impossible forces are not refused: the processor flags those samples bad
    scale = _LENGTH_TO_M[length_unit]
    cop = data[:, 3:5] * scale
    cop[~(data[:, 0] > 0)] = np.nan
    lab = np.column_stack([data[:, 1], data[:, 2], data[:, 0], cop])
    t = np.arange(len(lab)) / rate_hz
    return LoadedData(path=path, rate_hz=float(rate_hz),
                      plates=(PlateGeometry.lab_aligned("single"),), streams={"single": (t, lab)},
                      lab_frame=True, has_fx="fx" in mapping, has_fy="fy" in mapping)


def _delimiter(header: str) -> str | None:
    for d in ("\t", ",", ";"):
        if d in header:
            return d
    return None  # whitespace


def _split(line: str, delim: str | None) -> list[str]:
    if delim is None:
        return line.split()
    return [f.strip() for f in next(csv.reader([line], delimiter=delim))]
