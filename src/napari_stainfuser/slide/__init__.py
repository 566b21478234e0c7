"""Whole-slide I/O: lazy reading, pyramid writing and synthetic slides.

Only tifffile, zarr and dask live here.
"""

from .reader import Slide, open_slide
from .writer import write_pyramid

__all__ = ["Slide", "open_slide", "write_pyramid"]
