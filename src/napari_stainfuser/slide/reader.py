"""``open_slide``: any supported whole-slide image as a lazy dask pyramid.

Every level is a Y×X×3 uint8 ``dask.array`` chunked on the file's native
tiles (NDPI restart-marker tiles and TIFF strips, which are slivers a few rows
high, are grouped to ~512 rows, still tile-aligned). Opening reads headers
only; each chunk reads and decodes its own tiles when computed, so a corrupt
tile fails alone, with its level and (y, x) position, as a ``SlideReadError``.

``Slide.read_region`` returns the same pixels as computing a slice of a
level, decoding the touched TIFF tiles in a thread pool without a dask graph
(dask's per-task scheduling costs about as much as decoding a 240² tile).

Formats are detected from the first bytes, not the extension: TIFF family
(Aperio SVS incl. JPEG 2000, with 33003 YCbCr tiles converted to RGB; NDPI;
OME-TIFF; generic tiled/pyramidal/plain TIFF) in ``_tiff``, OME-Zarr
directories in ``_zarr``, PNG/JPEG in ``_plain``.

µm/px comes from the format's own metadata (Aperio ``MPP``, OME
``PhysicalSizeX`` + unit, NGFF scale + unit), else from TIFF resolution tags,
PNG pHYs or JPEG JFIF density. A density with no absolute unit, or one that
implies more than 25 µm/px (every document/screen default: 72-600 dpi), is
ignored and ``mpp`` is None. Magnification comes from Aperio ``AppMag``, the
NDPI Magnification tag or the OME objective's NominalMagnification.

Greyscale, 16-bit and multichannel (fluorescence) images, and palette
(indexed-colour) TIFFs, are refused with "not a brightfield RGB slide".
Palette PNGs (1-8-bit indices) are expanded to RGB; RGBA drops alpha. Files
without a pyramid down to 1024 px get lower levels built lazily by
``build_pyramid``.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np

from ..errors import ParameterError
from ._plain import open_plain
from ._readutil import error
from ._tiff import TiffLevelSource, open_tiff
from ._zarr import open_zarr
from .provenance import input_magnification
from .pyramid import MIN_LEVEL_SIZE, build_pyramid

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True, repr=False, eq=False)
class Slide:
    """A whole-slide image opened lazily; nothing is decoded until computed."""

    path: Path
    format: str
    levels: list[da.Array]
    mpp: float | None = None
    magnification: float | None = None
    associated: dict[str, da.Array] = field(default_factory=dict)
    downsamples: list[float] = field(default_factory=list)
    native_levels: int = 1  # levels stored in the file; the rest are built lazily
    # How the file was made, when napari-stainfuser wrote it (see slide.provenance).
    provenance: dict | None = None
    _tiles: tuple[TiffLevelSource, ...] = field(default=(), compare=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.levels[0].shape)

    def level_mpp(self, level: int) -> float | None:
        """µm/px of ``levels[level]``, or None when the file gives no µm/px."""
        return None if self.mpp is None else self.mpp * self.downsamples[level]

    def read_region(self, *, y: int, x: int, height: int, width: int, level: int = 0) -> np.ndarray:
        """Pixels of ``levels[level]`` in rows ``[y, y + height)`` and columns
        ``[x, x + width)``, as a numpy array of shape (height, width, 3).

        Keyword-only, rows first: ``read_region(y=..., x=..., height=..., width=...)``.
        (OpenSlide's ``read_region((x, y), level, (width, height))`` puts x
        first; naming the arguments keeps the two from being confused.)

        Same pixels as ``levels[level][y:y+height, x:x+width].compute()``, but
        for levels stored as TIFF tiles it decodes the touched tiles directly
        in a thread pool: a dask task per 240² tile costs about as much as
        decoding it (``benchmarks/bench_read.py``), which batch readers
        (the tiler) cannot afford.
        """
        if not 0 <= level < len(self.levels):
            raise ParameterError(f"level: {level} is not in 0..{len(self.levels) - 1}")
        h, w = self.levels[level].shape[:2]
        if height < 0 or width < 0 or y < 0 or x < 0 or y + height > h or x + width > w:
            raise ParameterError(
                f"region y={y}, x={x}, height={height}, width={width} "
                f"is outside level {level} ({h}×{w})"
            )
        if level < len(self._tiles):
            return self._tiles[level].read(y, y + height, x, x + width, _pool())
        return self.levels[level][y : y + height, x : x + width].compute()

    def __repr__(self) -> str:
        levels = ", ".join(f"{a.shape[0]}×{a.shape[1]}" for a in self.levels)
        mpp = "None" if self.mpp is None else f"{self.mpp:.4g}"
        mag = "None" if self.magnification is None else f"{self.magnification:g}"
        tile = "×".join(str(c[0]) for c in self.levels[0].chunks[:2])
        return (
            f"Slide({self.path.name!r}, format={self.format!r}, levels=[{levels}], "
            f"tile={tile}, mpp={mpp}, magnification={mag}, "
            f"associated={sorted(self.associated)})"
        )


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    # Same default width as dask's threaded scheduler; tile decoding releases the GIL.
    return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="slide-read")


def _with_pyramid(levels: list[da.Array]) -> tuple[list[da.Array], list[float]]:
    h0, w0 = levels[0].shape[:2]
    downsamples = [(h0 / a.shape[0] + w0 / a.shape[1]) / 2 for a in levels]
    if max(levels[-1].shape[:2]) > MIN_LEVEL_SIZE:
        built = build_pyramid(levels[-1], min_size=MIN_LEVEL_SIZE)[1:]
        levels = levels + built
        downsamples += [downsamples[-1] * 2.0 ** (i + 1) for i in range(len(built))]
    return levels, downsamples


def open_slide(path: str | os.PathLike[str]) -> Slide:
    """Open a slide lazily. Raises ``SlideReadError`` naming the file on any problem."""
    path = Path(path).expanduser()
    if not path.exists():
        raise error(path, "no such file or directory")
    if path.is_dir():
        parts = open_zarr(path)
        fmt, levels, mpp, associated = "ome-zarr", parts.levels, parts.mpp, {}
        prov = parts.provenance
        mag, tiles = input_magnification(prov), ()
    else:
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError as exc:
            raise error(path, f"cannot read file ({exc.strerror or exc})") from exc
        if head[:4] in _TIFF_MAGIC:
            tiff = open_tiff(path)
            fmt, levels, mpp, prov = tiff.format, tiff.levels, tiff.mpp, tiff.provenance
            mag, associated, tiles = tiff.magnification, tiff.associated, tuple(tiff.sources)
        elif head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
            fmt, level, mpp = open_plain(path)
            levels, mag, associated, tiles, prov = [level], None, {}, (), None
        else:
            raise error(path, "not a supported image file (not TIFF, PNG, JPEG or OME-Zarr)")
    native = len(levels)
    levels, downsamples = _with_pyramid(levels)
    return Slide(
        path, fmt, levels, mpp, mag, associated, downsamples, native, provenance=prov,
        _tiles=tiles,
    )  # fmt: skip
