"""Session file names: unique per session, claimed exclusively, and the numbered parts of one session.

The recorder (labsuite.archive.recorder) and ``labsuite run`` (labsuite.lab.run) name a session
``<participant>[_s<n>]_<UTC time to the ms>Z_<6 hex>.h5``; the random suffix keeps two sessions
started in the same millisecond apart. A recorder that is restarted during a session continues in
``<stem>.part2.h5``, ``<stem>.part3.h5`` beside the first file, so one session is one findable set
of files; the reader (labsuite.archive.reader) reads them as one. A name is claimed with an
exclusive create (``O_CREAT | O_EXCL``): a file that exists already is refused, never overwritten.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import secrets
from pathlib import Path

from labsuite.errors import ArchiveError, ConfigError
from labsuite.ids import check_participant_id

SESSION_SUFFIX = ".h5"
# the stem of a later part: "<stem of part 1>.part<N>"
_PART = re.compile(r"^(?P<stem>.+)\.part(?P<n>[2-9]|[1-9][0-9]{1,4})$")
MAX_PARTS = 99_999


def session_file_name(participant_id: str, session_number: int | None = None, *,
                      now: _dt.datetime | None = None, suffix: str | None = None) -> str:
    """A new session file name: participant, programme session, UTC time to the ms, random suffix.

    ``P01_s2_20261124T101500.123Z_3fa9c1.h5``. The participant id is checked first: a path is
    never built from unchecked input.
    """
    check_participant_id(participant_id, "participant_id")
    if session_number is not None and (isinstance(session_number, bool) or int(session_number) < 0):
        raise ConfigError(f"session number: expected an integer >= 0, got {session_number!r}")
    t = (now or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)
    stamp = t.strftime("%Y%m%dT%H%M%S") + f".{t.microsecond // 1000:03d}Z"
    tag = suffix if suffix is not None else secrets.token_hex(3)
    if not re.fullmatch(r"[0-9a-z]{1,12}", tag):
        raise ConfigError(f"session file suffix {tag!r}: expected 1-12 lower-case letters or digits")
    sess = f"_s{int(session_number)}" if session_number is not None else ""
    return f"{participant_id}{sess}_{stamp}_{tag}{SESSION_SUFFIX}"


def part_path(first: str | os.PathLike[str], part: int) -> Path:
    """Part ``part`` (1, 2, ...) of the session whose first file is ``first``."""
    first = Path(first)
    if isinstance(part, bool) or not 1 <= int(part) <= MAX_PARTS:
        raise ConfigError(f"session file part {part!r}: expected 1..{MAX_PARTS}")
    return first if part == 1 else first.with_name(f"{first.stem}.part{int(part)}{first.suffix}")


def split_part(path: str | os.PathLike[str]) -> tuple[Path, int]:
    """(first file of the session, part number) for any file of a session's set."""
    path = Path(path)
    m = _PART.match(path.stem)
    if m is None:
        return path, 1
    return path.with_name(m["stem"] + path.suffix), int(m["n"])


def later_parts(first: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The parts after the first that exist beside it, in order: [(2, path), (3, path), ...]."""
    first = Path(first)
    found = []
    try:
        names = os.listdir(first.parent)
    except OSError:
        return []
    prefix = first.stem + ".part"
    for name in names:
        if not (name.startswith(prefix) and name.endswith(first.suffix)):
            continue
        base, n = split_part(first.with_name(name))
        if n > 1 and base == first:
            found.append((n, first.with_name(name)))
    return sorted(found)


def claim(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` empty with an exclusive create; ArchiveError when it exists (never overwrite).

    The caller owns the new empty file and writes it (h5py opens it with mode ``"w"``); two
    processes given the same name can never both get it.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise ArchiveError(f"session file {path} exists already: sessions are never overwritten; "
                           "start again (a new session gets a new name)") from None
    except OSError as exc:
        raise ArchiveError(f"cannot create session file {path}: {exc.strerror or exc}. Check that "
                           "the folder exists and is writable") from None
    os.close(fd)
    return path
