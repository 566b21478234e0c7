"""napari layers as the library's inputs: a source slide, a target region.

No Qt here: these read layer data and geometry only, so the widget models
and their tests can use them without a window.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ParameterError
from .background import pixels_of
from .viewport import View, level_geometries

# A target larger than this on its longer side is taken at a coarser level.
TARGET_MAX_SIDE = 2048
_UM = ("micrometer", "um", "µm", "micron")


class LayerSlide:
    """A napari image layer's levels as a slide: ``levels`` (finest first) and ``mpp``."""

    def __init__(self, levels, mpp: float | None, name: str):
        self.levels = list(levels)
        self.mpp = mpp
        self.name = name

    def __repr__(self) -> str:
        return f"LayerSlide({self.name!r}, levels={len(self.levels)}, mpp={self.mpp})"


def layer_levels(layer) -> list:
    """The layer's data, finest level first (one level for a plain image): its real
    pixels, never the stand-ins a background-made level shows while it is made."""
    levels = list(layer.data) if layer.multiscale else [layer.data]
    return [pixels_of(level) for level in levels]


def layer_mpp(layer) -> float | None:
    """µm/px of level 0: the reader's record, else the scale when its unit is µm."""
    mpp = (layer.metadata or {}).get("mpp")
    if mpp:
        return float(mpp)
    units = [str(u) for u in getattr(layer, "units", ())][-2:]
    sy, sx = (float(v) for v in layer.scale[-2:])
    if units and all(u in _UM for u in units) and abs(sy - sx) <= 1e-9 * max(sx, 1.0):
        return sx
    return None


def is_rgb_image(layer) -> bool:
    return type(layer).__name__ == "Image" and bool(getattr(layer, "rgb", False))


def layer_slide(layer):
    """What a job takes as its slide for ``layer``: the file the reader opened it from,
    else its levels (and µm/px)."""
    if not is_rgb_image(layer):
        raise ParameterError(f"source: layer {layer.name!r} is not an RGB image")
    path = (layer.metadata or {}).get("path")
    if path and Path(path).exists() and (layer.metadata or {}).get("format") != "synthetic":
        return str(path)
    levels = [lv[..., :3] if lv.shape[-1] == 4 else lv for lv in layer_levels(layer)]
    if np.dtype(levels[0].dtype) != np.uint8:
        raise ParameterError(f"source: layer {layer.name!r} is {levels[0].dtype}, not 8-bit RGB")
    if len(levels) == 1:
        return levels[0]
    return LayerSlide(levels, layer_mpp(layer), layer.name)


def _read(level, y0, y1, x0, x1) -> np.ndarray:
    part = level[y0:y1, x0:x1]
    part = part.compute() if hasattr(part, "compute") else part
    return np.ascontiguousarray(np.asarray(part)[..., :3])


def _level_for(shapes, box_px0: tuple[int, int]) -> int:
    """The finest level where a level-0 box of box_px0 (h, w) is at most TARGET_MAX_SIDE."""
    h0 = shapes[0][0]
    for k, s in enumerate(shapes):
        f = h0 / s[0]
        if max(box_px0) / f <= TARGET_MAX_SIDE:
            return k
    return len(shapes) - 1


def region_pixels(layer, world_box) -> np.ndarray:
    """The RGB pixels of ``layer`` under a world box (y0, y1, x0, x1), at the finest
    level that keeps it within TARGET_MAX_SIDE px."""
    levels = layer_levels(layer)
    shapes = [lv.shape for lv in levels]
    geoms = level_geometries(shapes, layer.scale[-2:], layer.translate[-2:])
    sy, sx = geoms[0].scale
    wy0, wy1, wx0, wx1 = world_box
    box0 = ((wy1 - wy0) / sy, (wx1 - wx0) / sx)
    k = _level_for(shapes, box0)
    g = geoms[k]
    view = View(((wy0 + wy1) / 2, (wx0 + wx1) / 2), 1.0, (wy1 - wy0, wx1 - wx0))
    box = g.box(view)
    if box is None:
        raise ParameterError(f"target: the region lies outside layer {layer.name!r}")
    return _read(levels[k], *box)


def visible_pixels(layer, view: View) -> np.ndarray:
    """The RGB pixels of ``layer`` on screen (or all of it, if it is small)."""
    levels = layer_levels(layer)
    h, w = levels[0].shape[:2]
    if max(h, w) <= TARGET_MAX_SIDE:
        return _read(levels[0], 0, h, 0, w)
    return region_pixels(layer, view.world_box())


def rectangle_box(shapes_layer) -> tuple[float, float, float, float]:
    """The world box (y0, y1, x0, x1) of the selected rectangle of a Shapes layer
    (else its last rectangle)."""
    kinds = list(shapes_layer.shape_type)
    picks = [i for i in sorted(shapes_layer.selected_data) if kinds[i] == "rectangle"]
    if not picks:
        picks = [i for i, k in enumerate(kinds) if k == "rectangle"][-1:]
    if not picks:
        raise ParameterError(
            f"target: shapes layer {shapes_layer.name!r} has no rectangle; draw one over the "
            "region to use"
        )
    verts = np.asarray(shapes_layer.data[picks[0]])[:, -2:]
    world = np.asarray(
        [shapes_layer.data_to_world(np.r_[np.zeros(shapes_layer.ndim - 2), v])[-2:] for v in verts]
    )
    (y0, x0), (y1, x1) = world.min(0), world.max(0)
    return float(y0), float(y1), float(x0), float(x1)
