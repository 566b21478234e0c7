"""Whole-slide batch runs: stain a slide into a pyramid, resumable, on one
machine or a dask cluster. See :func:`normalize_slide`."""

from .normalize import normalize_slide, work_dir
from .progress import BatchProgress, TqdmProgress
from .schedulers import parse_scheduler

__all__ = ["BatchProgress", "TqdmProgress", "normalize_slide", "parse_scheduler", "work_dir"]
