"""The session file layout (format version 3): names, attribute keys and small helpers.

Shared by the writer (labsuite.archive.writer) and the reader (labsuite.archive.reader) so both
agree on every name; docs/archive.md documents the same layout for readers without labsuite.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from labsuite.streams.contracts import Channel, StreamSpec

FORMAT_NAME = "labsuite-session"
# 1: the first layout. 2: adds a ``checksums`` dataset to every growing group and the root
# attribute ``header_sha256``; readers of 2 read 1 (nothing to verify there). 3: adds the
# ``video`` group (segments and the frame table); readers of 3 read 1 and 2 (no frame table).
FORMAT_VERSION = 3
FIRST_VIDEO_VERSION = 3

STREAMS = "streams"
STEPS = "steps"
MARKERS = "markers"
STAGES = "stages"
CALIBRATION = "calibration"
EVENTS = "events"
# Format 3: the video that belongs to the session (labsuite.video), one group holding two more.
VIDEO = "video"
VIDEO_SEGMENTS = "video/segments"  # text log: one JSON object per video segment file
VIDEO_FRAMES = "video/frames"  # group with a ``table`` of FRAME_DTYPE, one row per frame written
FRAME_DTYPE = np.dtype([
    ("frame_index", np.int64),  # the camera's frame index (runs on across its segments)
    ("time_s", np.float64),  # raw LSL time of the frame, as the camera stream's time_stamps
    ("segment", np.int64),  # row of video/segments: which file (and which camera)
    ("position", np.int64),  # the frame's number in that file, from 0
])

# In a stream group.
TIME_STAMPS = "time_stamps"  # (n,) float64, raw LSL timestamps as received
TIME_SERIES = "time_series"  # (n, channels) numeric samples, the stream's own dtype
CLOCK_OFFSETS = "clock_offsets"  # (k, 2) float64: local LSL time of the measurement, offset s
TEXT_DATA = "text_data"  # uint8 UTF-8 bytes of every text sample, back to back
TEXT_END = "text_end"  # int64 end offset (exclusive) of sample i in text_data
COMMITTED = "committed"  # (1,) int64: rows complete on disk; rows beyond it are not trusted
CHECKSUMS = "checksums"  # (k, 2) int64, format 2: [rows so far, CRC-32 of the rows since the last]
CRC_BLOCK_ROWS = 1024  # a flush's rows get one checksum per block of at most this many
HEADER_SHA256 = "header_sha256"  # format 2: SHA-256 of the root attributes written at the start
# Root attributes written after the start (at the close, or by `labsuite recover`): not hashed.
# The session's outcome (labsuite run writes it into every part once the recorder closed them,
# the same outcome its exit code and last lines give): OUTCOME one of the OUTCOMES below,
# OUTCOME_CODE the exit code, OUTCOME_DETAIL one line (what ended it, seconds missing).
OUTCOME = "outcome"
OUTCOME_CODE = "outcome_code"
OUTCOME_DETAIL = "outcome_detail"
UNHASHED_ATTRS = ("complete", "end_lsl_s", HEADER_SHA256, "recovered_from", "recovered_utc",
                  "recovered_by", "recovery_lost", OUTCOME, OUTCOME_CODE, OUTCOME_DETAIL)
# A session recorded in several parts (the recorder was restarted): every part names its number
# and the session's first file (labsuite.archive.naming), written at its start.
PART = "session_part"
FIRST_FILE = "session_first_file"
# The event the first records of a later part: the recorder was restarted, data are missing.
EVENT_RECORDING_RESUMED = "recording_resumed"
LATE_SPEC = "spec"  # late slots: a text log holding the stream description as JSON

LATE_PREFIX = "late_"


def stream_key(source_id: str, taken: set[str]) -> str:
    """Return an HDF5-safe group name for a stream, unique among ``taken``."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", source_id) or "stream"
    if base.startswith(LATE_PREFIX):
        base = "s_" + base  # late_* names are reserved for the spare slots
    key, n = base, 2
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    return key


def spec_to_json(spec: StreamSpec) -> str:
    """Serialise a stream description to JSON (numbers in setup become lists)."""
    return json.dumps({
        "name": spec.name,
        "kind": spec.kind,
        "lsl_type": spec.lsl_type,
        "channels": [{"label": c.label, "unit": c.unit, "type": c.type} for c in spec.channels],
        "rate_hz": spec.rate_hz,
        "dtype": spec.dtype,
        "source_id": spec.source_id,
        "manufacturer": spec.manufacturer,
        "model": spec.model,
        "serial_number": spec.serial_number,
        "setup": _jsonable(spec.setup),
        "can_drop_samples": spec.can_drop_samples,
    }, separators=(",", ":"))


def spec_from_json(text: str) -> StreamSpec:
    """Rebuild a stream description from :func:`spec_to_json` output."""
    obj = json.loads(text)
    return StreamSpec(
        name=obj["name"], kind=obj["kind"],
        channels=tuple(Channel(c["label"], c["unit"], c["type"]) for c in obj["channels"]),
        rate_hz=float(obj["rate_hz"]), dtype=obj["dtype"], source_id=obj["source_id"],
        manufacturer=obj.get("manufacturer", ""), model=obj.get("model", ""),
        serial_number=obj.get("serial_number", ""), setup=obj.get("setup", {}),
        can_drop_samples=bool(obj.get("can_drop_samples", False)),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return np.asarray(value, dtype=float).tolist()


# The order in which a flush's new rows enter its CRC (writer and reader must agree).
CRC_ORDER = (TIME_STAMPS, TIME_SERIES, TEXT_END, TEXT_DATA, "table")


def row_crc32(parts: Mapping[str, np.ndarray]) -> int:
    """CRC-32 of a flush's new rows: each dataset's bytes (C order, file dtype) in ``CRC_ORDER``."""
    crc = 0
    for name in CRC_ORDER:
        if name in parts:
            crc = zlib.crc32(np.ascontiguousarray(parts[name]).tobytes(), crc)
    return crc


def header_digest(attrs: Mapping[str, Any]) -> str:
    """SHA-256 of the root attributes outside ``UNHASHED_ATTRS``, as sorted canonical JSON."""
    def plain(v: Any) -> Any:
        if isinstance(v, bytes):
            return v.decode("utf-8", errors="replace")
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
        return v

    doc = {k: plain(v) for k, v in attrs.items() if k not in UNHASHED_ATTRS}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def decode_text_log(data: np.ndarray, end: np.ndarray) -> list[str]:
    """Split the back-to-back UTF-8 bytes of a text log into its strings."""
    raw = np.asarray(data, dtype=np.uint8).tobytes()
    out, start = [], 0
    for stop in np.asarray(end, dtype=np.int64):
        out.append(raw[start:int(stop)].decode("utf-8", errors="replace"))
        start = int(stop)
    return out
