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
    "StainFuser": "napari_stainfuser.diffusion",
    "get_normalizer": "napari_stainfuser.stain",
    "normalize_slide": "napari_stainfuser.batch",
    "stain_slide": "napari_stainfuser.batch",
    "VirtualIHC": "napari_stainfuser.diffusion.virtual_ihc",
    "coarse_mask": "napari_stainfuser.training.coarse_mask",
    "make_stainer": "napari_stainfuser.stainers",
    "distill": "napari_stainfuser.distillation",
    "DistilledStainer": "napari_stainfuser.distillation",
    "SlideJob": "napari_stainfuser.job",
    "Progress": "napari_stainfuser.progress",
}

__all__ = [
    "CheckpointError",
    "DistilledStainer",
    "ParameterError",
    "Progress",
    "Slide",
    "SlideJob",
    "StainFuser",
    "VirtualIHC",
    "SlideReadError",
    "SlideWriteError",
    "StainEstimationError",
    "StainFuserError",
    "coarse_mask",
    "distill",
    "get_normalizer",
    "make_stainer",
    "normalize_slide",
    "open_slide",
    "stain_slide",
    "write_pyramid",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_stainfuser' has no attribute {name!r}")
