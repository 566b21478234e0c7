"""Resampling between a slide level and a stainer's working resolution.

A model trained at 0.5 µm/px sees a 0.25 µm/px slide at half size, and its
output is brought back to the slide's own geometry so it overlays the input.

Resampling here is region-based and uses explicit, globally indexed weights:
output pixel ``o`` sits at source coordinate ``(o + 0.5) / factor - 0.5`` and
takes a triangle (linear) filter whose support widens by ``1 / factor`` when
shrinking, the same antialiased linear filter PIL and torch use. Because the
weights depend only on global coordinates, a region resampled on its own
equals the same region cut from a whole-image resample, so tiles agree.
"""

from __future__ import annotations

import math

import numpy as np

from .grid import read_region

# Relative mpp difference below which two resolutions count as the same.
MPP_TOLERANCE = 0.02


def scale_factor(level_mpp: float | None, work_mpp: float | None) -> float:
    """Working pixels per level pixel (1.0 when no resampling is needed)."""
    if not level_mpp or not work_mpp:
        return 1.0
    f = float(level_mpp) / float(work_mpp)
    return 1.0 if abs(f - 1.0) <= MPP_TOLERANCE else f


def scaled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    return tuple(max(1, round(s * factor)) for s in shape[:2])  # type: ignore[return-value]


def _axis_weights(o0: int, o1: int, factor: float, src_size: int):
    """Source range [a, b) and the (o1-o0) × (b-a) weight matrix along one axis."""
    support = max(1.0, 1.0 / factor)
    centres = (np.arange(o0, o1, dtype=np.float64) + 0.5) / factor - 0.5
    s0 = math.floor(centres[0] - support)
    s1 = math.ceil(centres[-1] + support) + 1
    s = np.arange(s0, s1, dtype=np.float64)
    w = np.clip(1.0 - np.abs(s[None, :] - centres[:, None]) / support, 0.0, None)
    w /= w.sum(axis=1, keepdims=True)
    # Out-of-range taps fold onto the edge pixel (edge replication).
    idx = np.clip(np.arange(s0, s1), 0, src_size - 1)
    a, b = int(idx.min()), int(idx.max()) + 1
    folded = np.zeros((o1 - o0, b - a), dtype=np.float64)
    np.add.at(folded, (slice(None), idx - a), w)
    return a, b, folded.astype(np.float32)


def resample_region(
    source,
    y0: int,
    y1: int,
    x0: int,
    x1: int,
    factor: float,
    src_shape: tuple[int, int] | None = None,
    origin: tuple[int, int] = (0, 0),
    dtype=np.uint8,
) -> np.ndarray:
    """Rows [y0, y1) × columns [x0, x1) of the image resampled by ``factor``, as ``dtype``
    (uint8 rounds to the nearest grey level; float keeps the filtered values).

    ``source`` (Y×X×C uint8, numpy or dask) is the whole image, or, with
    ``origin`` and ``src_shape``, a window of an image of ``src_shape`` whose
    top-left pixel is at ``origin``; the window must hold every source pixel
    the region reads (see :func:`source_window`). Only that window is read.
    """
    if factor == 1.0:
        oy, ox = origin
        return read_region(source, y0 - oy, y1 - oy, x0 - ox, x1 - ox)
    h, w = src_shape or source.shape[:2]
    ay, by, wy = _axis_weights(y0, y1, factor, h)
    ax, bx, wx = _axis_weights(x0, x1, factor, w)
    oy, ox = origin
    src = read_region(source, ay - oy, by - oy, ax - ox, bx - ox).astype(np.float32)
    if src.shape[:2] != (by - ay, bx - ax):
        raise ValueError(f"resample: source window misses rows {ay}:{by} or columns {ax}:{bx}")
    out = np.einsum("oy,yxc->oxc", wy, src)
    out = np.einsum("px,oxc->opc", wx, out)
    if np.dtype(dtype) != np.uint8:
        return out.astype(dtype)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def source_window(o0: int, o1: int, factor: float, src_size: int) -> tuple[int, int]:
    """The source range [a, b) that output range [o0, o1) reads from."""
    a, b, _ = _axis_weights(o0, o1, factor, src_size)
    return a, b
