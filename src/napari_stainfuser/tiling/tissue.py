"""Applying a slide's tissue mask per pixel, at any pyramid level.

The mask is detected once per slide on a fixed low-resolution overview
(:func:`napari_stainfuser.stain.tissue.tissue_mask`). Here it is prepared for
use as a switch between stained and original pixels: holes inside tissue are
filled (a lumen in the middle of a gland is stained like its surroundings
rather than left as a raw patch) and the mask is grown by a margin so that
the boundary of the tissue is never cut. A pixel at (y, x) of a level of
shape (H, W) reads mask pixel ``(floor((y + 0.5) * h / H), floor((x + 0.5) * w / W))``:
the value depends only on the pixel's coordinates, never on which tile or
chunk asked, so the output does not depend on the tile size.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import ParameterError


class TissueSwitch:
    """Where to use the stainer's output (tissue) and where the input (glass).

    ``mask`` is the slide-overview mask (h×w bool) covering the whole slide.
    """

    def __init__(self, mask, grow: int = 1, fill_holes: bool = True):
        m = np.asarray(getattr(mask, "mask", mask), dtype=bool)
        if m.ndim != 2 or m.size == 0:
            raise ParameterError(f"tissue mask: expected a non-empty 2-D mask, got shape {m.shape}")
        if fill_holes and m.any():
            m = ndimage.binary_fill_holes(m)
        if grow > 0 and m.any():
            m = ndimage.binary_dilation(m, structure=np.ones((2 * grow + 1,) * 2, bool))
        self.mask = m
        # Summed-area table: "any tissue in this box?" in O(1).
        self._sat = np.pad(m.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    @property
    def fraction(self) -> float:
        return float(self.mask.mean())

    def _rows(self, a0: int, a1: int, size: int, m: int) -> np.ndarray:
        idx = ((np.arange(a0, a1, dtype=np.float64) + 0.5) * m / size).astype(np.intp)
        return np.minimum(idx, m - 1)

    def region(self, shape, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Per-pixel mask of rows [y0, y1) × cols [x0, x1) of a level of ``shape``."""
        mh, mw = self.mask.shape
        rows = self._rows(y0, y1, shape[0], mh)
        cols = self._rows(x0, x1, shape[1], mw)
        return self.mask[rows[:, None], cols[None, :]]

    def any_in(self, shape, y0: int, y1: int, x0: int, x1: int) -> bool:
        """True if any pixel of the box (clipped to the level) is tissue."""
        y0, x0 = max(0, y0), max(0, x0)
        y1, x1 = min(shape[0], y1), min(shape[1], x1)
        if y1 <= y0 or x1 <= x0:
            return False
        mh, mw = self.mask.shape
        r0, r1 = (
            self._rows(y0, y0 + 1, shape[0], mh)[0],
            self._rows(y1 - 1, y1, shape[0], mh)[0] + 1,
        )
        c0, c1 = (
            self._rows(x0, x0 + 1, shape[1], mw)[0],
            self._rows(x1 - 1, x1, shape[1], mw)[0] + 1,
        )
        s = self._sat
        return bool(s[r1, c1] - s[r0, c1] - s[r1, c0] + s[r0, c0] > 0)


def detect_tissue(slide, **kw) -> TissueSwitch:
    """Detect tissue once on the slide's low-resolution overview and prepare it."""
    from ..stain.tissue import tissue_mask

    grow = kw.pop("grow", 1)
    fill = kw.pop("fill_holes", True)
    return TissueSwitch(tissue_mask(slide, **kw), grow=grow, fill_holes=fill)
