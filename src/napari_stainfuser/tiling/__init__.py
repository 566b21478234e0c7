"""The tiler: tile grids with overlap, blending windows that sum to one, the
consistent noise field, tissue switching, resampling to a stainer's working
resolution, and lazy stained pyramids backed by an LRU and an on-disk cache.

Typical interactive use::

    from napari_stainfuser.job import SlideJob
    from napari_stainfuser.tiling import ResultPyramid

    job = SlideJob.create("slide.svs", method="macenko", target="target.png")
    with ResultPyramid(job) as pyr:
        levels = pyr.arrays                      # lazy arrays, finest first
        pyr.levels[0].request(y0, y1, x0, x1)    # visible region first (returns at once)

Names load on first use, so the light parts (the grid, windows, noise) do not
pull in the engine and torch.
"""

from importlib import import_module

_LAZY = {
    "MAX_TILE": ".grid",
    "MIN_TILE": ".grid",
    "TileGrid": ".grid",
    "check_tiling": ".grid",
    "read_tile": ".grid",
    "ResultPyramid": ".lazy",
    "StainedLevel": ".lazy",
    "NOISE_MODES": ".noise",
    "NoiseField": ".noise",
    "TilePlan": ".plan",
    "resolve_tiling": ".plan",
    "resample_region": ".resample",
    "scale_factor": ".resample",
    "ResultStore": ".memory",
    "TileCache": ".store",
    "TissueSwitch": ".tissue",
    "detect_tissue": ".tissue",
    "WINDOWS": ".windows",
    "blend_region": ".windows",
    "tile_window": ".windows",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
