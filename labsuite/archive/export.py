"""Export a session file to C3D (force plates and gait events, via ezc3d) and to CSV folders.

Reads with labsuite.archive.reader; used by ``labsuite export``. C3D keeps the plates exactly as
recorded (TYPE 2: Fx Fy Fz in N, Mx My Mz in N·mm, CORNERS and ORIGIN in mm), so any C3D tool
rebuilds the same forces and COP; foot strikes and foot-offs from the step table become events.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labsuite.archive.reader import Session, StreamData
from labsuite.errors import ArchiveError, DeviceError
from labsuite.steps import FOOT_LEFT, FOOT_RIGHT, STEP_FIELDS
from labsuite.streams.contracts import KIND_FORCE_PLATE, setup_floats

C3D_MAX_FRAMES = 65535  # the C3D header stores frame numbers in 16 bits
C3D_MAX_ARRAY = 255  # a C3D parameter dimension is one byte
CONTACT_LABELS = {FOOT_LEFT: "LeftContact", FOOT_RIGHT: "RightContact"}
POINT_RATE_TARGET_HZ = 100.0


@dataclass
class ExportReport:
    """What an export wrote, and anything a user must know about it."""

    path: Path
    notes: list[str] = field(default_factory=list)
    n_samples: int = 0
    n_events: int = 0
    rate_hz: float = math.nan
    start_s: float = math.nan


def export_c3d(session: Session, out: str | Path, *, start_s: float | None = None,
               end_s: float | None = None) -> ExportReport:
    """Write the session's force plates and foot events to a C3D file.

    All plates are put on one analog clock: a uniform grid at the first plate's nominal rate
    over the time every plate covers (corrected LSL times), each plate linearly interpolated onto
    it. ``start_s``/``end_s`` cut the export (corrected LSL seconds). Holes longer than three
    sample periods are written as zero force and listed in the report's notes.
    """
    import ezc3d

    out = Path(out)
    plates = session.streams_of_kind(KIND_FORCE_PLATE)
    if not plates:
        raise ArchiveError(f"{session.path}: no force-plate stream to export to C3D")
    plates = [p for p in plates if p.n_samples >= 2]
    if not plates:
        raise ArchiveError(f"{session.path}: the force-plate streams hold fewer than 2 samples")
    rate = plates[0].spec.rate_hz if plates[0].spec.rate_hz > 0 else plates[0].measured_rate_hz
    t0 = max(float(p.timestamps[0]) for p in plates)
    t1 = min(float(p.timestamps[-1]) for p in plates)
    if start_s is not None:
        t0 = max(t0, start_s)
    if end_s is not None:
        t1 = min(t1, end_s)
    n = math.floor((t1 - t0) * rate + 1e-9) + 1 if t1 > t0 else 0
    if n < 2:
        raise ArchiveError(f"{session.path}: the force plates share no common time span to export "
                           f"(from {t0:.3f} to {t1:.3f} s)")
    report = ExportReport(out, rate_hz=rate, start_s=t0)
    ratio = max(1, round(rate / POINT_RATE_TARGET_HZ))
    while n // ratio > C3D_MAX_FRAMES:
        ratio += 1
    frames = n // ratio
    if frames * ratio < n:
        report.notes.append(f"the last {n - frames * ratio} analog samples (less than one C3D frame of "
                            f"{ratio}) are not exported")
    n = frames * ratio
    grid = t0 + np.arange(n) / rate

    events = _foot_events(session, t0, float(grid[-1]))
    contacts = len(events) > C3D_MAX_ARRAY
    analogs = np.zeros((6 * len(plates) + (2 if contacts else 0), n))
    labels: list[str] = []
    units: list[str] = []
    corners_all = np.zeros((3, 4, len(plates)))
    origin_all = np.zeros((3, len(plates)))
    channel = np.zeros((6, len(plates)), dtype=int)
    for i, p in enumerate(plates):
        ch = resample_plate(p, grid, report.notes)
        ch[:, 3:] *= 1000.0  # N·m -> N·mm, the unit of the C3D lengths (mm)
        analogs[6 * i: 6 * i + 6] = ch.T
        labels += [f"F{i + 1}X", f"F{i + 1}Y", f"F{i + 1}Z", f"M{i + 1}X", f"M{i + 1}Y", f"M{i + 1}Z"]
        units += ["N", "N", "N", "Nmm", "Nmm", "Nmm"]
        corners, origin = plate_geometry_m(p)
        corners_all[:, :, i] = corners.T * 1000.0
        origin_all[:, i] = origin * 1000.0
        channel[:, i] = np.arange(6 * i + 1, 6 * i + 7)
    descriptions = [f"{p.spec.source_id} {lbl}" for p in plates for lbl in p.spec.labels]
    if contacts:
        # C3D caps every parameter array at 255 entries and no common reader continues EVENT in
        # TIMES2... (docs/archive.md): beyond 255 events, every contact also goes into one analog
        # channel per foot (1 in stance), which every C3D reader reads.
        for j, foot in enumerate((FOOT_LEFT, FOOT_RIGHT)):
            analogs[6 * len(plates) + j] = _contact_channel(session.steps, foot, grid)
            labels.append(CONTACT_LABELS[foot])
            units.append("")
            descriptions.append(f"{CONTACT_LABELS[foot]}: 1 from Foot Strike to Foot Off (labsuite steps)")
        report.notes.append(f"{len(events)} foot events: C3D's EVENT parameters hold at most "
                            f"{C3D_MAX_ARRAY}, so EVENT has the first {C3D_MAX_ARRAY} (up to "
                            f"{events[C3D_MAX_ARRAY - 1][0]:.2f} s) and every contact is in the analog "
                            "channels LeftContact and RightContact (1 from strike to toe-off)")

    c = ezc3d.c3d()
    params = c["parameters"]
    params["POINT"]["RATE"]["value"] = [rate / ratio]
    params["POINT"]["UNITS"]["value"] = ["mm"]
    params["ANALOG"]["RATE"]["value"] = [rate]
    params["ANALOG"]["LABELS"]["value"] = labels
    params["ANALOG"]["DESCRIPTIONS"]["value"] = descriptions
    params["ANALOG"]["UNITS"]["value"] = units
    c["data"]["points"] = np.zeros((4, 0, frames))
    c["data"]["analogs"] = analogs[None, :, :]
    fp = params["FORCE_PLATFORM"]
    fp["USED"]["value"] = [len(plates)]
    fp["TYPE"]["value"] = [2] * len(plates)
    fp["ZERO"]["value"] = [1, 0]  # no baseline subtraction: the channels are already zeroed
    fp["CORNERS"]["value"] = corners_all
    fp["ORIGIN"]["value"] = origin_all
    fp["CHANNEL"]["value"] = channel
    report.n_events = len(events)
    _add_events(c, events[:C3D_MAX_ARRAY])
    if contacts:
        c.add_parameter("LABSUITE", "EVENTS_TOTAL", [len(events)])
    a = session.attrs
    c.add_parameter("SUBJECTS", "NAMES", [str(a.get("participant_id", ""))])
    c.add_parameter("LABSUITE", "SESSION", [str(session.path.name)])
    c.add_parameter("LABSUITE", "START_LSL_S", [float(t0)])
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        c.write(str(out))
    except (RuntimeError, OSError, ValueError) as exc:
        raise ArchiveError(f"cannot write C3D file {out}: {exc}") from None
    report.n_samples = n
    return report


def plate_geometry_m(p: StreamData) -> tuple[np.ndarray, np.ndarray]:
    """Return (corners (4, 3), origin (3,)) in m from a force-plate stream's setup metadata."""
    try:
        corners = setup_floats(p.spec, "force_platform", "corners_m").reshape(4, 3)
        origin = setup_floats(p.spec, "force_platform", "origin_m").reshape(3)
    except (ValueError, DeviceError) as exc:  # DeviceError: missing keys; ValueError: wrong sizes
        raise ArchiveError(f"stream {p.spec.source_id!r}: setup/force_platform geometry unusable: "
                           f"{exc}") from None
    return corners, origin


def resample_plate(p: StreamData, grid: np.ndarray, notes: list[str] | None = None) -> np.ndarray:
    """Linear interpolation of a plate's six channels onto ``grid`` (corrected LSL s); holes zeroed."""
    ts = p.timestamps
    data = np.asarray(p.data, dtype=np.float64)
    out = np.column_stack([np.interp(grid, ts, data[:, j]) for j in range(data.shape[1])])
    for start, length in p.gaps():
        hole = (grid > start) & (grid < start + length)
        if hole.any():
            out[hole] = 0.0
            if notes is not None:
                notes.append(f"{p.spec.source_id}: {length:.3f} s without samples at {start:.3f} s "
                             "written as zero force")
    return out


def _foot_events(session: Session, t0: float, t_end: float) -> list[tuple[float, str, str]]:
    """(time from t0 s, context, label) of every Foot Strike and Foot Off in [t0, t_end], in time order."""
    events: list[tuple[float, str, str]] = []
    for rec in session.steps:
        foot = rec["foot"]
        if not math.isfinite(foot):
            continue
        context = {FOOT_LEFT: "Left", FOOT_RIGHT: "Right"}.get(int(foot), "General")
        for key, label in (("strike_s", "Foot Strike"), ("toe_off_s", "Foot Off")):
            t = float(rec[key])
            if math.isfinite(t) and t0 <= t <= t_end:
                events.append((t - t0, context, label))
    events.sort()
    return events


def _contact_channel(steps: np.ndarray, foot: int, grid: np.ndarray) -> np.ndarray:
    """1 on the grid samples from each of ``foot``'s strikes to its toe-off, 0 elsewhere."""
    out = np.zeros(len(grid))
    mine = steps[steps["foot"] == foot]
    for strike, toe in zip(mine["strike_s"], mine["toe_off_s"], strict=True):
        if math.isfinite(strike) and math.isfinite(toe):
            out[(grid >= strike) & (grid < toe)] = 1.0
    return out


def _add_events(c: Any, events: list[tuple[float, str, str]]) -> None:
    """Write at most 255 events as EVENT:USED/TIMES/CONTEXTS/LABELS/DESCRIPTIONS."""
    if not events:
        return
    c.add_parameter("EVENT", "USED", [len(events)])
    minutes = [float(math.floor(t / 60.0)) for t, _, _ in events]
    seconds = [t - 60.0 * m for (t, _, _), m in zip(events, minutes, strict=True)]
    c.add_parameter("EVENT", "TIMES", np.array([minutes, seconds], dtype=float))
    c.add_parameter("EVENT", "CONTEXTS", [ctx for _, ctx, _ in events])
    c.add_parameter("EVENT", "LABELS", [lbl for _, _, lbl in events])
    c.add_parameter("EVENT", "DESCRIPTIONS", ["labsuite step table" for _ in events])


def read_c3d_events(path: str | Path) -> list[tuple[float, str, str]]:
    """Read (time_s, context, label) events back from a C3D file's EVENT parameters."""
    import ezc3d

    params = ezc3d.c3d(str(path), extract_forceplat_data=False)["parameters"]
    if "EVENT" not in params or "TIMES" not in params["EVENT"]:
        return []
    ev = params["EVENT"]
    times = np.asarray(ev["TIMES"]["value"], dtype=float).reshape(2, -1)
    ctx, lbl = ev["CONTEXTS"]["value"], ev["LABELS"]["value"]
    return [(float(60.0 * times[0, i] + times[1, i]), str(ctx[i]).strip(), str(lbl[i]).strip())
            for i in range(times.shape[1])]


def export_csv(session: Session, out_dir: str | Path) -> list[Path]:
    """Write one CSV per stream plus steps, markers, stages and events; returns the files.

    Stream files: ``time_s`` (corrected LSL s), ``time_raw_s``, then one column per channel named
    ``label [unit]``. A ``session.json`` holds the root attributes.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for sd in session.streams.values():
        path = out / f"stream_{sd.key}.csv"
        header = ["time_s", "time_raw_s"] + [f"{c.label} [{c.unit}]" if c.unit else c.label
                                             for c in sd.spec.channels]
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(header)
            if sd.spec.dtype == "string":
                for t, tr, text in zip(sd.timestamps, sd.timestamps_raw, sd.data, strict=True):
                    w.writerow([repr(float(t)), repr(float(tr)), text])
            else:
                data = np.asarray(sd.data)
                fmt = repr if data.dtype.kind == "f" else str
                for i in range(sd.n_samples):
                    w.writerow([repr(float(sd.timestamps[i])), repr(float(sd.timestamps_raw[i]))]
                               + [fmt(v.item()) for v in data[i]])
        written.append(path)
    steps_path = out / "steps.csv"
    with steps_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow([f"{f.name} [{f.unit}]" for f in STEP_FIELDS])
        for rec in session.steps:
            w.writerow(["" if not math.isfinite(float(rec[f.name])) else repr(float(rec[f.name]))
                        for f in STEP_FIELDS])
    written.append(steps_path)
    markers_path = out / "markers.csv"
    with markers_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["time_s", "source_id", "text"])
        for m in session.markers:
            w.writerow([repr(float(m["time_s"])), m["source_id"], m["text"]])
    written.append(markers_path)
    stages_path = out / "stages.csv"
    with stages_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        from labsuite.stages import STAGE_FIELD_NAMES

        w.writerow(STAGE_FIELD_NAMES)
        for st in session.stages:
            w.writerow([getattr(st, k) for k in STAGE_FIELD_NAMES])
    written.append(stages_path)
    meta_path = out / "session.json"
    attrs: dict[str, Any] = {k: _json_value(v) for k, v in session.attrs.items()}
    attrs["streams"] = {sid: {"key": sd.key, "name": sd.spec.name, "kind": sd.spec.kind,
                              "rate_hz": sd.spec.rate_hz, "samples": sd.n_samples}
                        for sid, sd in session.streams.items()}
    attrs["events"] = session.events
    attrs["calibration"] = session.calibration
    meta_path.write_text(json.dumps(attrs, indent=1), encoding="utf-8")
    written.append(meta_path)
    return written


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (str, int, float, bool)):
        return v
    return str(v)
