"""The input of a batch run: a slide path, an opened slide or a bare array.

Everything a run needs from its input in one place: the pyramid levels, the
µm/px of each, a cheap identity for resume fingerprints, and a picklable way
for a dask worker to get at the same pixels (reopening a file by path rather
than shipping a file handle).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ParameterError
from ..fingerprint import array_digest, file_digest
from ..slide.pyramid import build_pyramid


@dataclass
class SlideSource:
    """Levels (Y×X×3 uint8, finest first), level-0 µm/px, and where they came from."""

    levels: list
    mpp: float | None
    path: str | None = None

    def level_mpp(self, k: int) -> float | None:
        if not self.mpp:
            return None
        return float(self.mpp) * self.levels[0].shape[1] / self.levels[k].shape[1]

    def check_level(self, k) -> int:
        if isinstance(k, bool) or int(k) != k or not 0 <= int(k) < len(self.levels):
            raise ParameterError(
                f"level: {k!r} is not a level of this slide (it has levels 0-{len(self.levels) - 1})"
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

    def level_ref(self, k: int):
        """A picklable callable returning level ``k`` in another process."""
        if self.path:
            return _ReopenLevel(self.path, k)
        return _GivenLevel(self.levels[k])


@dataclass
class _ReopenLevel:
    path: str
    level: int

    def __call__(self):
        from ..slide import open_slide

        return open_slide(self.path).levels[self.level]


@dataclass
class _GivenLevel:
    array: object

    def __call__(self):
        return self.array


def open_source(slide, mpp: float | None = None) -> SlideSource:
    """A :class:`SlideSource` from a path, an object with ``.levels`` or a Y×X×3 array.

    ``mpp`` overrides (or supplies) the level-0 µm/px.
    """
    if isinstance(slide, SlideSource):
        src = slide
    elif isinstance(slide, (str, Path)):
        from ..slide import open_slide

        s = open_slide(slide)
        src = SlideSource(list(s.levels), getattr(s, "mpp", None), str(Path(slide).absolute()))
    elif hasattr(slide, "levels"):
        path = getattr(slide, "path", None)
        src = SlideSource(
            list(slide.levels), getattr(slide, "mpp", None), str(path) if path else None
        )
    elif hasattr(slide, "shape") and len(slide.shape) == 3 and slide.shape[2] == 3:
        if np.dtype(slide.dtype) != np.uint8:
            raise ParameterError(f"slide: expected uint8 RGB, got dtype {slide.dtype}")
        src = SlideSource(build_pyramid(_as_dask(slide)), None, None)
    else:
        raise ParameterError(
            f"slide: expected a path, a Slide or a Y×X×3 uint8 array, got {type(slide).__name__}"
        )
    if mpp is not None:
        if not np.isfinite(float(mpp)) or float(mpp) <= 0:
            raise ParameterError(f"mpp: expected a positive number of µm per pixel, got {mpp!r}")
        src = SlideSource(src.levels, float(mpp), src.path)
    return src


def _as_dask(a):
    import dask.array as da

    if isinstance(a, da.Array):
        return a
    return da.from_array(np.asarray(a), chunks=(512, 512, 3))
