"""The frame-index band: a row of black and white blocks along a frame's top edge, and its reader.

The simulated camera stamps every frame it films with its own frame index, so any test (or a person
looking at a still) can tell which frame it is looking at, after JPEG or H.264 compression.
Layout, left to right, in ``BLOCKS`` equal blocks across the full width: a white guard block, the
24-bit frame index (most significant bit first), its CRC-8 (8 bits), a black guard block.
White is a 1. A frame without a band (a real camera) reads as None, never as a wrong index.
"""

from __future__ import annotations

import numpy as np

from labsuite.errors import ConfigError

INDEX_BITS = 24
CRC_BITS = 8
BLOCKS = 1 + INDEX_BITS + CRC_BITS + 1
MAX_INDEX = (1 << INDEX_BITS) - 1  # 46 h at 100 frames/s
_MIN_CONTRAST = 96  # grey levels between the darkest and the brightest block of a readable band


def band_height_px(width_px: int) -> int:
    """Height of the band for a frame ``width_px`` wide: square blocks, at least 8 px."""
    return max(8, round(width_px / BLOCKS))


def crc8(value: int) -> int:
    """CRC-8 (polynomial 0x07, initial 0) of the three bytes of a 24-bit value, big-endian."""
    crc = 0
    for byte in value.to_bytes(3, "big"):
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _bits(frame_index: int) -> list[int]:
    word = (frame_index << CRC_BITS) | crc8(frame_index)
    n = INDEX_BITS + CRC_BITS
    return [1, *((word >> (n - 1 - i)) & 1 for i in range(n)), 0]


def _edges(width_px: int) -> np.ndarray:
    return np.round(np.linspace(0.0, width_px, BLOCKS + 1)).astype(int)


def draw_band(image: np.ndarray, frame_index: int) -> np.ndarray:
    """Draw the band of ``frame_index`` into the top rows of ``image`` (H, W) or (H, W, 3), in place."""
    if not 0 <= int(frame_index) <= MAX_INDEX:
        raise ConfigError(f"frame index {frame_index!r}: the band holds 0..{MAX_INDEX}")
    height, width = image.shape[:2]
    band = band_height_px(width)
    if width < 2 * BLOCKS or height < 2 * band:
        raise ConfigError(f"frame of {width}x{height} px: too small for a {BLOCKS}-block band "
                          f"(at least {2 * BLOCKS} px wide)")
    edges = _edges(width)
    for i, bit in enumerate(_bits(int(frame_index))):
        image[:band, edges[i]:edges[i + 1]] = 255 if bit else 0
    return image


def read_band(image: np.ndarray) -> int | None:
    """The frame index in ``image``'s band, or None when there is no readable band.

    Reads the middle of each block (JPEG and H.264 smear the edges), thresholds at the midpoint
    between the darkest and brightest block, and checks both guard blocks and the CRC-8.
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[1] < 2 * BLOCKS:
        return None
    grey = img.astype(np.float32) if img.ndim == 2 else img.astype(np.float32).mean(axis=2)
    width = grey.shape[1]
    band = band_height_px(width)
    if grey.shape[0] < 2 * band:
        return None
    edges = _edges(width)
    y0, y1 = band // 4, max(band // 4 + 1, (3 * band) // 4)
    means = np.empty(BLOCKS)
    for i in range(BLOCKS):
        a, b = edges[i], edges[i + 1]
        q = max(1, (b - a) // 4)
        means[i] = grey[y0:y1, a + q:b - q].mean()
    lo, hi = float(means.min()), float(means.max())
    if hi - lo < _MIN_CONTRAST:
        return None
    bits = (means > 0.5 * (lo + hi)).astype(int)
    if bits[0] != 1 or bits[-1] != 0:
        return None
    word = 0
    for bit in bits[1:-1]:
        word = (word << 1) | int(bit)
    index, crc = word >> CRC_BITS, word & 0xFF
    return index if crc8(index) == crc else None
