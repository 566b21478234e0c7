"""The tiler: tile grids with overlap, blending windows that sum to one, the
consistent noise field, tissue switching, resampling to a stainer's working
resolution, and lazy stained pyramids backed by an LRU and an on-disk cache.

Typical interactive use::

    from napari_stainfuser.tiling import ResultPyramid

    with ResultPyramid(slide, stainer, tissue=True) as pyr:
        levels = pyr.arrays                      # lazy dask arrays, finest first
        pyr.levels[0].request(y0, y1, x0, x1)    # visible region first (returns at once)
"""

from .grid import TileGrid, read_tile
from .lazy import ResultPyramid, StainedLevel
from .noise import NoiseField
from .plan import TilePlan, resolve_tiling
from .resample import resample_region, scale_factor
from .store import ResultStore, TileCache
from .tissue import TissueSwitch, detect_tissue
from .windows import WINDOWS, blend_region, tile_window

__all__ = [
    "WINDOWS",
    "NoiseField",
    "ResultPyramid",
    "ResultStore",
    "StainedLevel",
    "TileCache",
    "TileGrid",
    "TilePlan",
    "TissueSwitch",
    "blend_region",
    "detect_tissue",
    "read_tile",
    "resample_region",
    "resolve_tiling",
    "scale_factor",
    "tile_window",
]
