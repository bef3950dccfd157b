"""Video file names: named after the session file, stored beside it, stored in it relative to it.

A session ``sessions/P01_s2_20261124T101500Z.h5`` films its camera ``camera`` into
``sessions/P01_s2_20261124T101500Z.camera.avi``; a reconnect continues in
``...camera.part2.avi``, ``...camera.part3.avi`` (the first free number: nothing is overwritten).
Two sessions in one folder never clash because session files are never reused. The session file
stores each segment's path relative to its own folder; reading one back never leaves that folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from labsuite.errors import ArchiveError, ConfigError

VIDEO_SUFFIX = ".avi"
_DEVICE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_PART = re.compile(r"^(?P<stem>.+)\.part(?P<n>[1-9][0-9]{0,5})$")
# A stored segment name: plain characters, no separators but '/', no '..' (checked on read).
_STORED = re.compile(r"^[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*$")


def session_video_path(session_file: str | os.PathLike[str], device: str) -> Path:
    """The first segment of ``device``'s video for a session: ``<session stem>.<device>.avi`` beside it."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError(f"camera name {device!r}: expected 1-40 letters, digits, '-' or '_' "
                          "(it becomes part of the video file name)")
    session = Path(session_file)
    return session.with_name(f"{session.stem}.{device}{VIDEO_SUFFIX}")


def segment_path(base: str | os.PathLike[str], part: int) -> Path:
    """Segment ``part`` (1, 2, ...) of the video whose first segment is ``base``."""
    base = Path(base)
    if part < 1:
        raise ConfigError(f"video segment number {part!r}: expected 1 or more")
    return base if part == 1 else base.with_name(f"{base.stem}.part{part}{base.suffix}")


def first_free_part(base: str | os.PathLike[str], start: int = 1) -> int:
    """The lowest segment number >= ``start`` whose file does not exist yet (never overwrite)."""
    part = max(1, start)
    while segment_path(base, part).exists():
        part += 1
    return part


def segments_csv_path(base: str | os.PathLike[str]) -> Path:
    """The camera's own list of its segments, beside the video: ``<base stem>.segments.csv``."""
    base = Path(base)
    return base.with_name(f"{base.stem}.segments.csv")


def relative_to_session(video: str | os.PathLike[str], session_file: str | os.PathLike[str]
                        ) -> tuple[str, bool]:
    """How the session file stores a video path: (POSIX path relative to its folder, inside).

    ``inside`` is False when the video is not in the session's folder (a camera on another
    machine, or configured elsewhere): then only the file name is stored, and the file has to be
    copied beside the session file to be found.
    """
    video_abs = Path(os.path.abspath(video))
    folder = Path(os.path.abspath(session_file)).parent
    try:
        rel = video_abs.relative_to(folder)
    except ValueError:
        return video_abs.name, False
    return PurePosixPath(*rel.parts).as_posix(), True


def resolve_stored(session_file: str | os.PathLike[str], stored: str) -> Path:
    """The path of a stored (relative) video name, inside the session's folder; ArchiveError if unsafe."""
    if not isinstance(stored, str) or not _STORED.match(stored) or ".." in stored.split("/") \
            or stored.startswith("/"):
        raise ArchiveError(f"video file name {stored!r} in {session_file}: expected a path relative to "
                           "the session file's folder (letters, digits, '._+-', '/'), not leaving it")
    return Path(session_file).parent.joinpath(*stored.split("/"))


def part_number(path: str | os.PathLike[str]) -> int:
    """The segment number a file name says (``x.part3.avi`` -> 3, ``x.avi`` -> 1)."""
    m = _PART.match(Path(path).stem)
    return int(m.group("n")) if m else 1
