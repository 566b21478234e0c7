"""Units of work of a batch run, and what a process needs to execute them.

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
from ..slide.writer import ZarrPyramid
from ..stainers import warm_up
from ..tiling.plan import TilePlan
from ..tiling.store import TileCache
from ..tiling.tissue import TissueSwitch

# Output chunks per blend unit: neighbours along a row share tiles.
BLEND_GROUP = 4


@dataclass
class RunContext:
    """Picklable description of a run; :meth:`open` builds the live objects."""

    level: object  # callable returning the level array (see SlideSource.level_ref)
    level_mpp: float | None
    factory: object  # callable returning the stainer
    tile: int | None
    overlap: int | None
    seed: int
    noise: str
    window: str
    tissue: TissueSwitch | None
    pyramid_path: str
    cache_path: str | None
    cache_fingerprint: dict = field(default_factory=dict)

    def open(self) -> OpenRun:
        stainer = self.factory()
        warm_up(stainer)
        plan = TilePlan(
            self.level(), stainer.spec, tile=self.tile, overlap=self.overlap, mpp=self.level_mpp,
            tissue=self.tissue, seed=self.seed, noise=self.noise, window=self.window,
        )  # fmt: skip
        pyramid = ZarrPyramid.open(self.pyramid_path)
        cache = None
        if self.cache_path is not None:
            g = plan.grid
            cache = TileCache.open(
                self.cache_path, g.n_rows, g.n_cols, g.tile, self.cache_fingerprint
            )
        return OpenRun(stainer, plan, pyramid, cache)


@dataclass
class OpenRun:
    stainer: object
    plan: TilePlan
    pyramid: ZarrPyramid
    cache: TileCache | None

    # -- what is done --------------------------------------------------------------

    def chunk_done(self, i: int, j: int) -> bool:
        arr = self.pyramid.levels[0]
        key = arr.metadata.encode_chunk_key((0, i, j))
        return (Path(self.pyramid.path) / "0" / key).is_file()

    # -- units --------------------------------------------------------------------------

    def _stain(self, tiles, loaded=None) -> dict[tuple[int, int], np.ndarray]:
        if not tiles:
            return {}
        loaded = loaded or [self.plan.load(r, c) for r, c in tiles]
        outs = stain_batch(self.stainer, [x for x, _ in loaded], [n for _, n in loaded])
        return {rc: o.tile for rc, o in zip(tiles, outs, strict=True)}

    def run_direct(self, tiles: list[tuple[int, int]]) -> int:
        """Stain a group of tiles and write each as its output chunk."""
        todo = [rc for rc in tiles if not self.chunk_done(*rc)]
        tissue = [rc for rc in todo if self.plan.has_tissue(*rc)]
        loaded = [self.plan.load(r, c) for r, c in tissue]
        inputs = {rc: x for rc, (x, _) in zip(tissue, loaded, strict=True)}
        stained = self._stain(tissue, loaded)
        h, w = self.plan.shape
        t = self.plan.tile
        for r, c in todo:
            y0, x0 = r * t, c * t
            y1, x1 = min(y0 + t, h), min(x0 + t, w)
            # Keep the pixels already read: the tissue switch needs them.
            original = inputs[r, c][: y1 - y0, : x1 - x0] if (r, c) in inputs else None
            out = self.plan.assemble(y0, y1, x0, x1, lambda rr, cc: stained[rr, cc], original)
            self.pyramid.write_region(out, y0, x0)
        return len(tiles)

    def run_stain(self, tiles: list[tuple[int, int]]) -> int:
        """Stain a group of tissue tiles as one batch into the tile cache."""
        if all(self.cache.has(*rc) for rc in tiles):
            return len(tiles)
        # The whole group again, even if part of it is cached: the model must
        # see the same batch as an uninterrupted run would have.
        for rc, tile in self._stain(tiles).items():
            if not self.cache.has(*rc):
                self.cache.write(*rc, tile)
        return len(tiles)

    def run_blend(self, chunks: list[tuple[int, int]]) -> int:
        """Assemble a group of output chunks from the tile cache and write them."""
        tile_lru: dict[tuple[int, int], np.ndarray] = {}

        def get(r, c):
            hit = tile_lru.get((r, c))
            if hit is None:
                hit = self.cache.read(r, c)
                if hit is None:
                    raise RuntimeError(f"tile ({r}, {c}) missing from the tile cache")
                tile_lru[r, c] = hit
            return hit

        ct = self.pyramid.tile
        h, w = self.plan.shape
        for i, j in chunks:
            if self.chunk_done(i, j):
                continue
            y0, x0 = i * ct, j * ct
            out = self.plan.assemble(y0, min(y0 + ct, h), x0, min(x0 + ct, w), get)
            self.pyramid.write_region(out, y0, x0)
        return len(chunks)


UNITS = {
    "direct": OpenRun.run_direct,
    "stain": OpenRun.run_stain,
    "blend": OpenRun.run_blend,
}


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
