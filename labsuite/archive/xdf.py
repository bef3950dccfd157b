"""Export a session file to XDF, the Lab Streaming Layer's own file format (LabRecorder's).

Reads with labsuite.archive.reader; used by ``labsuite export --xdf``. Written from the XDF 1.0
specification (github.com/sccn/xdf/wiki/Specifications): the magic ``XDF:``, then chunks of
[NumLengthBytes][Length][Tag u16][content]: a FileHeader, one StreamHeader per stream (the
stream's LSL header XML, with the same ``desc/channels`` metadata the live stream carried), its
ClockOffset chunks, its Samples chunks (raw timestamps, as received) and a StreamFooter. A
session then opens in pyxdf, MNE (via pyxdf) and EEGLAB (the XDF plug-in).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from xml.sax.saxutils import escape

import numpy as np

from labsuite.archive.reader import Session
from labsuite.errors import ArchiveError
from labsuite.streams.contracts import IRREGULAR_RATE, KIND_MARKERS, Channel, StreamSpec

TAG_FILE_HEADER = 1
TAG_STREAM_HEADER = 2
TAG_SAMPLES = 3
TAG_CLOCK_OFFSET = 4
TAG_BOUNDARY = 5
TAG_STREAM_FOOTER = 6
# The boundary chunk's fixed content (the specification's UUID), a resync point for readers.
BOUNDARY_UUID = bytes([0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F,
                       0xB3, 0x0E, 0xD5, 0x46, 0x73, 0x83, 0xCB, 0xE4])
SAMPLES_PER_CHUNK = 4096
_VALUE_TYPES = {"float32": "<f4", "float64": "<f8", "int16": "<i2", "int32": "<i4", "int64": "<i8"}


@dataclass
class XdfReport:
    """What an XDF export wrote."""

    path: Path
    streams: int = 0
    samples: int = 0
    clock_offsets: int = 0
    notes: list[str] = field(default_factory=list)


def export_xdf(session: Session, out: str | Path) -> XdfReport:
    """Write every stream of ``session`` (and the session's own markers) to an XDF file."""
    out = Path(out)
    report = XdfReport(out)
    items: list[tuple[StreamSpec, np.ndarray, Any, np.ndarray]] = [
        (sd.spec, sd.timestamps_raw, sd.data, sd.clock_offsets) for sd in session.streams.values()]
    own = [m for m in session.markers if m["source_id"] == ""]
    if own:
        # Markers the writing process appended itself (no LSL stream of their own): one more
        # marker stream, on this machine's clock (no clock offsets).
        spec = StreamSpec(name=f"{session.path.stem}-session-markers", kind=KIND_MARKERS,
                          channels=(Channel("marker", "", "Marker"),), rate_hz=IRREGULAR_RATE,
                          dtype="string", source_id=f"{session.path.stem}-session-markers")
        items.append((spec, np.array([m["time_s"] for m in own]), [m["text"] for m in own],
                      np.empty((0, 2))))
        report.notes.append(f"{len(own)} markers of the session process written as stream {spec.name!r}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as fh:
            fh.write(b"XDF:")
            _chunk(fh, TAG_FILE_HEADER, _file_header(session).encode("utf-8"))
            for sid, (spec, ts, data, co) in enumerate(items, start=1):
                _chunk(fh, TAG_STREAM_HEADER, struct.pack("<I", sid) + _header_xml(spec).encode("utf-8"))
                co = np.asarray(co, dtype=np.float64).reshape(-1, 2)
                co = co[np.isfinite(co).all(axis=1)]
                for local_s, offset_s in co:
                    # CollectionTime is on the stream's own clock (LabRecorder writes now - offset).
                    _chunk(fh, TAG_CLOCK_OFFSET, struct.pack("<Idd", sid, local_s - offset_s, offset_s))
                for k in range(0, len(ts), SAMPLES_PER_CHUNK):
                    _chunk(fh, TAG_SAMPLES, struct.pack("<I", sid)
                           + _samples(spec, ts[k:k + SAMPLES_PER_CHUNK], data[k:k + SAMPLES_PER_CHUNK]))
                _chunk(fh, TAG_BOUNDARY, BOUNDARY_UUID)
                _chunk(fh, TAG_STREAM_FOOTER, struct.pack("<I", sid) + _footer_xml(ts, co).encode("utf-8"))
                report.streams += 1
                report.samples += len(ts)
                report.clock_offsets += len(co)
    except OSError as exc:
        raise ArchiveError(f"cannot write XDF file {out}: {exc.strerror or exc}") from None
    return report


def _varlen(n: int) -> bytes:
    """An XDF variable-length integer: [NumLengthBytes 1/4/8][value, little endian]."""
    if n < 256:
        return struct.pack("<BB", 1, n)
    if n < 2**32:
        return struct.pack("<BI", 4, n)
    return struct.pack("<BQ", 8, n)


def _chunk(fh: BinaryIO, tag: int, content: bytes) -> None:
    fh.write(_varlen(len(content) + 2) + struct.pack("<H", tag) + content)


def _samples(spec: StreamSpec, ts: np.ndarray, data: Any) -> bytes:
    """[NumSamples][per sample: TimeStampBytes=8, timestamp f64, values] as one bytes object."""
    n = len(ts)
    if spec.dtype == "string":
        parts = [_varlen(n)]
        for t, text in zip(ts, data, strict=True):
            values = [str(text)] if spec.channel_count == 1 else _json_list(str(text), spec.channel_count)
            parts.append(struct.pack("<Bd", 8, float(t)))
            for v in values:
                b = v.encode("utf-8")
                parts.append(_varlen(len(b)) + b)
        return b"".join(parts)
    rec = np.empty(n, dtype=np.dtype([("tsb", "u1"), ("ts", "<f8"),
                                      ("v", _VALUE_TYPES[spec.dtype], (spec.channel_count,))]))
    rec["tsb"] = 8
    rec["ts"] = ts
    rec["v"] = np.asarray(data).reshape(n, spec.channel_count)
    return _varlen(n) + rec.tobytes()


def _json_list(text: str, n: int) -> list[str]:
    import json

    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, list) or len(values) != n:
        return [text] + [""] * (n - 1)
    return [str(v) for v in values]


def _header_xml(spec: StreamSpec) -> str:
    """The stream's LSL header XML, as an LSL outlet announces it (pylsl builds it)."""
    return str(spec.to_info().as_xml())


def _footer_xml(ts: np.ndarray, co: np.ndarray) -> str:
    first = float(ts[0]) if len(ts) else 0.0
    last = float(ts[-1]) if len(ts) else 0.0
    offsets = "".join(f"<offset><time>{lt - off!r}</time><value>{off!r}</value></offset>" for lt, off in co)
    return (f'<?xml version="1.0"?><info><first_timestamp>{first!r}</first_timestamp><last_timestamp>'
            f"{last!r}</last_timestamp><sample_count>{len(ts)}</sample_count>"
            f"<clock_offsets>{offsets}</clock_offsets></info>")


def _file_header(session: Session) -> str:
    a = session.attrs
    fields = {"version": "1.0", "datetime": a.get("start_time_utc", ""),
              "labsuite_version": a.get("labsuite_version", ""), "session_file": session.path.name,
              "participant_id": a.get("participant_id", ""), "status": session.status}
    mass = a.get("mass_kg", math.nan)
    if isinstance(mass, (int, float)) and math.isfinite(mass):
        fields["mass_kg"] = repr(float(mass))
    body = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in fields.items())
    return f'<?xml version="1.0"?><info>{body}</info>'
