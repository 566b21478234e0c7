"""What is on screen, computed from the camera: no napari, no Qt.

The visible region comes from the camera's centre and zoom and the canvas
size, never from ``layer.corner_pixels``: since napari 0.7 that is the loaded
box widened to chunk boundaries, and it differs between 2D, 3D and
multiscale layers (napari #8678, #9145, #2487).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class View:
    """A 2D camera: centre (y, x) in world units, zoom in screen px per world unit,
    and the canvas (or grid viewbox) size (height, width) in screen px."""

    center: tuple[float, float]
    zoom: float
    canvas: tuple[float, float]

    def world_box(self) -> tuple[float, float, float, float]:
        """(y0, y1, x0, x1) of the world on screen."""
        cy, cx = self.center
        hh = self.canvas[0] / (2 * self.zoom)
        hw = self.canvas[1] / (2 * self.zoom)
        return cy - hh, cy + hh, cx - hw, cx + hw


@dataclass(frozen=True)
class LevelGeometry:
    """Where a level's pixels lie in the world: level-0 ``scale`` and ``translate``
    (y, x) of the layer, the level's shape and its downsample (y, x) from level 0."""

    scale: tuple[float, float]
    translate: tuple[float, float]
    shape: tuple[int, int]
    downsample: tuple[float, float]

    def box(self, view: View, margin: int = 0) -> tuple[int, int, int, int] | None:
        """The level's pixels on screen (y0, y1, x0, x1), grown by ``margin`` px and
        clipped to the level; None when the level is off screen."""
        wy0, wy1, wx0, wx1 = view.world_box()
        (sy, sx), (ty, tx), (dy, dx) = self.scale, self.translate, self.downsample
        y0 = math.floor((wy0 - ty) / (sy * dy)) - margin
        y1 = math.ceil((wy1 - ty) / (sy * dy)) + margin
        x0 = math.floor((wx0 - tx) / (sx * dx)) - margin
        x1 = math.ceil((wx1 - tx) / (sx * dx)) + margin
        h, w = self.shape
        y0, y1, x0, x1 = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
        if y1 <= y0 or x1 <= x0:
            return None
        return y0, y1, x0, x1


def level_geometries(shapes, scale, translate) -> list[LevelGeometry]:
    """The geometry of every level of a multiscale layer (shapes finest first)."""
    h0, w0 = shapes[0][:2]
    return [
        LevelGeometry(
            tuple(scale), tuple(translate), (int(s[0]), int(s[1])), (h0 / s[0], w0 / s[1])
        )
        for s in shapes
    ]


def index_box(key, shape) -> tuple[tuple[int, int, int, int], tuple]:
    """An array index of a 2D level (slices or integers on y, x, then anything) as the
    box it covers, (y0, y1, x0, x1), and what to index that box's pixels with to get
    what the index asks for (its steps, its integer axes, the trailing axes)."""
    key = key if isinstance(key, tuple) else (key,)
    ys, xs = (list(key) + [slice(None)] * 2)[:2]
    y0, y1, sy = _span(ys, shape[0])
    x0, x1, sx = _span(xs, shape[1])
    pick = (
        slice(None, None, sy) if isinstance(ys, slice) else 0,
        slice(None, None, sx) if isinstance(xs, slice) else 0,
        *key[2:],
    )
    return (y0, y1, x0, x1), pick


def _span(k, n: int) -> tuple[int, int, int]:
    """(start, stop, step) of one axis index (a slice or an integer) of length n."""
    if isinstance(k, slice):
        return k.indices(n)
    i = int(k)
    i = i + n if i < 0 else i
    return i, i + 1, 1
