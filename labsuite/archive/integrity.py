"""Look at a session file's bytes before HDF5 does: superblock, length, and whether it is live.

Sits under the reader (labsuite.archive.reader): a damaged file must never reach HDF5 in a mode
where it can hang. HDF5 retries a metadata read whose checksum fails up to 100 times in SWMR
mode, sleeping 1 ns, 2 ns, 4 ns ... between tries (2^100 ns: forever), and skips its own
"file is shorter than recorded" check; that is why a file cut at 50 % hung every reader. So:
a file closed cleanly is opened as a plain read-only file (one read attempt, length checked by
HDF5); only a file still open for writing (live, or left so by a crash) is opened in SWMR mode,
and then with a bounded number of read attempts. Whether a writer is alive is told by a lock
the writer holds for as long as it runs (the kernel drops it when the process dies).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labsuite.errors import ArchiveError

try:  # POSIX only; elsewhere a file open for writing is reported as "live or cut short"
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Superblock v2/v3 file consistency flags (HDF5 file format specification, "Superblock").
FLAG_WRITE_ACCESS = 0x01
FLAG_SWMR_WRITE_ACCESS = 0x04
# Metadata read attempts in SWMR mode: enough to ride over a writer caught mid-write (the sleeps
# add up to 2^12 ns = 4 us), not enough to hang on a damaged file.
SWMR_READ_ATTEMPTS = 12

_M32 = 0xFFFFFFFF


@dataclass(frozen=True)
class FileProbe:
    """What the first bytes of an HDF5 file say, read without HDF5.

    ``stored_eof`` is the end-of-file address the writer recorded (absolute, bytes);
    ``status_flags`` are non-zero while a writer has the file open (and after it crashed).
    """

    path: Path
    size_bytes: int
    superblock_version: int
    status_flags: int
    stored_eof: int
    writer_alive: bool

    @property
    def open_for_write(self) -> bool:
        """True when HDF5 did not close the file: it is being written, or its writer died."""
        return bool(self.status_flags & (FLAG_WRITE_ACCESS | FLAG_SWMR_WRITE_ACCESS))

    @property
    def truncated(self) -> bool:
        """True when the file is shorter than its writer recorded (bytes at the end are missing)."""
        return self.stored_eof > self.size_bytes

    @property
    def missing_bytes(self) -> int:
        """Bytes missing at the end of the file (0 when it is complete)."""
        return max(0, self.stored_eof - self.size_bytes)


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``: the checksum of every HDF5 v2+ metadata block."""
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & _M32
    i = 0
    while n - i > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & _M32
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & _M32
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & _M32
        a = (a - c) & _M32
        a ^= _rot(c, 4)
        c = (c + b) & _M32
        b = (b - a) & _M32
        b ^= _rot(a, 6)
        a = (a + c) & _M32
        c = (c - b) & _M32
        c ^= _rot(b, 8)
        b = (b + a) & _M32
        a = (a - c) & _M32
        a ^= _rot(c, 16)
        c = (c + b) & _M32
        b = (b - a) & _M32
        b ^= _rot(a, 19)
        a = (a + c) & _M32
        c = (c - b) & _M32
        c ^= _rot(b, 4)
        b = (b + a) & _M32
        i += 12
    if i == n:
        return c
    tail = data[i:] + bytes(12 - (n - i))
    a = (a + int.from_bytes(tail[0:4], "little")) & _M32
    b = (b + int.from_bytes(tail[4:8], "little")) & _M32
    c = (c + int.from_bytes(tail[8:12], "little")) & _M32
    c = ((c ^ b) - _rot(b, 14)) & _M32
    a = ((a ^ c) - _rot(c, 11)) & _M32
    b = ((b ^ a) - _rot(a, 25)) & _M32
    c = ((c ^ b) - _rot(b, 16)) & _M32
    a = ((a ^ c) - _rot(c, 4)) & _M32
    b = ((b ^ a) - _rot(a, 14)) & _M32
    c = ((c ^ b) - _rot(b, 24)) & _M32
    return c


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def probe_file(path: str | os.PathLike[str]) -> FileProbe:
    """Read and check the HDF5 superblock of ``path``; ArchiveError naming what is wrong.

    Refused: a missing or non-regular file, no HDF5 signature, a superblock version labsuite
    does not write (0/1 files are checked by HDF5 itself, see :func:`open_h5`), a damaged
    superblock (its checksum). A file shorter than recorded is *reported* (``truncated``), so
    the reader can say what is missing and what can still be read.
    """
    p = Path(path)
    if not p.exists():
        raise ArchiveError(f"session file {p} does not exist")
    if not p.is_file():
        raise ArchiveError(f"cannot open session file {p}: not a file (a session file is one .h5 file)")
    try:
        size = p.stat().st_size
        with p.open("rb") as fh:
            offset = 0
            while True:  # the superblock is at 0, 512, 1024, 2048 ... (after a user block)
                fh.seek(offset)
                head = fh.read(48)
                if head[:8] == SIGNATURE:
                    break
                offset = 512 if offset == 0 else offset * 2
                if offset + 8 > min(size, 1 << 20):
                    raise ArchiveError(f"cannot open session file {p}: not an HDF5 file (no HDF5 "
                                       "signature in its first MiB), so not a labsuite session file")
    except OSError as exc:
        raise ArchiveError(f"cannot read {p}: {exc.strerror or exc}") from None
    version = head[8] if len(head) > 8 else -1
    if version in (0, 1):
        # Not written by labsuite (libver "latest" writes v3); HDF5 checks these itself.
        return FileProbe(p, size, version, 0, 0, False)
    if version not in (2, 3) or len(head) < 12:
        raise ArchiveError(f"{p}: HDF5 superblock version {version} at byte {offset} is unknown "
                           "(damaged, or written by a newer HDF5)")
    width = head[9]
    if width not in (4, 8):
        raise ArchiveError(f"{p}: the HDF5 superblock at byte {offset} is damaged (address size "
                           f"{width}); the file cannot be read")
    end = 12 + 4 * width
    if len(head) < end + 4:
        raise ArchiveError(f"{p}: the file ends inside its HDF5 superblock ({size} bytes)")
    stored = int.from_bytes(head[end:end + 4], "little")
    if lookup3(head[:end]) != stored:
        raise ArchiveError(f"{p}: the HDF5 superblock (bytes {offset}-{offset + end + 3}) is damaged "
                           "(its checksum does not match); the file cannot be read")
    base = int.from_bytes(head[12:12 + width], "little")
    eof = int.from_bytes(head[12 + 2 * width:12 + 3 * width], "little")
    flags = head[11]
    probe = FileProbe(p, size, version, flags, base + eof, False)
    if probe.open_for_write:
        probe = FileProbe(p, size, version, flags, base + eof, writer_alive(p))
    return probe


# The writer's lock: an open-file-description (OFD) write lock on one byte far past any data.
# HDF5 uses flock() for its own locking, which OFD locks do not interact with, so HDF5 readers
# (ours and anybody's) open the live file as before; F_OFD_GETLK tests the lock without taking
# it, so readers never disturb each other. Linux only (elsewhere: "live or cut short").
_LOCK_OFFSET = 1 << 62
_FLOCK_STRUCT = "hhqqi"  # struct flock: l_type, l_whence, l_start, l_len, l_pid
_HAVE_OFD = fcntl is not None and hasattr(fcntl, "F_OFD_GETLK")


def _flock_arg(kind: int) -> bytes:
    return struct.pack(_FLOCK_STRUCT, kind, os.SEEK_SET, _LOCK_OFFSET, 1, 0)


def writer_alive(path: Path) -> bool:
    """True when a labsuite writer holds the file's writer lock (its process is running)."""
    if not _HAVE_OFD:  # pragma: no cover - not Linux: cannot tell
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        got = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock_arg(fcntl.F_RDLCK))
        return bool(struct.unpack(_FLOCK_STRUCT, got[:struct.calcsize(_FLOCK_STRUCT)])[0] != fcntl.F_UNLCK)
    except OSError:
        return False
    finally:
        os.close(fd)


class WriterLock:
    """The lock a session file's writer holds while it writes (see ``_LOCK_OFFSET``).

    Released when the file is closed, and by the kernel when the process dies, so a reader can
    tell a live file from one whose writer crashed.
    """

    def __init__(self, path: Path) -> None:
        self._fd: int | None = None
        if not _HAVE_OFD:  # pragma: no cover - not Linux
            return
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock_arg(fcntl.F_WRLCK))
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_HDF5_LIB: Any = None


def _hdf5_library() -> Any:
    """The HDF5 shared library h5py uses (for the one property h5py does not wrap), or None."""
    global _HDF5_LIB
    if _HDF5_LIB is not None:
        return _HDF5_LIB or None
    import h5py  # noqa: F401  (loads the library)

    candidates: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            paths = {line.split()[-1] for line in fh if "/libhdf5" in line}
        candidates += sorted(p for p in paths if p.startswith("/") and "_hl" not in p)
    except OSError:
        pass
    found = ctypes.util.find_library("hdf5")
    if found:
        candidates.append(found)
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
            fn = lib.H5Pset_metadata_read_attempts
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_int64, ctypes.c_uint]
        fn.restype = ctypes.c_int
        _HDF5_LIB = lib
        return lib
    _HDF5_LIB = False
    return None


def open_h5(path: Path, *, swmr: bool) -> Any:
    """Open an HDF5 file read-only; ``swmr`` for a file still open for writing.

    SWMR reads get :data:`SWMR_READ_ATTEMPTS` metadata read attempts instead of HDF5's 100 (see
    the module docstring). Raises OSError as h5py does.
    """
    import h5py

    if not swmr:
        return h5py.File(path, "r")
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    lib = _hdf5_library()
    if lib is None or lib.H5Pset_metadata_read_attempts(fapl.id, SWMR_READ_ATTEMPTS) < 0:
        raise ArchiveError(f"{path}: this file was not closed cleanly, and reading it safely needs "
                           "HDF5's H5Pset_metadata_read_attempts, which could not be reached")
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
    return h5py.File(fid)
