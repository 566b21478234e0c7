"""Units of work of a whole-slide run, the same in every process that runs them.

A run is cut into small, independent, deterministic units so that any
process can execute any unit, in any order, any number of times, and the
output is the same:

- ``direct`` (per-pixel stainers at native resolution, tiles aligned with the
  output chunks): a group of tiles is stained and each tile is written as one
  output chunk;
- ``stain`` (everything else, phase 1): a group of tissue tiles is stained as
  one batch and each stained tile is committed to the on-disk tile cache;
- ``blend`` (phase 2): a group of output chunks is assembled from the cached
  tiles (blending, resampling back, tissue switch) and written.

A stainer's extra outputs (a cell mask, an uncertainty map) go the same way
as the image: cached per tile, blended with the same windows, resampled back
and switched off on glass; a mask is thresholded at one half only after
blending. They are written before the image chunk, so an image chunk on disk
means its extras are complete.

Groups are fixed by the plan (raster order, ``batch_size`` tiles), so a
model always sees the same batches whether the run is resumed, distributed
or neither. A chunk or tile file that exists is complete (zarr writes under a
temporary name and renames), which is how a resumed run knows what is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine.worker import stain_batch

# Output chunks per blend unit: neighbours along a row share tiles.
BLEND_GROUP = 4
# Output chunk (and OME-TIFF tile) edge when it cannot simply be the stainer's tile.
OUTPUT_TILE = 512


def is_direct(plan) -> bool:
    """Whether tiles can be written straight as output chunks (no cache, no blending)."""
    return plan.per_pixel and plan.factor == 1.0 and plan.tile % 16 == 0


def output_tile(plan) -> int:
    return plan.tile if is_direct(plan) else OUTPUT_TILE


@dataclass
class Loaded:
    """The tiles of a unit that go to the stainer, and the inputs a commit reuses."""

    tiles: list[tuple[int, int]]
    items: list[tuple[np.ndarray, np.ndarray | None]] = field(default_factory=list)

    def inputs(self) -> dict[tuple[int, int], np.ndarray]:
        return {rc: x for rc, (x, _) in zip(self.tiles, self.items, strict=True)}


class Units:
    """The units of one opened job, writing to its pyramid and tile cache."""

    def __init__(self, job, pyramid, cache):
        self.job = job
        self.plan = job.plan
        self.stainer = job.stainer
        self.pyramid = pyramid
        self.cache = cache
        self.direct = is_direct(self.plan)
        self.extras = {e.name: e.kind for e in job.spec.extras}

    # -- what is done --------------------------------------------------------------

    def chunk_done(self, i: int, j: int) -> bool:
        arr = self.pyramid.levels[0]
        key = arr.metadata.encode_chunk_key((0, i, j))
        return (Path(self.pyramid.path) / "0" / key).is_file()

    def group_done(self, kind: str, items) -> bool:
        if kind == "stain":
            return all(self.cache.has(*rc) for rc in items)
        return all(self.chunk_done(*ij) for ij in items)

    # -- the two halves of a staining unit: load, then commit what came back --------

    def load(self, kind: str, tiles: list[tuple[int, int]]) -> Loaded:
        if kind == "direct":
            todo = [rc for rc in tiles if not self.chunk_done(*rc)]
            tiles = [rc for rc in todo if self.plan.has_tissue(*rc)]
        elif self.group_done(kind, tiles):
            tiles = []
        # A partly cached group is stained whole again: the model must see the
        # same batch as an uninterrupted run would have.
        return Loaded(tiles, [self.plan.load(r, c) for r, c in tiles])

    def commit(self, kind: str, group: list[tuple[int, int]], loaded: Loaded, outputs) -> int:
        stained = dict(zip(loaded.tiles, outputs, strict=True))
        if kind == "stain":
            for rc, out in stained.items():
                if not self.cache.has(*rc):
                    self.cache.write(*rc, out.tile, out.extras)
            return len(group)
        inputs = loaded.inputs()
        h, w = self.plan.shape
        t = self.plan.tile
        for r, c in group:
            if self.chunk_done(r, c):
                continue
            y0, x0 = r * t, c * t
            y1, x1 = min(y0 + t, h), min(x0 + t, w)
            # Keep the pixels already read: the tissue switch needs them.
            original = inputs[r, c][: y1 - y0, : x1 - x0] if (r, c) in inputs else None
            image = self.plan.assemble(
                y0, y1, x0, x1, lambda rr, cc: stained[rr, cc].tile, original
            )
            extras = {
                n: self.plan.assemble_extra(
                    y0, y1, x0, x1, lambda rr, cc, n=n: stained[rr, cc].extras[n]
                )
                for n in self.extras
            }
            self.pyramid.write_region(image, y0, x0, self._finish(extras))
        return len(group)

    def blend(self, chunks: list[tuple[int, int]]) -> int:
        """Assemble a group of output chunks from the tile cache and write them."""
        tile_lru: dict[tuple[int, int], np.ndarray] = {}
        extra_lru: dict[tuple[int, int], dict] = {}

        def get(r, c):
            hit = tile_lru.get((r, c))
            if hit is None:
                hit = self.cache.read(r, c)
                if hit is None:
                    raise RuntimeError(f"tile ({r}, {c}) missing from the tile cache")
                tile_lru[r, c] = hit
            return hit

        def get_extra(name, r, c):
            if (r, c) not in extra_lru:
                extra_lru[r, c] = self.cache.read_extras(r, c)
            return extra_lru[r, c][name]

        ct = self.pyramid.tile
        h, w = self.plan.shape
        for i, j in chunks:
            if self.chunk_done(i, j):
                continue
            y0, x0 = i * ct, j * ct
            y1, x1 = min(y0 + ct, h), min(x0 + ct, w)
            image = self.plan.assemble(y0, y1, x0, x1, get)
            extras = {
                n: self.plan.assemble_extra(y0, y1, x0, x1, lambda r, c, n=n: get_extra(n, r, c))
                for n in self.extras
            }
            self.pyramid.write_region(image, y0, x0, self._finish(extras))
        return len(chunks)

    def _finish(self, extras: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Blended extras as written: masks thresholded at one half, maps as float32."""
        return {
            n: (v >= 0.5).astype(np.uint8) if self.extras[n] == "labels" else v.astype(np.float32)
            for n, v in extras.items()
        }

    # -- one unit start to end, in the calling thread (a dask task) -----------------

    def run(self, kind: str, items: list[tuple[int, int]]) -> int:
        if kind == "blend":
            return self.blend(items)
        loaded = self.load(kind, items)
        outputs = []
        if loaded.tiles:
            outputs = stain_batch(
                self.stainer, [x for x, _ in loaded.items], [n for _, n in loaded.items]
            )
        return self.commit(kind, items, loaded, outputs)


def groups(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def output_chunks(shape: tuple[int, int], tile: int) -> list[tuple[int, int]]:
    ny, nx = -(-shape[0] // tile), -(-shape[1] // tile)
    return [(i, j) for i in range(ny) for j in range(nx)]


def blend_groups(shape: tuple[int, int], tile: int) -> list[list[tuple[int, int]]]:
    """Output chunks in rows of up to BLEND_GROUP neighbours."""
    ny, nx = -(-shape[0] // tile), -(-shape[1] // tile)
    out = []
    for i in range(ny):
        for j0 in range(0, nx, BLEND_GROUP):
            out.append([(i, j) for j in range(j0, min(j0 + BLEND_GROUP, nx))])
    return out
