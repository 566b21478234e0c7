"""The tile grid: equal, overlapping square tiles laid on a regular step.

Tile (r, c) covers rows ``[r*step, r*step + tile)`` and columns
``[c*step, c*step + tile)`` with ``step = tile - overlap``. Every tile has the
full tile size; tiles that run past the bottom or right edge of the image are
padded by reflection, so a model always sees the shape it asked for and the
overlap between neighbours is the same everywhere. Output is cut back to the
image afterwards.

The output of a tiled run is organised in *blocks* of ``step × step``: block i
along an axis is covered by tiles i-1 and i only, which keeps every block's
dependencies to at most four tiles.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError, opt

# The tile sizes a whole-slide job accepts. Below MIN_TILE the per-tile cost
# (reading, queueing, writing) dwarfs the staining; above MAX_TILE one batch
# of input tiles alone is gigabytes.
MIN_TILE = 16
MAX_TILE = 8192


def _whole(value, name: str):
    if value is None:
        return None
    whole = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not whole and not (isinstance(value, float) and value.is_integer()):
        raise ParameterError(f"{opt(name)}: must be an integer, got {value!r}")
    return int(value)


def check_tiling(
    tile, overlap, *, min_tile: int = 1, max_tile: int | None = None
) -> tuple[int | None, int | None]:
    """The one check of a tile size and overlap (None: not given); returns them as ints.

    tile must lie in [min_tile, max_tile], overlap in [0, tile).
    """
    tile, overlap = _whole(tile, "tile"), _whole(overlap, "overlap")
    if tile is not None:
        if tile < min_tile:
            what = "positive" if min_tile <= 1 else f"at least {min_tile} px"
            raise ParameterError(f"{opt('tile')}: must be {what}, got {tile}")
        if max_tile is not None and tile > max_tile:
            raise ParameterError(
                f"{opt('tile')}: {tile} px is too large (at most {max_tile} px: a batch of "
                f"{tile}² tiles would not fit in memory)"
            )
    if overlap is not None:
        if overlap < 0:
            raise ParameterError(f"{opt('overlap')}: must not be negative, got {overlap}")
        if tile is not None and overlap >= tile:
            raise ParameterError(
                f"{opt('overlap')}: {overlap} must be smaller than the tile size {tile}"
            )
    return tile, overlap


def _count(size: int, tile: int, step: int) -> int:
    """Tiles needed along one axis so that the last one reaches the edge."""
    if size <= tile:
        return 1
    return -(-(size - (tile - step)) // step)


@dataclass(frozen=True)
class TileGrid:
    """A regular grid of ``tile``-sized tiles with ``overlap`` over an H×W image."""

    shape: tuple[int, int]
    tile: int
    overlap: int = 0

    def __post_init__(self):
        check_tiling(self.tile, self.overlap)
        h, w = (int(s) for s in self.shape[:2])
        if h < 1 or w < 1:
            raise ParameterError(f"cannot tile an empty image of shape {tuple(self.shape)}")
        object.__setattr__(self, "shape", (h, w))

    @property
    def step(self) -> int:
        return self.tile - self.overlap

    @property
    def n_rows(self) -> int:
        return _count(self.shape[0], self.tile, self.step)

    @property
    def n_cols(self) -> int:
        return _count(self.shape[1], self.tile, self.step)

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def origin(self, r: int, c: int) -> tuple[int, int]:
        return r * self.step, c * self.step

    def tiles(self) -> Iterator[tuple[int, int]]:
        """All tile indices in raster order."""
        for r in range(self.n_rows):
            for c in range(self.n_cols):
                yield r, c

    def _axis_range(self, a0: int, a1: int, n: int) -> range:
        # Tile i covers [i*step, i*step + tile); it meets [a0, a1) when
        # i*step < a1 and i*step + tile > a0.
        first = max(0, (a0 - self.tile) // self.step + 1)
        last = min(n - 1, (a1 - 1) // self.step)
        return range(first, last + 1)

    def tiles_in(self, y0: int, y1: int, x0: int, x1: int) -> list[tuple[int, int]]:
        """Indices of the tiles that meet the region ``[y0, y1) × [x0, x1)``."""
        rows = self._axis_range(y0, y1, self.n_rows)
        cols = self._axis_range(x0, x1, self.n_cols)
        return [(r, c) for r in rows for c in cols]

    def block_chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Dask chunk sizes of the ``step × step`` output blocks."""
        return tuple(_split(s, self.step) for s in self.shape)  # type: ignore[return-value]


def _split(size: int, step: int) -> tuple[int, ...]:
    n, rest = divmod(size, step)
    return (step,) * n + ((rest,) if rest else ())


def read_region(image, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Rows [y0, y1) × cols [x0, x1) of a numpy or dask array, in memory.

    Dask windows are computed in the calling thread: callers (the engine's
    loaders, batch workers, a viewer's dask tasks) bring their own
    parallelism, and a nested thread pool would only oversubscribe the CPU.
    """
    window = image[y0:y1, x0:x1]
    if hasattr(window, "compute"):
        window = window.compute(scheduler="sync")
    return np.asarray(window)


def read_tile(image, y0: int, x0: int, tile: int) -> np.ndarray:
    """The ``tile × tile`` window at (y0, x0) of a Y×X×C array, reflect-padded
    where it runs past the bottom or right edge. Works on numpy and dask arrays
    (only the window is read)."""
    h, w = image.shape[:2]
    y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
    return pad_to(read_region(image, y0, y1, x0, x1), tile, tile)


def pad_to(block: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Reflect-pad a Y×X×C block at the bottom and right up to th × tw."""
    ph, pw = th - block.shape[0], tw - block.shape[1]
    if ph == 0 and pw == 0:
        return block
    # reflect needs two samples along an axis; a one-pixel strip repeats.
    mode_y = "reflect" if block.shape[0] > 1 else "edge"
    mode_x = "reflect" if block.shape[1] > 1 else "edge"
    extra = [(0, 0)] * (block.ndim - 2)
    block = np.pad(block, [(0, ph), (0, 0), *extra], mode=mode_y)
    return np.pad(block, [(0, 0), (0, pw), *extra], mode=mode_x)
