"""Pieces shared by the format readers: lazy dask wrapping, errors, density rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from ..errors import SlideReadError

# Level 0 of a real slide scan is finer than ~10 µm/px (a 1.25x objective);
# flatbed scans of a glass slide reach ~20 µm/px. Anything coarser comes from
# a document default (72, 96, 150, 300 or 600 dpi = 353 ... 42 µm/px), not from
# an optical measurement, so resolution tags that imply it are ignored.
MAX_PLAUSIBLE_MPP = 25.0

# µm per unit for TIFF ResolutionUnit values (1 = no absolute unit).
_TIFF_UNIT_UM = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}


def error(path: Path | str, problem: str) -> SlideReadError:
    """A one-line SlideReadError naming the file and the problem."""
    text = " ".join(str(problem).split())
    return SlideReadError(f"{path}: {text}")


def not_rgb(path: Path | str, why: str) -> SlideReadError:
    return error(path, f"not a brightfield RGB slide: {why}")


def mpp_from_density(pixels_per_unit: float | None, um_per_unit: float | None) -> float | None:
    """µm/px from a 'pixels per unit' density, or None for document/screen defaults."""
    if not pixels_per_unit or not um_per_unit or pixels_per_unit <= 0:
        return None
    mpp = um_per_unit / float(pixels_per_unit)
    if not (0.0 < mpp <= MAX_PLAUSIBLE_MPP):
        return None
    return mpp


def mpp_from_tiff_resolution(resolution: Any, unit: Any) -> float | None:
    """µm/px from TIFF XResolution/ResolutionUnit (inch, cm, mm, µm), per the rule above."""
    try:
        xres = float(resolution[0])
        um_per_unit = _TIFF_UNIT_UM.get(int(unit))
    except (TypeError, ValueError, IndexError):
        return None
    return mpp_from_density(xres, um_per_unit)


def lazy_level(source: Any, chunks: tuple[int, int, int], *key: Any) -> da.Array:
    """Wrap an array-like whose ``__getitem__`` decodes only what it is asked for.

    ``inline_array=True`` keeps the graph a single Blockwise layer: with a
    separate layer holding the source, every ``compute`` culls by enumerating
    all chunk keys (0.3 s per region on a 100,000² slide); inlined it is ~10 ms.
    The source therefore pickles small (see the readers' ``__getstate__``).
    """
    return da.from_array(
        source,
        chunks=chunks,
        name="slide-" + tokenize(*key),
        meta=np.empty((0, 0, 0), dtype=np.uint8),
        asarray=False,
        lock=False,
        fancy=False,
        inline_array=True,
    )


def chunk_for(tile: int, size: int, small: int = 32, target: int = 512) -> int:
    """Chunk length along one axis: the native tile, grouped when tiles are slivers.

    NDPI restart-marker tiles are 8 or 16 rows high and TIFF strips can be a
    single row; one dask task per sliver would drown in scheduling overhead,
    so those are grouped (whole multiples, still tile-aligned) to ``target``.
    """
    if tile >= small:
        return min(tile, size)
    return min(tile * -(-target // tile), size)


def file_key(path: Path) -> tuple[str, int, int]:
    """Identity of a file's contents for dask names: path, size and mtime."""
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns)


def region(key: Any, shape: tuple[int, int, int]) -> tuple[int, int, int, int, tuple]:
    """(y0, y1, x0, x1, rest) for a key of slices; ``rest`` re-applies steps and channels.

    dask only hands its sources tuples of slices, so that is all the sources
    accept; they decode the unit-step extent and let numpy apply the rest.
    """
    if not isinstance(key, tuple):
        key = (key,)
    if len(key) > 3 or not all(isinstance(k, slice) for k in key):
        raise TypeError(f"slide levels support only slicing, got {key!r}")
    ys, xs, cs = key + (slice(None),) * (3 - len(key))
    y0, y1, ystep = ys.indices(shape[0])
    x0, x1, xstep = xs.indices(shape[1])
    if ystep < 0 or xstep < 0:
        raise TypeError("slide levels do not support negative steps")
    y1, x1 = max(y0, y1), max(x0, x1)
    return y0, y1, x0, x1, (slice(None, None, ystep), slice(None, None, xstep), cs)
