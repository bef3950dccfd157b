"""Read a C3D file with ezc3d in a child process, so a damaged file cannot crash or hang the caller.

Sits under the C3D loader (labsuite.realtime.files.load_c3d, used by ``analyze`` and ``replay``).
ezc3d trusts the header and parameter section it reads: in scripts/fuzz_inputs.py, C3D files
with 20 flipped bytes in their first 6 kB made it crash the Python process (SIGSEGV) or run for
more than 20 s. The child returns plain dicts and arrays; a crash, a hang past the time limit or
an ezc3d error becomes a DataFileError naming the file.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import threading
from pathlib import Path
from typing import Any

from labsuite.errors import DataFileError

# Reading takes ezc3d well under a second per 10 MB; this leaves room for a loaded machine.
BASE_TIMEOUT_S = 4.0
TIMEOUT_S_PER_MB = 1.0


def read_c3d(path: str | Path) -> dict[str, Any]:
    """Return {"parameters": {group: {name: {"value": ...}}}, "analogs": (1, channels, samples)}."""
    path = Path(path)
    size_mb = path.stat().st_size / 1e6
    timeout_s = BASE_TIMEOUT_S + TIMEOUT_S_PER_MB * size_mb
    import ezc3d  # noqa: F401  (loaded before a fork, so the child starts reading at once)

    # Fork is safe from a single-threaded process and costs milliseconds; otherwise spawn (a fresh
    # interpreter, a second or more on a loaded machine).
    method = "fork" if threading.active_count() == 1 and "fork" in mp.get_all_start_methods() else "spawn"
    ctx: Any = mp.get_context(method)
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(str(path), child, os.getpid()), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            raise DataFileError(f"{path}: ezc3d did not finish reading the file within {timeout_s:.0f} s "
                                "(its header or parameters are damaged); not analysed")
        try:
            kind, payload = parent.recv()
        except EOFError:
            proc.join(5.0)
            raise DataFileError(f"{path}: ezc3d crashed reading the file (exit {proc.exitcode}): its "
                                "header or parameters are damaged; not analysed") from None
    finally:
        parent.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5.0)
    if kind == "error":
        raise DataFileError(f"{path}: not a readable C3D file ({payload})")
    return dict(payload)


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel kills this child when its parent dies (a killed analyze leaves no reader)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)


def _child(path: str, conn: Any, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    try:
        import ezc3d
        import numpy as np

        c3d = ezc3d.c3d(path)
        params: dict[str, dict[str, dict[str, Any]]] = {}
        for group in c3d["parameters"]:
            params[group] = {}
            for name in c3d["parameters"][group]:
                entry = c3d["parameters"][group][name]
                if isinstance(entry, dict) and "value" in entry:
                    params[group][name] = {"value": entry["value"]}
        result = {"parameters": params, "analogs": np.asarray(c3d["data"]["analogs"])}
        conn.send(("ok", result))
    except (RuntimeError, ValueError, IndexError, OSError, KeyError, TypeError, MemoryError) as exc:
        conn.send(("error", str(exc) or type(exc).__name__))
    finally:
        conn.close()
