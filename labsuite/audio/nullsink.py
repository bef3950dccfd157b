"""A private PulseAudio server with a null sink, and a recorder of what that sink played.

Lets tests, benchmarks and ``labsuite audio test --null-sink`` hear the metronome without a sound
card: the server runs in its own runtime directory (so it never meets the user's or another test
run's server, root included), dies with the process that started it, and ``parec`` records the
sink's monitor as raw s16le. Clients reach it through ``PULSE_SERVER`` (see :meth:`client_env`).
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

import numpy as np

from labsuite.errors import DeviceError

SINK_NAME = "labsuite_null"
RATE_HZ = 48000
CHANNELS = 2
_PR_SET_PDEATHSIG = 1
# A server whose starter vanished without killing it exits after this long without clients.
_IDLE_EXIT_S = 600
_RECORDER_NICE = -15


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the starting process dies (no orphaned servers)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not glibc: the idle exit still ends an orphan
        pass


def _recorder_child() -> None:
    """Set up the recorder's child: die with us, and a high priority where allowed.

    A recorder that falls behind loses samples, and every onset after the loss would look early.
    """
    _die_with_parent()
    try:
        os.setpriority(os.PRIO_PROCESS, 0, _RECORDER_NICE)
    except OSError:
        pass


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise DeviceError(f"{tool} is not installed (Debian: apt-get install {package}); "
                          "it is needed for the null-sink sound server")
    return path


class NullSinkServer:
    """One private PulseAudio whose default sink is a null sink at ``rate_hz``, ``channels``."""

    def __init__(self, *, rate_hz: int = RATE_HZ, channels: int = CHANNELS) -> None:
        self.rate_hz = int(rate_hz)
        self.channels = int(channels)
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id (tests freeze it to stall the sound server)."""
        if self._proc is None:
            raise DeviceError("null-sink server: not started")
        return self._proc.pid

    @property
    def socket_path(self) -> Path:
        """The server's native-protocol socket."""
        if self.dir is None:
            raise DeviceError("null-sink server: not started")
        return self.dir / "native"

    @property
    def server(self) -> str:
        """The PULSE_SERVER value that reaches this server."""
        return f"unix:{self.socket_path}"

    @property
    def monitor(self) -> str:
        """The source that carries what the null sink plays."""
        return f"{SINK_NAME}.monitor"

    def client_env(self) -> dict[str, str]:
        """Environment additions for a client process (PortAudio via ALSA's pulse plugin, parec)."""
        if self.dir is None:
            raise DeviceError("null-sink server: not started")
        # runtime path and cookie inside our directory: libpulse clients otherwise create
        # /tmp/pulse-* and ~/.config/pulse/cookie for the user
        return {"PULSE_SERVER": self.server, "PULSE_RUNTIME_PATH": str(self.dir),
                "PULSE_COOKIE": str(self.dir / "cookie")}

    def start(self, timeout_s: float = 15.0) -> NullSinkServer:
        """Start the server; DeviceError (with its log) when it does not answer within ``timeout_s``."""
        exe = _need("pulseaudio", "pulseaudio")
        _need("pactl", "pulseaudio-utils")
        self.dir = Path(tempfile.mkdtemp(prefix="labsuite-pulse-"))
        os.chmod(self.dir, 0o700)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        # HOME and XDG_RUNTIME_DIR of its own: cookie, state and pid file stay in our directory
        env.update(HOME=str(self.dir), XDG_RUNTIME_DIR=str(self.dir), XDG_CONFIG_HOME=str(self.dir))
        cmd = [exe, "--daemonize=no", "-n", "--use-pid-file=no", f"--exit-idle-time={_IDLE_EXIT_S}",
               "--log-target=stderr", "--disable-shm=yes",
               f"--load=module-native-protocol-unix socket={self.socket_path} auth-anonymous=1",
               f"--load=module-null-sink sink_name={SINK_NAME} rate={self.rate_hz} "
               f"channels={self.channels}",
               ]
        self._log = open(self.dir / "pulseaudio.log", "wb")  # closed in stop()
        self._proc = subprocess.Popen(cmd, env=env, cwd=self.dir, stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT,
                                      preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self.socket_path.exists() and self._pactl("info", check=False) == 0:
                self._pactl("set-default-sink", SINK_NAME)
                return self
            time.sleep(0.05)
        log = self.log_tail()
        self.stop()
        raise DeviceError(f"null-sink PulseAudio did not start within {timeout_s:g} s: {log}")

    def _pactl(self, *args: str, check: bool = True) -> int:
        env = {**os.environ, **self.client_env()}
        done = subprocess.run(["pactl", *args], env=env, capture_output=True, timeout=10)
        if check and done.returncode != 0:
            raise DeviceError(f"pactl {' '.join(args)} failed: "
                              f"{done.stderr.decode(errors='replace').strip()}")
        return done.returncode

    def log_tail(self, n: int = 5) -> str:
        """The last lines of the server's log, for error messages."""
        if self.dir is None or not (self.dir / "pulseaudio.log").exists():
            return "(no log)"
        lines = (self.dir / "pulseaudio.log").read_text(errors="replace").splitlines()
        return " | ".join(lines[-n:]) or "(empty log)"

    def record(self, path: Path | str) -> MonitorRecording:
        """Start recording the sink's monitor into ``path`` (raw s16le); stop it with ``.stop()``."""
        return MonitorRecording(self, Path(path)).start()

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> NullSinkServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MonitorRecording:
    """``parec`` writing the null sink's monitor to a raw s16le file at the server's rate."""

    def __init__(self, server: NullSinkServer, path: Path) -> None:
        self.server = server
        self.path = path
        self._proc: subprocess.Popen[bytes] | None = None
        self._file: IO[bytes] | None = None
        self.started_s = math.nan
        self.wall_s = math.nan
        self.recorded_s = math.nan

    def start(self, timeout_s: float = 10.0) -> MonitorRecording:
        """Start parec and wait until its first samples are on disk (the recording is live)."""
        exe = _need("parec", "pulseaudio-utils")
        s = self.server
        env = {**os.environ, **s.client_env()}
        self._file = open(self.path, "wb")  # closed in stop()
        self._proc = subprocess.Popen(
            [exe, "--raw", "--format=s16le", f"--rate={s.rate_hz}", f"--channels={s.channels}",
             f"--device={s.monitor}", "--latency-msec=20"],
            env=env, stdin=subprocess.DEVNULL, stdout=self._file, stderr=subprocess.PIPE,
            preexec_fn=_recorder_child)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                self.stop()
                raise DeviceError(f"parec exited at once: {err.strip()}")
            size = self.path.stat().st_size
            if size > 0:
                # the wall clock of the recording starts with its first samples
                self.started_s = time.monotonic() - size / (2.0 * self.server.channels * self.server.rate_hz)
                return self
            time.sleep(0.02)
        self.stop()
        raise DeviceError(f"parec wrote nothing within {timeout_s:g} s")

    def stop(self) -> np.ndarray:
        """Stop recording; return the samples as float (n, channels), full scale 1.

        ``wall_s`` is then how long parec ran and ``recorded_s`` how much audio it wrote: a
        recording that lost samples is shorter than its wall time by more than parec's latency.
        """
        self.wall_s = time.monotonic() - self.started_s
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # parec flushes what it has on SIGINT
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stderr is not None:
                proc.stderr.close()
        if self._file is not None:
            self._file.close()
            self._file = None
        samples = read_raw(self.path, self.server.channels)
        self.recorded_s = len(samples) / self.server.rate_hz
        return samples


def read_raw(path: Path | str, channels: int) -> np.ndarray:
    """Read a raw s16le file as float (n, channels), full scale 1 (a trailing partial frame is dropped)."""
    raw = np.fromfile(path, dtype="<i2")
    raw = raw[:len(raw) - len(raw) % channels]
    return raw.reshape(-1, channels).astype(np.float64) / 32768.0
