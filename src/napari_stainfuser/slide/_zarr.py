"""OME-Zarr images (OME-NGFF 0.4 on zarr v2, 0.5 on zarr v3), read with zarr.

Level arrays may be laid out (c, y, x) as NGFF requires, (y, x, c) as many
ad-hoc writers do, or with leading singleton t/z axes; the source reorders to
Y×X×3 per chunk. Chunks follow the store's own chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from ._readutil import error, file_key, lazy_level, not_rgb
from ._readutil import region as _region
from .provenance import from_attrs

ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
# NGFF units are UDUNITS-2 names; these are the spatial ones, in µm.
_UNIT_UM = {
    "angstrom": 1e-4,
    "picometer": 1e-6,
    "nanometer": 1e-3,
    "micrometer": 1.0,
    "micron": 1.0,
    "millimeter": 1e3,
    "centimeter": 1e4,
    "meter": 1e6,
}


@dataclass
class ZarrParts:
    levels: list[da.Array]
    mpp: float | None
    provenance: dict | None = None


def is_zarr_dir(path: Path) -> bool:
    return any((path / marker).exists() for marker in ZARR_MARKERS)


class ZarrLevelSource:
    """Y×X×3 uint8 view of one NGFF level array, whatever its axis order."""

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, path: Path, array: zarr.Array, axes: list[str], label: str):
        self.path, self.array, self.axes, self.label = path, array, axes, label
        self.shape = (array.shape[axes.index("y")], array.shape[axes.index("x")], 3)
        self.chunks = (
            min(array.chunks[axes.index("y")], self.shape[0]),
            min(array.chunks[axes.index("x")], self.shape[1]),
            3,
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        y0, y1, x0, x1, rest = _region(key, self.shape)
        index = {"y": slice(y0, y1), "x": slice(x0, x1), "c": slice(0, 3)}
        try:
            data = np.asarray(self.array[tuple(index.get(a, 0) for a in self.axes)])
        except Exception as exc:
            raise error(
                self.path,
                f"{self.label}: chunk at (y={y0}, x={x0}) cannot be read: "
                f"{type(exc).__name__}: {exc}",
            ) from exc
        kept = [a for a in self.axes if a in index]
        data = data.transpose([kept.index(a) for a in "yxc"])
        return np.ascontiguousarray(data, dtype=np.uint8)[rest]


def _multiscale(path: Path, group: zarr.Group) -> tuple[dict[str, Any], zarr.Group]:
    attrs = group.attrs.asdict()
    multiscales = (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")
    if multiscales:
        return multiscales[0], group
    child = group.get("0")  # bioformats2raw layout: the image is the group "0"
    if isinstance(child, zarr.Group):
        return _multiscale(path, child)
    raise error(path, "zarr store has no OME-NGFF 'multiscales' metadata")


def _axis_names(meta: dict[str, Any], array: zarr.Array) -> list[str]:
    axes = meta.get("axes")
    if axes:
        names = []
        for a in axes:
            name = str(a.get("name", "") if isinstance(a, dict) else a).lower()
            kind = a.get("type") if isinstance(a, dict) else None
            names.append("c" if kind == "channel" else name)
        return names
    # NGFF < 0.4 has no axes: the only layouts in use are these.
    shape = array.shape
    if len(shape) == 3:
        return ["c", "y", "x"] if shape[0] <= 4 < shape[2] else ["y", "x", "c"]
    return ["t", "c", "z", "y", "x"][-len(shape) :]


def _check_level(path: Path, array: zarr.Array, axes: list[str], k: int) -> None:
    if len(axes) != array.ndim or "y" not in axes or "x" not in axes:
        raise error(path, f"level {k}: axes {axes} do not fit an array of shape {array.shape}")
    if array.dtype != np.uint8:
        raise not_rgb(path, f"level {k} has {array.dtype} samples")
    channels = array.shape[axes.index("c")] if "c" in axes else 1
    if channels == 1:
        raise not_rgb(path, f"level {k} is greyscale")
    if channels not in (3, 4):
        raise not_rgb(path, f"level {k} is multichannel (fluorescence?): {channels} channels")
    extra = [f"{n} {a}" for a, n in zip(axes, array.shape, strict=True) if a not in "yxc" and n > 1]
    if extra:
        raise not_rgb(path, f"level {k} is multi-plane: {', '.join(extra)} planes")


def _scale_mpp(meta: dict[str, Any], dataset: Any, axes_meta: Any, x: int) -> float | None:
    """µm/px along x from the NGFF scale transforms and the x axis unit.

    Metadata that does not follow the schema (a scale that is not a number,
    no unit, a non-spatial unit) gives None: the pixels are still readable,
    the file just does not say how large they are.
    """
    scale = 1.0
    try:
        for transforms in (
            dataset.get("coordinateTransformations"),
            meta.get("coordinateTransformations"),
        ):
            for t in transforms or []:
                if t.get("type") == "scale" and len(t.get("scale", [])) > x:
                    scale *= float(t["scale"][x])
        axis = axes_meta[x] if axes_meta else None
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None
    unit = axis.get("unit") if isinstance(axis, dict) else None
    factor = _UNIT_UM.get(str(unit).lower()) if unit else None
    mpp = scale * factor if factor else None
    return mpp if mpp is not None and np.isfinite(mpp) and mpp > 0 else None


def _dataset(path: Path, group, k: int, dataset) -> zarr.Array:
    """Level ``k``'s array, or a one-line error saying what is wrong with the store."""
    name = dataset.get("path") if isinstance(dataset, dict) else None
    if not isinstance(name, str) or not name:
        raise error(path, f"multiscales dataset {k} does not name its array (no 'path')")
    try:
        return group[name]
    except Exception as exc:  # zarr raises KeyError for absent and for damaged arrays alike
        if (path / name).is_dir():
            raise error(
                path, f"level {k} (array {name!r}) has damaged zarr metadata; it cannot be read"
            ) from exc
        raise error(
            path,
            f"the multiscales metadata lists level {k} as array {name!r}, which is not in the store",
        ) from exc


def open_zarr(path: Path) -> ZarrParts:
    if not is_zarr_dir(path):
        raise error(path, "directory is not a zarr store (no zarr.json, .zgroup or .zarray)")
    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as exc:  # zarr raises KeyError, ValueError, JSONDecodeError, ...
        raise error(
            path, "its zarr metadata cannot be read (a damaged zarr.json, .zgroup or .zarray)"
        ) from exc
    if isinstance(node, zarr.Array):
        meta, arrays = {}, [node]
    else:
        meta, group = _multiscale(path, node)
        arrays = [_dataset(path, group, k, d) for k, d in enumerate(meta.get("datasets", []))]
        if not arrays or not all(isinstance(a, zarr.Array) for a in arrays):
            raise error(path, "multiscales metadata lists no image arrays")
    axes = _axis_names(meta, arrays[0])
    key = file_key(path / next(m for m in ZARR_MARKERS if (path / m).exists()))
    levels = []
    for k, array in enumerate(arrays):
        _check_level(path, array, axes, k)
        source = ZarrLevelSource(path, array, axes, f"level {k}")
        levels.append(lazy_level(source, source.chunks, key, str(path), array.path))
    mpp = None
    if meta.get("datasets"):
        mpp = _scale_mpp(meta, meta["datasets"][0], meta.get("axes"), axes.index("x"))
    prov = None if isinstance(node, zarr.Array) else from_attrs(node.attrs, str(path))
    return ZarrParts(levels, mpp, prov)
