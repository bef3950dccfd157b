"""A serial device on a pseudo-terminal, reachable through a stable path that survives unplugging.

The emulator writes to the pty master; the driver opens the path (a symlink to the slave, like the
udev links under /dev/serial/by-id) with pyserial. ``unplug`` closes the master, so the driver's
reads fail as on a real USB unplug; ``replug`` creates a new pty behind the same path.
"""

from __future__ import annotations

import os
import tty
from pathlib import Path


class PtyDevice:
    """One pty pair; writes never block (a full buffer drops bytes, as a device's UART would)."""

    def __init__(self, link: Path) -> None:
        self.link = Path(link)
        self.master: int | None = None
        self._slave: int | None = None
        self.bytes_dropped = 0
        self.replug()

    @property
    def plugged(self) -> bool:
        """True while the device is connected."""
        return self.master is not None

    def replug(self) -> None:
        """Create a fresh pty and point the stable path at it."""
        master, slave = os.openpty()
        tty.setraw(slave)  # bytes pass unchanged: no echo, no CR/LF translation
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        tmp = self.link.with_name(self.link.name + ".new")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.link)

    def unplug(self) -> None:
        """Close the pty: the driver's next read fails; the stable path disappears."""
        if self.link.is_symlink():
            self.link.unlink()
        for fd in (self.master, self._slave):
            if fd is not None:
                os.close(fd)
        self.master = self._slave = None

    def write(self, data: bytes) -> int:
        """Write what fits; returns bytes written (the rest is dropped and counted)."""
        if self.master is None:
            self.bytes_dropped += len(data)
            return 0
        try:
            n = os.write(self.master, data)
        except (BlockingIOError, OSError):
            n = 0
        self.bytes_dropped += len(data) - n
        return n

    def read(self) -> bytes:
        """Read what the driver sent (non-blocking; b'' if nothing)."""
        if self.master is None:
            return b""
        try:
            return os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return b""

    def close(self) -> None:
        """Release everything."""
        self.unplug()
