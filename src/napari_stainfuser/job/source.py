"""The input of a job: a slide path, an opened slide or a bare array.

Everything a job needs from its input in one place: the pyramid levels, the
µm/px of each, a cheap identity for resume fingerprints, and how to read a
region of a level. For levels stored as TIFF tiles the region is decoded by
:meth:`Slide.read_region` (tiles straight from the file, in a thread pool);
other levels (OME-Zarr, lazily built levels, arrays) are computed through
dask in the calling thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ParameterError, opt
from ..fingerprint import array_digest, file_digest


@dataclass
class SlideSource:
    """Levels (Y×X×3 uint8, finest first), level-0 µm/px, and where they came from."""

    levels: list
    mpp: float | None
    path: str | None = None
    slide: object = None  # the opened Slide, when there is one

    def level_mpp(self, k: int) -> float | None:
        if not self.mpp:
            return None
        return float(self.mpp) * self.levels[0].shape[1] / self.levels[k].shape[1]

    def check_level(self, k) -> int:
        if isinstance(k, bool) or int(k) != k or not 0 <= int(k) < len(self.levels):
            raise ParameterError(
                f"{opt('level')}: {k!r} is not a level of this slide "
                f"(it has levels 0-{len(self.levels) - 1})"
            )
        return int(k)

    def identity(self) -> dict:
        """What identifies the input pixels, cheaply (no full read)."""
        if self.path:
            p = Path(self.path)
            ident = {"path": str(p)}
            if p.is_file():
                ident["digest"] = file_digest(p)
            return ident
        lv = self.levels[0]
        if hasattr(lv, "dask"):
            return {"dask": lv.name, "shape": list(lv.shape)}
        return {"array": array_digest(np.asarray(lv))}

    def reader(self, k: int):
        """Level ``k`` as an array whose ``[y0:y1, x0:x1]`` returns numpy pixels."""
        tiles = getattr(self.slide, "_tiles", ())
        if k < len(tiles):
            return TiledLevel(self.slide, k)
        return self.levels[k]

    @property
    def native_levels(self) -> int:
        """How many levels (finest first) are stored; the rest are built from the last of them."""
        n = getattr(self.slide, "native_levels", None)
        if n is None:
            n = _leading_native(self.levels) if self.path is None else 1
        return max(1, min(int(n), len(self.levels)))

    def is_empty(self, k: int, y0: int, y1: int, x0: int, x1: int) -> bool:
        """True if the region of level ``k`` is known to be empty without reading it."""
        tiles = getattr(self.slide, "_tiles", ())
        return k < len(tiles) and tiles[k].is_empty(y0, y1, x0, x1)

    def overview(self, max_side: int, progress=None) -> tuple[np.ndarray, int]:
        """(the finest level whose longest side is at most ``max_side``, in memory; its index).

        A level the file does not store (a slide without a pyramid) is made
        from the coarsest stored level in strips: each strip is read, halved
        as the lazy levels halve (the same pixels), and dropped, so memory is
        one strip whatever the slide's size; empty strips are not read at
        all; ``progress`` gets a Progress("overview", rows done, rows) after
        each strip.
        """
        from ..progress import Tracker
        from ..slide.pyramid import _halve_block
        from ..tiling.grid import read_region

        levels = self.levels
        idx = next(
            (i for i, lv in enumerate(levels) if max(lv.shape[:2]) <= max_side), len(levels) - 1
        )
        base = self.native_levels - 1
        if idx <= base:
            lv = self.reader(idx)
            h, w = lv.shape[:2]
            image = read_region(lv, 0, h, 0, w)
        else:
            m = idx - base
            src = self.reader(base)
            h, w = src.shape[:2]
            # Strips of whole 2**m-row bands, about 64 MB each.
            band = 2**m
            rows = max(band, (64 * 2**20 // max(1, 3 * w)) // band * band)
            tracker = Tracker("overview", h, 0, progress)
            out_h, out_w = levels[idx].shape[:2]
            image = np.empty((out_h, out_w, 3), np.uint8)
            for y0 in range(0, out_h * band, rows):
                y1 = min(y0 + rows, h)
                n = (y1 - y0) // band
                if self.is_empty(base, y0, y1, 0, w):
                    image[y0 // band : y0 // band + n] = 255
                else:
                    block = read_region(src, y0, y1, 0, w)
                    for _ in range(m):
                        block = _halve_block(block)
                    image[y0 // band : y0 // band + n] = block[:n, :out_w]
                tracker.add(y1 - y0)
            tracker.add(h - tracker.done)  # the odd rows at the edge the halving drops
        step = max(1, int(np.ceil(max(image.shape[:2]) / max_side)))
        if step > 1:  # even the coarsest level is larger: a regular subsample
            image = np.ascontiguousarray(image[::step, ::step])
        return image, idx


class TiledLevel:
    """A TIFF-tiled slide level read through :meth:`Slide.read_region`.

    Only plain 2-D slices are supported: it is what the tiler asks for. It
    pickles as the slide (which pickles small: its tile sources reopen the
    file by path).
    """

    def __init__(self, slide, level: int):
        self.slide = slide
        self.level = level
        self.shape = tuple(slide.levels[level].shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __getitem__(self, key) -> np.ndarray:
        ys, xs = key[:2]
        h, w = self.shape[:2]
        y0, y1, _ = ys.indices(h)
        x0, x1, _ = xs.indices(w)
        return self.slide.read_region(
            y=y0, x=x0, height=max(0, y1 - y0), width=max(0, x1 - x0), level=self.level
        )


def _leading_native(levels) -> int:
    """Levels before the first lazy 2× downsample: the ones that are not built
    from another (a synthetic pyramid renders its finer levels directly)."""
    for k, lv in enumerate(levels[1:], start=1):
        if "downsample2x" in getattr(lv, "name", ""):
            return k
    return len(levels)


def open_source(slide, mpp: float | None = None) -> SlideSource:
    """A :class:`SlideSource` from a path, an object with ``.levels`` or a Y×X×3 array.

    ``mpp`` overrides (or supplies) the level-0 µm/px.
    """
    from ..slide.pyramid import build_pyramid

    if isinstance(slide, SlideSource):
        src = slide
    elif isinstance(slide, (str, Path)):
        from ..slide import open_slide

        s = open_slide(slide)
        src = SlideSource(list(s.levels), s.mpp, str(Path(slide).absolute()), s)
    elif hasattr(slide, "levels"):
        path = getattr(slide, "path", None)
        src = SlideSource(
            list(slide.levels), getattr(slide, "mpp", None), str(path) if path else None,
            slide if hasattr(slide, "read_region") else None,
        )  # fmt: skip
    else:
        src = SlideSource(build_pyramid(_as_dask(slide)), None, None)
    if mpp is not None:
        src = SlideSource(src.levels, float(mpp), src.path, src.slide)
    return src


def _as_dask(a):
    import dask.array as da

    if isinstance(a, da.Array):
        return a
    return da.from_array(np.asarray(a), chunks=(512, 512, 3))
