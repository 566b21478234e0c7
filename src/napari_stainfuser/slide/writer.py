"""Write a level-0 image as a pyramidal OME-TIFF or OME-Zarr, streaming and atomically.

Both formats are built the same way: level 0 is streamed into an OME-Zarr
pyramid in bounded row strips, each lower level is derived from the level
above as stored (so a lazy level 0 is computed once), and an OME-TIFF is then
assembled tile by tile from that zarr. Memory therefore depends on the tile
size and the image's dask chunks, never on the slide size.

Outputs appear under their final name only when complete: everything is
written under a hidden temporary name in the target directory and renamed at
the end; temporaries are removed when writing fails.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from ..errors import ParameterError, SlideWriteError
from ..progress import Tracker, step
from ._ome_tiff import write_ome_tiff
from ._ome_zarr import ZarrPyramid, check_mpp, check_tile, io_errors
from .formats import check_compression, check_quality, output_format
from .provenance import software

__all__ = ["ZarrPyramid", "extra_path", "move_into_place", "write_pyramid", "zarr_to_ome_tiff"]

# The zarr pyramid behind an OME-TIFF is a scratch copy: favour speed.
_SCRATCH_ZSTD_LEVEL = 1


def _check_image(image) -> None:
    shape, dtype = getattr(image, "shape", None), getattr(image, "dtype", None)
    if shape is None or dtype is None:
        raise ParameterError(f"image: expected a numpy or dask array, got {type(image).__name__}")
    if len(shape) != 3 or shape[2] != 3:
        raise ParameterError(f"image: expected a Y×X×3 RGB array, got shape {tuple(shape)}")
    if any(not isinstance(s, (int, np.integer)) for s in shape):
        raise ParameterError(
            f"image: shape {tuple(shape)} is not fully known (compute chunk sizes)"
        )
    if shape[0] < 1 or shape[1] < 1:
        raise ParameterError(f"image: empty image of shape {tuple(shape)}")
    if np.dtype(dtype) != np.uint8:
        raise ParameterError(f"image: expected dtype uint8, got {dtype}")


def _check_options(fmt: str, mpp, tile, compression, quality) -> str | None:
    check_mpp(mpp)
    check_tile(tile)
    check_quality(quality)
    return check_compression(fmt, compression)


def _check_target(path: str | Path, overwrite: bool) -> Path:
    path = Path(path)
    parent = path.absolute().parent
    if not parent.is_dir():
        raise SlideWriteError(f"{path}: directory {parent} does not exist")
    if path.exists() and not overwrite:
        raise SlideWriteError(f"{path}: already exists (pass overwrite=True to replace it)")
    return path


def _temp_sibling(path: Path, tag: str) -> Path:
    # Hidden and without the target's extension, so an interrupted write
    # never looks like a finished slide to a file browser or a reader.
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.{tag}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _is_zarr_store(path: Path) -> bool:
    return any((path / f).is_file() for f in ("zarr.json", ".zgroup", ".zarray", ".zattrs"))


def move_into_place(src: str | Path, target: str | Path, *, overwrite: bool = False) -> Path:
    """Rename a finished file or zarr directory `src` to `target` (same filesystem).

    A file replaces an existing file atomically (os.replace). A directory
    cannot be swapped in one step: an existing zarr store at `target` is first
    renamed aside, then removed once the new one is in place.
    """
    src, target = Path(src), Path(target)
    with io_errors(target):
        if not target.exists():
            os.rename(src, target)
            return target
        if not overwrite:
            raise SlideWriteError(f"{target}: already exists (pass overwrite=True to replace it)")
        if src.is_dir() != target.is_dir():
            kind = "directory" if target.is_dir() else "file"
            raise SlideWriteError(f"{target}: exists and is a {kind}; refusing to replace it")
        if not src.is_dir():
            os.replace(src, target)
            return target
        if not _is_zarr_store(target):
            raise SlideWriteError(
                f"{target}: exists and is not a zarr store; refusing to replace it"
            )
        old = _temp_sibling(target, "old")
        os.rename(target, old)
        try:
            os.rename(src, target)
        except BaseException:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    return target


def _rows(progress):
    """Level-0 rows written -> a "write" Progress report (or None without a callback)."""
    if progress is None:
        return None
    tracker = {}

    def report(done: int, total: int) -> None:
        if "t" not in tracker:
            tracker["t"] = Tracker("write", total, 0, progress)
        tracker["t"].add(done - tracker["t"].done)

    return report


def extra_path(path: str | Path, name: str) -> Path:
    """Where an OME-TIFF output's extra output ``name`` goes: OUT.ome.tif -> OUT.<name>.ome.tif."""
    path = Path(path)
    for ext in (".ome.tiff", ".ome.tif"):
        if path.name.lower().endswith(ext):
            stem = path.name[: -len(ext)]
            return path.with_name(f"{stem}.{name}{path.name[-len(ext) :]}")
    raise ParameterError(f"path: {path}: expected a .ome.tif or .ome.tiff file name")


def _assemble_tiff(
    pyr: ZarrPyramid, target: Path, compression: str | None, quality: int, overwrite: bool
) -> Path:
    # Extra outputs first (lossless), each beside the image: the image's file
    # appearing last means every part of the output is complete.
    parts = [(extra_path(target, n), pyr.extra_levels[n], "zlib") for n in pyr.extras]
    parts.append((target, pyr.levels, compression))
    for path, levels, codec in parts:
        tmp = _temp_sibling(path, "partial")
        try:
            with io_errors(path):
                write_ome_tiff(
                    levels,
                    tmp,
                    mpp=pyr.mpp,
                    tile=pyr.tile,
                    compression=codec,
                    quality=quality,
                    name=path.name.split(".")[0],
                    provenance=pyr.provenance,
                )
            move_into_place(tmp, path, overwrite=overwrite)
        finally:
            _remove(tmp)
    return target


def zarr_to_ome_tiff(
    zarr_path: str | Path,
    tif_path: str | Path,
    *,
    compression: str | None = "auto",
    quality: int = 90,
    overwrite: bool = False,
) -> Path:
    """Assemble a pyramidal OME-TIFF from a pyramid written by `ZarrPyramid`, atomically.

    The zarr's lower levels must have been built (`build_lower_levels` or
    `finalize`); its tile size and µm/px carry over. `compression` as for
    `write_pyramid` ('auto' is JPEG). Returns `tif_path`.
    """
    if not Path(tif_path).name.lower().endswith((".ome.tif", ".ome.tiff")):
        raise ParameterError(f"tif_path: {tif_path}: expected a .ome.tif or .ome.tiff file name")
    pyr = ZarrPyramid.open(zarr_path)
    compression = _check_options("ome-tiff", pyr.mpp, pyr.tile, compression, quality)
    target = _check_target(tif_path, overwrite)
    return _assemble_tiff(pyr, target, compression, quality, overwrite)


def write_pyramid(
    image,
    path: str | Path,
    *,
    mpp: float | None = None,
    tile: int = 512,
    compression: str | None = "auto",
    quality: int = 90,
    overwrite: bool = False,
    progress=None,
    provenance: dict | None = None,
) -> Path:
    """Write a Y×X×3 uint8 image (dask or numpy) as a pyramid; the extension picks the format.

    - ``.ome.tif`` / ``.ome.tiff``: tiled BigTIFF OME-TIFF, lower levels in
      SubIFDs, OME-XML PhysicalSizeX/Y = `mpp` µm. `compression` is 'jpeg'
      (default, YCbCr 4:2:0 at `quality`), 'zlib', 'zstd', 'lzw' or None.
    - ``.ome.zarr``: OME-Zarr NGFF 0.5 on zarr v3, arrays "0", "1", … stored
      as (c, y, x) with chunks (3, tile, tile), scale in µm per level,
      omero RGB rendering. `compression` is 'zstd' (default), 'gzip' or None.

    Levels halve by 2×2 area averaging until the longest side is at most
    1024 px (the rule of `build_pyramid`). `tile` must be a multiple of 16.
    An existing `path` is replaced only with `overwrite=True`. `progress`, if
    given, receives a :class:`~napari_stainfuser.progress.Progress` ("write",
    rows of level 0 done of all rows) after every strip, then "pyramid" and
    "done". `provenance`: a JSON object recorded in the file (see
    :mod:`~napari_stainfuser.slide.provenance`); the software and its version
    are always recorded. Returns `path`.
    """
    _check_image(image)
    record = {**(provenance or {}), "software": software()}
    fmt = output_format(path, "path")
    compression = _check_options(fmt, mpp, tile, compression, quality)
    target = _check_target(path, overwrite)
    # Refuse an unreplaceable target now rather than after writing the whole pyramid.
    if target.exists() and target.is_dir() != (fmt == "ome-zarr"):
        kind = "directory" if target.is_dir() else "file"
        raise SlideWriteError(f"{target}: exists and is a {kind}; refusing to replace it")
    if target.is_dir() and not _is_zarr_store(target):
        raise SlideWriteError(f"{target}: exists and is not a zarr store; refusing to replace it")
    name = target.name.split(".")[0]
    mpp = None if mpp is None else float(mpp)
    tile = int(tile)

    if fmt == "ome-zarr":
        tmp = _temp_sibling(target, "partial")
        try:
            pyr = ZarrPyramid.create(
                tmp, image.shape, mpp=mpp, tile=tile, compression=compression, name=name
            )
            pyr.provenance = record
            pyr.write_level0(image, _rows(progress))
            step(progress, "pyramid")
            pyr.finalize()
            out = move_into_place(tmp, target, overwrite=overwrite)
            step(progress, "done")
            return out
        finally:
            _remove(tmp)

    scratch = _temp_sibling(target, "pyramid")
    try:
        pyr = ZarrPyramid.create(
            scratch,
            image.shape,
            mpp=mpp,
            tile=tile,
            compression="zstd",
            compression_level=_SCRATCH_ZSTD_LEVEL,
            name=name,
        )
        pyr.provenance = record
        pyr.write_level0(image, _rows(progress))
        step(progress, "pyramid")
        pyr.build_lower_levels()
        out = _assemble_tiff(pyr, target, compression, quality, overwrite)
        step(progress, "done")
        return out
    finally:
        _remove(scratch)
