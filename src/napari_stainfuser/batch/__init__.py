"""Whole-slide batch runs: stain a slide into a pyramid, resumable, on one
machine or a dask cluster. See :func:`normalize_slide` and :func:`run_job`.

Names load on first use, so checking an output (:class:`OutputSpec`) needs
neither zarr nor torch.
"""

from importlib import import_module

_LAZY = {
    "normalize_slide": ".normalize",
    "stain_slide": ".stain",
    "OutputSpec": ".output",
    "work_dir": ".output",
    "run_job": ".run",
    "parse_scheduler": ".schedulers",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
