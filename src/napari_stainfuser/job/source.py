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
