"""Tiled pyramidal OME-TIFF assembled from (3, Y, X) zarr levels, tile by tile.

Level 0 is the main IFD, lower levels are its SubIFDs (the OME-TIFF pyramid
layout that Bio-Formats, QuPath and tifffile read). Tiles are read from the
zarr levels a block of tiles at a time, one block ahead in a background
thread, and tifffile encodes them on its own worker threads; nothing larger
than a block is ever in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile
import zarr

from ..errors import ParameterError
from .provenance import ome_annotation

# Tiles read from zarr per block: enough for zarr to decode chunks
# concurrently, small enough that memory does not depend on the slide width.
_BLOCK_TILES = 8
# Encoded tiles tifffile may hold at once; its default buffer is 512 MB.
_BUFFER_TILES = 16


def tiff_options(compression: str | None, quality: int) -> dict:
    """tifffile write options for a compression name."""
    if compression is None or compression == "none":
        return {"compression": None}
    if compression == "jpeg":
        # photometric RGB + JPEG makes tifffile store YCbCr with 2×2 chroma
        # subsampling, the convention of Aperio and other WSI scanners.
        return {"compression": "jpeg", "compressionargs": {"level": int(quality)}}
    if compression in ("zlib", "zstd", "lzw"):
        # Horizontal differencing makes smooth image content compress better.
        return {"compression": compression, "predictor": True}
    raise ParameterError(
        f"compression: {compression!r} is not available for OME-TIFF; "
        "choose 'jpeg', 'zlib', 'zstd', 'lzw' or None"
    )


def _blocks(shape: Sequence[int], tile: int) -> list[tuple[int, int, int, int]]:
    h, w = shape[-2:]
    step = tile * _BLOCK_TILES
    return [
        (y0, min(y0 + tile, h), x0, min(x0 + step, w))
        for y0 in range(0, h, tile)
        for x0 in range(0, w, step)
    ]


def _interleave(planes: np.ndarray) -> np.ndarray:
    """(3, h, w) -> contiguous (h, w, 3).

    Channel by channel: numpy's generic strided copy of the full transpose is
    several times slower, and this runs once per pixel of every level.
    """
    out = np.empty((*planes.shape[1:], planes.shape[0]), planes.dtype)
    for c in range(planes.shape[0]):
        out[..., c] = planes[c]
    return out


def _tiles(level: zarr.Array, tile: int) -> Iterator[np.ndarray]:
    """The level's tiles in TIFF order (row-major), as contiguous h×w×3 arrays (edges smaller)."""
    blocks = _blocks(level.shape, tile)

    def read(b) -> list[np.ndarray]:
        y0, y1, x0, x1 = b
        if level.ndim == 2:  # a single plane: a label image or a float map
            plane = np.asarray(level[y0:y1, x0:x1])
            return [np.ascontiguousarray(plane[:, x : x + tile]) for x in range(0, x1 - x0, tile)]
        planes = level[:, y0:y1, x0:x1]
        return [_interleave(planes[:, :, x : x + tile]) for x in range(0, x1 - x0, tile)]

    # Reading and interleaving the next block overlaps with tifffile encoding this one.
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(read, blocks[0])
        for i in range(len(blocks)):
            tiles = nxt.result()
            if i + 1 < len(blocks):
                nxt = pool.submit(read, blocks[i + 1])
            yield from tiles
            del tiles


def write_ome_tiff(
    levels: Sequence[zarr.Array],
    path: str | Path,
    *,
    mpp: float | None,
    tile: int,
    compression: str | None,
    quality: int = 90,
    name: str = "image",
    provenance: dict | None = None,
) -> None:
    """Write (3, Y, X) uint8 zarr levels as one pyramidal OME-TIFF at `path` (not atomic).

    (Y, X) levels (a label image or a float map) are written as one
    greyscale plane of their own dtype. `provenance` goes into an OME-XML
    MapAnnotation (see :mod:`napari_stainfuser.slide.provenance`).
    """
    plane = levels[0].ndim == 2
    if plane and compression == "jpeg":
        raise ParameterError(
            "compression: 'jpeg' is for RGB images; label and float maps are lossless"
        )
    dtype = np.dtype(levels[0].dtype)
    options = tiff_options(compression, quality)
    options.update(
        photometric="minisblack" if plane else "rgb",
        tile=(tile, tile),
        buffersize=_BUFFER_TILES * tile * tile * 3 * dtype.itemsize,
        # tifffile defaults to half the cores; encoding is the bottleneck here.
        maxworkers=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    )
    metadata: dict = {"axes": "YX" if plane else "YXS", "Name": name}
    if not plane:
        metadata["SignificantBits"] = 8
    if mpp is not None:
        metadata.update(
            PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm"
        )

    if provenance is not None:
        metadata.update(ome_annotation(provenance))

    def resolution(k: int) -> dict:
        if mpp is None:
            return {}
        # TIFF resolution is pixels per unit; 1 cm = 1e4 µm.
        ppcm = 1e4 / (mpp * 2**k)
        return {"resolution": (ppcm, ppcm), "resolutionunit": "CENTIMETER"}

    # The file is not named *.ome.tif* while being written, so say OME explicitly.
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        for k, level in enumerate(levels):
            h, w = level.shape[-2:]
            first = {"subifds": len(levels) - 1, "metadata": metadata} if k == 0 else {}
            tif.write(
                _tiles(level, tile),
                shape=(h, w) if plane else (h, w, 3),
                dtype=dtype,
                subfiletype=0 if k == 0 else 1,
                **first,
                **resolution(k),
                **options,
            )
