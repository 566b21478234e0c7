"""Blending windows whose overlapping weights sum to exactly one.

On a regular grid (see :mod:`.grid`) tile i+1 rises across its leading
overlap band with a ramp ``r(k)`` while tile i falls across the same band with
``1 - r(k)``. A tile side that touches the image edge has no neighbour to
share with and stays flat at one, so edge pixels keep full weight instead of
being divided by a tiny sum. When the overlap is at most half the tile the
weights of the (at most two) tiles at a pixel add up to one by construction;
larger overlaps put three or more tiles on a pixel, and each axis is then
divided by its weight sum. The 2-D window is the outer product of the two axis
windows, so the sum over all tiles is a product of sums that are each one.

Kinds of ramp:

- ``"cosine"``: ``sin²`` ramp, smooth at both ends (the default);
- ``"linear"``: a straight feather;
- ``"none"``: no blending; every pixel comes from the one tile whose centre
  is nearest, i.e. a hard cut at the middle of each overlap band. Used to
  measure what blending buys.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import ParameterError
from .grid import TileGrid

WINDOWS = ("cosine", "linear", "none")


@lru_cache(maxsize=64)
def ramp(overlap: int, kind: str = "cosine") -> np.ndarray:
    """Weights of the rising tile across an overlap band of ``overlap`` pixels."""
    if kind not in WINDOWS:
        raise ParameterError(f"window: unknown kind {kind!r}; choose one of {', '.join(WINDOWS)}")
    t = (np.arange(overlap, dtype=np.float64) + 0.5) / max(overlap, 1)
    if kind == "cosine":
        r = np.sin(0.5 * np.pi * t) ** 2
    elif kind == "linear":
        r = t
    else:
        r = (t >= 0.5).astype(np.float64)
    r.setflags(write=False)
    return r


def _raw_axis_window(tile: int, overlap: int, first: bool, last: bool, kind: str) -> np.ndarray:
    w = np.ones(tile, dtype=np.float64)
    if overlap:
        r = ramp(overlap, kind)
        if not first:
            w[:overlap] *= r
        if not last:
            w[tile - overlap :] *= 1.0 - r
    return w


@lru_cache(maxsize=64)
def axis_windows(n: int, tile: int, overlap: int, kind: str = "cosine") -> np.ndarray:
    """n × tile weights of the n tiles along one axis, summing to one at every pixel."""
    if kind not in WINDOWS:
        raise ParameterError(f"window: unknown kind {kind!r}; choose one of {', '.join(WINDOWS)}")
    step = tile - overlap
    if kind == "none" and overlap:
        # Nearest tile centre wins; ties go to the later tile, as the ramp does.
        pos = np.arange(n)[:, None] * step + np.arange(tile)[None, :]
        owner = np.clip(np.floor((pos - (tile - 1) / 2) / step + 0.5), 0, n - 1)
        w = (owner == np.arange(n)[:, None]).astype(np.float64)
    else:
        w = np.stack([_raw_axis_window(tile, overlap, i == 0, i == n - 1, kind) for i in range(n)])
        if overlap > step:
            total = np.zeros((n - 1) * step + tile)
            for i in range(n):
                total[i * step : i * step + tile] += w[i]
            for i in range(n):
                w[i] /= total[i * step : i * step + tile]
    w.setflags(write=False)
    return w


def tile_window(grid: TileGrid, r: int, c: int, kind: str = "cosine") -> np.ndarray:
    """The tile × tile blending weight of tile (r, c) of ``grid`` (float64)."""
    wy = axis_windows(grid.n_rows, grid.tile, grid.overlap, kind)[r]
    wx = axis_windows(grid.n_cols, grid.tile, grid.overlap, kind)[c]
    return np.outer(wy, wx)


def blend_region(
    grid: TileGrid,
    y0: int,
    y1: int,
    x0: int,
    x1: int,
    get_tile,
    kind: str = "cosine",
    channels: int = 3,
    dtype=np.uint8,
) -> np.ndarray:
    """Blend the tiles that meet ``[y0, y1) × [x0, x1)`` into one region of ``dtype``.

    ``get_tile(r, c)`` returns the stained tile (tile × tile × C, uint8, or
    float for extra outputs). With no overlap this is a plain copy, so
    per-pixel stainers are never touched by floating-point weights. uint8
    results are rounded to the nearest grey level; float ones are not rounded.
    """
    out_shape = (y1 - y0, x1 - x0, channels)
    if grid.overlap == 0:
        out = np.empty(out_shape, dtype=dtype)
    else:
        acc = np.zeros(out_shape, dtype=np.float64)
    for r, c in grid.tiles_in(y0, y1, x0, x1):
        ty, tx = grid.origin(r, c)
        sy0, sy1 = max(y0, ty), min(y1, ty + grid.tile)
        sx0, sx1 = max(x0, tx), min(x1, tx + grid.tile)
        tile = get_tile(r, c)
        part = tile[sy0 - ty : sy1 - ty, sx0 - tx : sx1 - tx]
        dst = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
        if grid.overlap == 0:
            out[dst] = part
        else:
            w = tile_window(grid, r, c, kind)[sy0 - ty : sy1 - ty, sx0 - tx : sx1 - tx]
            acc[dst] += w[..., None] * part
    if grid.overlap == 0:
        return out
    if np.dtype(dtype) != np.uint8:
        return acc.astype(dtype)
    return np.clip(np.rint(acc), 0, 255).astype(np.uint8)
