"""Where pair generation gets its tiles: folders of tiles, or tissue tiles sampled from slides.

An input path is

- a folder of tile images (PNG, JPEG, TIFF directly inside it): every image is a tile;
- a PNG or JPEG file: one tile;
- anything else (SVS, NDPI, pyramidal TIFF, OME-Zarr, ...): a slide. Tiles of
  ``tile_size``² are laid on a non-overlapping grid of pyramid level
  ``level``; those whose tissue fraction (the slide's low-resolution tissue
  mask) is at least ``min_tissue`` are candidates, and ``tiles_per_slide``
  of them are drawn with the seed.
"""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ParameterError
from .tileio import list_images, read_rgb
from .triplets import mix_seed

TILE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class TileRef:
    """One tile: a stable name and where its pixels come from."""

    name: str
    path: str
    level: int | None = None  # None: the whole image file
    y: int = 0
    x: int = 0
    size: int | None = None

    def read(self) -> np.ndarray:
        if self.level is None:
            return read_rgb(self.path)
        lv = _open_slide(self.path).levels[self.level]
        return np.asarray(lv[self.y : self.y + self.size, self.x : self.x + self.size].compute())

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@lru_cache(maxsize=8)
def _open_slide(path: str):
    # Many tiles come from the same slide: open each one once.
    from ..slide import open_slide

    return open_slide(path)


def _safe(stem: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)


def slide_tiles(
    path,
    tile_size: int,
    count: int,
    *,
    level: int = 0,
    min_tissue: float = 0.5,
    seed: int = 0,
    key: int = 0,
) -> list[TileRef]:
    """Up to ``count`` tissue tiles of a slide (all candidates if fewer), seeded."""
    from ..stain import tissue_mask

    slide = _open_slide(str(path))
    if not 0 <= level < len(slide.levels):
        raise ParameterError(f"{path}: level {level} does not exist (it has {len(slide.levels)})")
    lv = slide.levels[level]
    h, w = lv.shape[:2]
    if h < tile_size or w < tile_size:
        raise ParameterError(
            f"{path}: level {level} is {w}×{h} px, smaller than the tile size {tile_size}"
        )
    mask = tissue_mask(slide)
    dy = slide.levels[0].shape[0] / h
    dx = slide.levels[0].shape[1] / w
    candidates = []
    for y in range(0, h - tile_size + 1, tile_size):
        for x in range(0, w - tile_size + 1, tile_size):
            region = mask.region(
                int(y * dy), int(x * dx), int((y + tile_size) * dy), int((x + tile_size) * dx)
            )
            if region.size and region.mean() >= min_tissue:
                candidates.append((y, x))
    rng = np.random.default_rng(mix_seed(seed, key, 4))
    if len(candidates) > count:
        chosen = sorted(rng.choice(len(candidates), count, replace=False).tolist())
        candidates = [candidates[i] for i in chosen]
    stem = _safe(Path(path).name.split(".")[0])
    return [
        TileRef(f"{stem}_L{level}_y{y}_x{x}", str(path), level, y, x, tile_size)
        for y, x in candidates
    ]


def collect_tiles(
    paths,
    *,
    tile_size: int = 512,
    tiles_per_slide: int = 64,
    level: int = 0,
    min_tissue: float = 0.5,
    seed: int = 0,
    what: str = "source",
) -> list[TileRef]:
    """Tiles of every input path, in input order, with unique names."""
    refs: list[TileRef] = []
    for i, p in enumerate(paths):
        p = Path(p)
        if not p.exists():
            raise ParameterError(f"{what} {p}: does not exist")
        is_tile_folder = p.is_dir() and p.suffix.lower() != ".zarr" and bool(list_images(p))
        if is_tile_folder:
            refs += [TileRef(_safe(f.stem), str(f)) for f in list_images(p)]
        elif p.is_file() and p.suffix.lower() in TILE_SUFFIXES:
            refs.append(TileRef(_safe(p.stem), str(p)))
        else:
            refs += slide_tiles(
                p, tile_size, tiles_per_slide, level=level, min_tissue=min_tissue, seed=seed, key=i
            )
    names = [r.name for r in refs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ParameterError(f"two {what} tiles would both be named {dup!r}; rename one of them")
    if not refs:
        raise ParameterError(f"no {what} tiles found in {', '.join(map(str, paths))}")
    return refs
