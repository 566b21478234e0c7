"""Whole-slide I/O: lazy reading, pyramid writing and synthetic slides.

Only tifffile, zarr and dask live here.
"""

from importlib import import_module

_LAZY = {"Slide": ".reader", "open_slide": ".reader", "write_pyramid": ".writer"}

__all__ = ["Slide", "open_slide", "write_pyramid"]


def __getattr__(name):
    # Submodules load on first use, so importing one part never drags in the others.
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
