"""napari-stainfuser: stain normalization and virtual IHC for whole-slide images."""

from importlib import import_module

from .errors import (
    CheckpointError,
    ParameterError,
    SlideReadError,
    SlideWriteError,
    StainEstimationError,
    StainFuserError,
)

__version__ = "0.1.0"

# Heavy modules (dask, tifffile, torch, diffusers) load on first use so that
# `stainfuser --help` and napari's plugin discovery stay fast.
_LAZY = {
    "open_slide": "napari_stainfuser.slide",
    "Slide": "napari_stainfuser.slide",
    "write_pyramid": "napari_stainfuser.slide",
}

__all__ = [
    "CheckpointError",
    "ParameterError",
    "Slide",
    "SlideReadError",
    "SlideWriteError",
    "StainEstimationError",
    "StainFuserError",
    "open_slide",
    "write_pyramid",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_stainfuser' has no attribute {name!r}")
