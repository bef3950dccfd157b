"""Preallocated ring buffer of (timestamp, sample) rows, filled by an inlet's worker thread.

Acquisition writes chunks here without allocating; consumers (GUI traces, watchdogs) copy out the
latest rows. One writer thread and any number of readers; a lock keeps a read from seeing a
half-written chunk.
"""

from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    """Fixed-capacity buffer of the last ``capacity`` samples and their timestamps."""

    def __init__(self, capacity: int, channels: int, dtype: np.dtype | type = np.float64) -> None:
        if capacity < 1:
            raise ValueError(f"capacity: expected >= 1, got {capacity}")
        if channels < 1:
            raise ValueError(f"channels: expected >= 1, got {channels}")
        self.capacity = int(capacity)
        self.channels = int(channels)
        self._ts = np.zeros(self.capacity, dtype=np.float64)
        self._data = np.zeros((self.capacity, self.channels), dtype=dtype)
        self._write = 0  # index of the next row to write
        self._count = 0  # rows ever written (saturates only in meaning, not in value)
        self._lock = threading.Lock()

    @property
    def total_written(self) -> int:
        """Number of samples written since creation."""
        return self._count

    def __len__(self) -> int:
        return min(self._count, self.capacity)

    def write(self, timestamps: np.ndarray, data: np.ndarray) -> None:
        """Append ``n`` rows; when more than ``capacity`` arrive at once only the last are kept."""
        n = len(timestamps)
        if n == 0:
            return
        if data.shape[0] != n:
            raise ValueError(f"data has {data.shape[0]} rows for {n} timestamps")
        if n > self.capacity:
            timestamps = timestamps[-self.capacity:]
            data = data[-self.capacity:]
            skipped, n = n - self.capacity, self.capacity
        else:
            skipped = 0
        with self._lock:
            first = min(n, self.capacity - self._write)
            self._ts[self._write:self._write + first] = timestamps[:first]
            self._data[self._write:self._write + first] = data[:first]
            rest = n - first
            if rest:
                self._ts[:rest] = timestamps[first:]
                self._data[:rest] = data[first:]
            self._write = (self._write + n) % self.capacity
            self._count += n + skipped

    def latest(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Copy out the last ``n`` rows (all held rows when None), oldest first."""
        with self._lock:
            held = min(self._count, self.capacity)
            n = held if n is None else max(0, min(n, held))
            start = (self._write - n) % self.capacity
            if start + n <= self.capacity:
                return self._ts[start:start + n].copy(), self._data[start:start + n].copy()
            idx = (start + np.arange(n)) % self.capacity
            return self._ts[idx], self._data[idx]

    def since(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Copy out the held rows with timestamp > ``t_s``, oldest first."""
        ts, data = self.latest()
        keep = ts > t_s
        return ts[keep], data[keep]
