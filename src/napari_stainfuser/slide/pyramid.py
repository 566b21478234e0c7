"""Lazy 2x area-averaged pyramids, built chunk by chunk with dask.

Used by the reader (files without a pyramid) and by the writers (lower levels
of an output pyramid), so both produce the same pixels.

Each lower level is one graph layer with one task per output chunk; the task
reads the parent chunks under it (2×2 of them when chunks are uniform) and
halves their concatenation. Output chunks therefore keep the parent's chunk
size and stay aligned with it level after level, without the per-level
halve-then-rechunk pair of layers that made opening a 100,000² slide take
seconds.
"""

import itertools
import math
from bisect import bisect_left, bisect_right

import dask.array as da
import numpy as np
from dask._task_spec import Task, TaskRef
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, Layer, MaterializedLayer

MIN_LEVEL_SIZE = 1024


HOW = ("mean", "max")


def _halve_block(block: np.ndarray, how: str = "mean") -> np.ndarray:
    """2×2 mean (or maximum) of a block; an odd last row/column is dropped.

    uint8 means round half up; float means are exact; "max" keeps any
    positive label of the four (a cell mask stays visible zoomed out).
    """
    b = block[: block.shape[0] // 2 * 2, : block.shape[1] // 2 * 2]
    if how == "max":
        return np.maximum(
            np.maximum(b[0::2, 0::2], b[0::2, 1::2]), np.maximum(b[1::2, 0::2], b[1::2, 1::2])
        )
    if b.dtype != np.uint8:
        s = b[0::2] + b[1::2]
        return ((s[:, 0::2] + s[:, 1::2]) * 0.25).astype(b.dtype)
    # Row pairs first: both reads are whole contiguous rows, so only the second add strides,
    # ~4x faster than summing four doubly strided views. A uint16 sum of four uint8 values
    # cannot overflow; +2 then >>2 is (s + 2) // 4, rounding half up.
    s = b[0::2].astype(np.uint16)
    s += b[1::2]
    s = s[:, 0::2] + s[:, 1::2]
    s += 2
    s >>= 2
    return s.astype(np.uint8)


def _halve_parents(how: str, cols: int, y0: int, ny: int, x0: int, nx: int, *blocks: np.ndarray):
    """Halve rows [y0, y0 + 2·ny) × cols [x0, x0 + 2·nx) of a row-major grid of parent blocks."""
    if len(blocks) == 1:
        grid = blocks[0]
    else:
        rows = [blocks[r : r + cols] for r in range(0, len(blocks), cols)]
        grid = np.concatenate([np.concatenate(r, axis=1) if len(r) > 1 else r[0] for r in rows])
    return _halve_block(grid[y0 : y0 + 2 * ny, x0 : x0 + 2 * nx], how)


def _plan_axis(chunks: tuple[int, ...], target: int) -> list[tuple[int, int, int, int]]:
    """Output chunks along one axis as (size, first parent block, last parent block + 1, offset).

    Output boundaries are halved parent boundaries, the fewest that make each
    chunk at least `target` long (the last one may be shorter), so uniform
    parent chunks T with target T pair up: output chunk i covers parent
    blocks 2i and 2i+1 exactly. A parent chunk much longer than `target` (a
    TIFF strip as wide as the slide) is cut into `target`-long pieces that
    each read it whole. `offset` is where the output's first parent row lies
    inside its first parent block: 0 unless a boundary is odd.
    """
    bounds = list(itertools.accumulate(chunks, initial=0))
    n_out = bounds[-1] // 2
    cuts = [0]
    for p in bounds[1:]:
        half = p // 2
        while half - cuts[-1] >= 2 * target:
            cuts.append(cuts[-1] + target)
        if half - cuts[-1] >= target:
            cuts.append(half)
    if n_out > cuts[-1]:
        cuts.append(n_out)
    plan = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        # Parent blocks overlapping parent rows [2a, 2b).
        first = bisect_right(bounds, 2 * a) - 1
        stop = bisect_left(bounds, 2 * b)
        plan.append((b - a, first, stop, 2 * a - bounds[first]))
    return plan


class _HalvingLayer(Layer):
    """The graph layer of one lower level: one task per output chunk, generated on demand.

    A plain dict of tasks costs ~15 µs a chunk to build and is copied whole on
    every `compute` when dask culls it; on a 100,000² slide that is a second
    to open and ~0.07 s per region read. Tasks are therefore made only for the
    keys a computation asks for, and culling touches only those.
    """

    def __init__(
        self, name: str, parent: str, plan_y: list, plan_x: list, rest: tuple[int, ...], how: str
    ):
        super().__init__()
        self.name, self.parent, self.how = name, parent, how
        self.plan_y, self.plan_x, self.rest = plan_y, plan_x, rest
        self.numblocks = (len(plan_y), len(plan_x), *rest)

    @property
    def has_legacy_tasks(self) -> bool:
        return False

    def is_materialized(self) -> bool:
        return False

    def get_output_keys(self):
        return self.keys()

    def __contains__(self, key) -> bool:
        return (
            type(key) is tuple
            and len(key) == len(self.numblocks) + 1
            and key[0] == self.name
            and all(
                isinstance(i, (int, np.integer)) and 0 <= i < n
                for i, n in zip(key[1:], self.numblocks, strict=True)
            )
        )

    def __getitem__(self, key) -> Task:
        if key not in self:
            raise KeyError(key)
        _, i, j, *r = key
        ny, ya, yb, y0 = self.plan_y[i]
        nx, xa, xb, x0 = self.plan_x[j]
        refs = [TaskRef((self.parent, p, q, *r)) for p in range(ya, yb) for q in range(xa, xb)]
        return Task(key, _halve_parents, self.how, xb - xa, y0, ny, x0, nx, *refs)

    def __iter__(self):
        for idx in itertools.product(*(range(n) for n in self.numblocks)):
            yield (self.name, *idx)

    def __len__(self) -> int:
        return math.prod(self.numblocks)

    def get_dependencies(self, key, all_hlg_keys) -> set:
        return set(self[key].dependencies)

    def cull(self, keys, all_hlg_keys):
        tasks = {k: self[k] for k in keys if k in self}
        deps = {k: set(t.dependencies) for k, t in tasks.items()}
        return MaterializedLayer(tasks, annotations=self.annotations), deps


def downsample2x(level: da.Array, target_chunk: int | None = None, how: str = "mean") -> da.Array:
    """Halve a Y×X[×C] dask array by 2×2 area averaging (odd edges trimmed).

    how: "mean" (images; uint8 rounds half up) or "max" (label images).

    Output chunks are aligned with input chunks: each is the halved union of
    the fewest whole parent chunks that make it at least `target_chunk` long
    (default: the input's first chunk size per axis; see `_plan_axis`), so
    uniform chunks keep their size level after level. Trailing axes (colour)
    keep their chunks. Computing one output chunk reads only the parent
    chunks under it, and the level adds one graph layer of one task per chunk.
    """
    if level.ndim < 2 or level.shape[0] // 2 == 0 or level.shape[1] // 2 == 0:
        raise ValueError(f"cannot downsample an image of shape {level.shape}")
    ty = target_chunk or level.chunks[0][0]
    tx = target_chunk or level.chunks[1][0]
    plan_y = _plan_axis(level.chunks[0], ty)
    plan_x = _plan_axis(level.chunks[1], tx)
    if how not in HOW:
        raise ValueError(f"downsampling {how!r} is not one of {HOW}")
    name = "downsample2x-" + tokenize(level.name, ty, tx, how)
    rest = tuple(len(c) for c in level.chunks[2:])
    layer = _HalvingLayer(name, level.name, plan_y, plan_x, rest, how)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[level])
    chunks = (
        tuple(p[0] for p in plan_y),
        tuple(p[0] for p in plan_x),
        *level.chunks[2:],
    )
    return da.Array(graph, name, chunks, meta=np.empty((0,) * level.ndim, dtype=level.dtype))


def level_shapes(shape, min_size: int = MIN_LEVEL_SIZE) -> list[tuple[int, int]]:
    """(Y, X) of every pyramid level: halve (rounding down) while the longest side
    exceeds `min_size`. The one rule shared by readers, writers and synthetic slides."""
    shapes = [(int(shape[0]), int(shape[1]))]
    while max(shapes[-1]) > min_size and min(shapes[-1]) >= 2:
        h, w = shapes[-1]
        shapes.append((h // 2, w // 2))
    return shapes


def build_pyramid(level0: da.Array, min_size: int = MIN_LEVEL_SIZE) -> list[da.Array]:
    """Level 0 plus lazy 2× levels until the longest side is at most `min_size`."""
    levels = [level0]
    for _ in level_shapes(level0.shape, min_size)[1:]:
        levels.append(downsample2x(levels[-1], target_chunk=level0.chunks[0][0]))
    return levels
