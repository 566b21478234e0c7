"""An OME-Zarr (NGFF 0.5, zarr v3) pyramid on disk, filled tile by tile.

The pyramid is the one intermediate every writer goes through: `write_pyramid`
streams level 0 into it and derives each lower level from the level above it
*as stored*, so level 0 is computed exactly once however expensive its dask
graph is. OME-TIFF output is then assembled from these arrays.

Arrays are stored as (c, y, x): NGFF requires the channel axis before the
space axes. Each chunk holds all three channels of one tile, (3, tile, tile),
so a tile is one file and one atomic write (zarr's LocalStore writes to a
temporary name and renames). No sharding: a shard is rewritten as a whole,
which would break per-tile commits and concurrent writers on disjoint tiles.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import dask.array as da
import numpy as np
import zarr
from zarr.codecs import GzipCodec, ZstdCodec

from ..errors import ParameterError, SlideWriteError
from .provenance import ATTRS_KEY, from_attrs
from .pyramid import MIN_LEVEL_SIZE, downsample2x, level_shapes

# Our own bookkeeping in the group attributes; the NGFF "ome" key is only
# written by `finalize`, so a store whose lower levels were never built does
# not look like a complete image to any NGFF reader.
PLAN_KEY = "napari_stainfuser"

# Every chunk is stored even when it equals the fill value, so "the chunk file
# exists" means "this tile was written" (used by resumable writers).
_ARRAY_CONFIG = {"write_empty_chunks": True}


@contextlib.contextmanager
def io_errors(path: str | Path) -> Iterator[None]:
    """Turn OS-level failures (disk full, permissions) into a SlideWriteError naming `path`."""
    try:
        yield
    except OSError as e:
        reason = e.strerror or str(e)
        raise SlideWriteError(f"{path}: cannot write: {reason}") from e


def check_mpp(mpp) -> None:
    """ParameterError unless `mpp` is None or a positive finite number."""
    if mpp is None:
        return
    try:
        ok = not isinstance(mpp, bool) and math.isfinite(float(mpp)) and float(mpp) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ParameterError(f"mpp: expected a positive number of µm per pixel, got {mpp!r}")


def check_tile(tile) -> None:
    """ParameterError unless `tile` is a positive multiple of 16 (TIFF requires it)."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 16 or tile % 16:
        raise ParameterError(f"tile: expected a positive multiple of 16 (TIFF tiles), got {tile!r}")


def zarr_compressors(compression: str | None, level: int | None = None):
    """zarr v3 compressor list for a compression name (lossless only)."""
    if compression is None or compression == "none":
        return None
    if compression == "zstd":
        return [ZstdCodec(level=3 if level is None else level)]
    if compression in ("gzip", "zlib"):
        return [GzipCodec(level=5 if level is None else level)]
    raise ParameterError(
        f"compression: {compression!r} is not available for OME-Zarr; "
        "choose 'zstd', 'gzip' or None (OME-Zarr output is lossless)"
    )


def ngff_attrs(n_levels: int, mpp: float | None, name: str) -> dict:
    """The NGFF 0.5 "ome" attribute: multiscales with a µm scale per level, RGB rendering."""
    unit = {"unit": "micrometer"} if mpp is not None else {}
    # Without a physical size the scale is in level-0 pixels (and no unit).
    datasets = _scale_datasets(n_levels, mpp, channel=True)
    channels = [
        {
            "label": label,
            "color": color,
            "window": {"min": 0, "max": 255, "start": 0, "end": 255},
            "active": True,
            "coefficient": 1.0,
            "family": "linear",
            "inverted": False,
        }
        for label, color in (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))
    ]
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", **unit},
                    {"name": "x", "type": "space", **unit},
                ],
                "datasets": datasets,
                "type": "local_mean",
                "metadata": {
                    "description": "2x2 area average, uint16 sum, (a+b+c+d+2)//4, odd edge trimmed",
                    "method": "napari_stainfuser.slide.pyramid.downsample2x",
                },
            }
        ],
        "omero": {"channels": channels, "rdefs": {"model": "color"}},
    }


def _scale_datasets(n_levels: int, mpp: float | None, channel: bool) -> list[dict]:
    base = 1.0 if mpp is None else float(mpp)
    lead = [1.0] if channel else []
    return [
        {
            "path": str(k),
            "coordinateTransformations": [
                {"type": "scale", "scale": [*lead, base * 2**k, base * 2**k]}
            ],
        }
        for k in range(n_levels)
    ]


def _plane_multiscales(name: str, n_levels: int, mpp: float | None, how: str) -> list[dict]:
    """NGFF multiscales of a single-plane (y, x) image: a label image or a float map."""
    unit = {"unit": "micrometer"} if mpp is not None else {}
    return [
        {
            "name": name,
            "axes": [{"name": a, "type": "space", **unit} for a in ("y", "x")],
            "datasets": _scale_datasets(n_levels, mpp, channel=False),
            "type": how,
        }
    ]


def label_attrs(name: str, n_levels: int, mpp: float | None) -> dict:
    """NGFF 0.5 "ome" attribute of a 0/1 label image under ``labels/``."""
    return {
        "version": "0.5",
        "multiscales": _plane_multiscales(name, n_levels, mpp, "max"),
        "image-label": {
            "version": "0.5",
            "colors": [{"label-value": 1, "rgba": [255, 0, 255, 255]}],
            "source": {"image": "../../"},
        },
    }


def extra_image_attrs(name: str, n_levels: int, mpp: float | None) -> dict:
    """NGFF 0.5 "ome" attribute of a float map under ``extras/``."""
    return {"version": "0.5", "multiscales": _plane_multiscales(name, n_levels, mpp, "mean")}


# Where each kind of extra output lives in the store, and its dtype and downsampling.
EXTRA_LAYOUT = {"labels": ("labels", np.uint8, "max"), "image": ("extras", np.float32, "mean")}


def _aligned_axis(chunks: tuple[int, ...], tile: int) -> tuple[int, ...] | int:
    """Keep chunking whose inner boundaries fall on tile multiples, else regular tiles.

    Aligned dask chunks cover whole zarr chunks, so concurrent stores never
    touch the same chunk and need no lock.
    """
    bounds = np.cumsum(chunks)[:-1]
    if np.all(bounds % tile == 0):
        return chunks
    return tile


def as_aligned_dask(image, tile: int) -> da.Array:
    """A Y×X[×3] dask view of `image` whose chunks line up with (tile, tile) zarr chunks."""
    rest = tuple(image.shape[2:])
    if not isinstance(image, da.Array):
        # name=False: hashing a large in-memory array to name it costs seconds.
        image = da.from_array(image, chunks=(tile, tile, *rest), name=False)
    target = (_aligned_axis(image.chunks[0], tile), _aligned_axis(image.chunks[1], tile), *rest)
    if target != image.chunks:
        image = image.rechunk(target)
    return image


# Upper bound on the pixels one `da.store` call covers. The scheduler normally
# keeps only a few chunks alive; the bound makes that a guarantee whatever the
# graph's ordering, while keeping the calls few (each one synchronises the
# workers and optimises the graph anew).
STRIP_BYTES = 256 * 2**20


def row_strips(row_chunks: tuple[int, ...], row_bytes: int) -> Iterator[tuple[int, int]]:
    """Runs of whole chunk rows, each under STRIP_BYTES and an eighth of the image
    (so progress moves), at least one chunk row."""
    limit = min(STRIP_BYTES, sum(row_chunks) * row_bytes // 8)
    y0 = y = 0
    for c in row_chunks:
        if y > y0 and (y + c - y0) * row_bytes > limit:
            yield y0, y
            y0 = y
        y += c
    yield y0, y


def _store_yxc(image: da.Array, target: zarr.Array, progress=None) -> None:
    """Store a tile-aligned Y×X×3 dask array into a (3, Y, X) zarr array, in row strips.

    progress: called with (rows done, rows) after every strip.
    """
    row_bytes = image.shape[1] * image.shape[2] * image.dtype.itemsize
    for y0, y1 in row_strips(image.chunks[0], row_bytes):
        strip = image[y0:y1].transpose(2, 0, 1)
        da.store(strip, target, regions=(slice(None), slice(y0, y1), slice(None)), lock=False)
        if progress is not None:
            progress(y1, image.shape[0])


class ZarrPyramid:
    """An OME-Zarr pyramid being written: create, fill level 0, then `finalize`.

    Typical use (this is what `write_pyramid` does)::

        pyr = ZarrPyramid.create("out.ome.zarr", (h, w), mpp=0.5)
        pyr.write_level0(dask_image)        # or pyr.write_region(tile, y, x) per tile
        pyr.finalize()                      # lower levels + NGFF metadata

    A killed run can reopen the store with `ZarrPyramid.open` and carry on:
    chunks already on disk are complete tiles.
    """

    def __init__(self, group: zarr.Group, path: Path):
        plan = group.attrs.get(PLAN_KEY)
        if not isinstance(plan, dict) or "shape" not in plan:
            raise SlideWriteError(f"{path}: not a pyramid store created by napari-stainfuser")
        self.group = group
        self.path = path
        self.shape: tuple[int, int] = tuple(plan["shape"])
        self.mpp: float | None = plan["mpp"]
        self.tile: int = plan["tile"]
        self.name: str = plan["name"]
        self.level_shapes = [tuple(s) for s in plan["level_shapes"]]
        self.levels: list[zarr.Array] = [
            group[str(k)].with_config(_ARRAY_CONFIG) for k in range(len(self.level_shapes))
        ]
        # Extra outputs (name -> kind) and their levels, (y, x) each.
        self.extras: dict[str, str] = {e["name"]: e["kind"] for e in plan.get("extras", [])}
        self.extra_levels: dict[str, list[zarr.Array]] = {
            name: [
                group[f"{EXTRA_LAYOUT[kind][0]}/{name}/{k}"].with_config(_ARRAY_CONFIG)
                for k in range(len(self.level_shapes))
            ]
            for name, kind in self.extras.items()
        }

    @classmethod
    def create(
        cls,
        path: str | Path,
        shape: Sequence[int],
        *,
        mpp: float | None = None,
        tile: int = 512,
        compression: str | None = "zstd",
        compression_level: int | None = None,
        name: str | None = None,
        min_size: int = MIN_LEVEL_SIZE,
        extras: Sequence = (),
    ) -> ZarrPyramid:
        """Create an empty pyramid for a level 0 of `shape` (Y, X[, 3]) at `path` (must not exist).

        extras: extra outputs (objects with ``name`` and ``kind``, see
        :class:`~napari_stainfuser.stainer.ExtraOutput`): "labels" ones get a
        uint8 label pyramid under ``labels/<name>``, "image" ones a float32
        pyramid under ``extras/<name>``, with the same levels and tiles.
        """
        path = Path(path)
        check_mpp(mpp)
        check_tile(tile)
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3):
            raise ParameterError(f"shape: expected (Y, X) or (Y, X, 3), got {tuple(shape)}")
        if min(shape[:2]) < 1:
            raise ParameterError(f"shape: image is empty: {tuple(shape)}")
        if path.exists():
            raise SlideWriteError(f"{path}: already exists")
        compressors = zarr_compressors(compression, compression_level)
        shapes = level_shapes(shape, min_size)
        name = name or path.name.split(".")[0]
        with io_errors(path):
            group = zarr.open_group(zarr.storage.LocalStore(path), mode="w-", zarr_format=3)
            for k, (h, w) in enumerate(shapes):
                group.create_array(
                    str(k),
                    shape=(3, h, w),
                    chunks=(3, tile, tile),
                    dtype=np.uint8,
                    fill_value=0,
                    compressors=compressors,
                    dimension_names=("c", "y", "x"),
                    config=_ARRAY_CONFIG,
                )
            described = [{"name": e.name, "kind": e.kind} for e in extras]
            for e in described:
                where, dtype, _ = EXTRA_LAYOUT[e["kind"]]
                for k, (h, w) in enumerate(shapes):
                    group.create_array(
                        f"{where}/{e['name']}/{k}",
                        shape=(h, w),
                        chunks=(tile, tile),
                        dtype=dtype,
                        fill_value=0,
                        compressors=compressors,
                        dimension_names=("y", "x"),
                        config=_ARRAY_CONFIG,
                    )
            group.attrs[PLAN_KEY] = {
                "extras": described,
                "shape": list(shapes[0]),
                "level_shapes": [list(s) for s in shapes],
                "mpp": None if mpp is None else float(mpp),
                "tile": int(tile),
                "name": name,
                "complete": False,
            }
        return cls(group, path)

    @classmethod
    def open(cls, path: str | Path) -> ZarrPyramid:
        """Reopen a pyramid created by `create` (complete or not), e.g. to resume writing."""
        path = Path(path)
        if not path.is_dir():
            raise SlideWriteError(f"{path}: no such pyramid store")
        try:
            group = zarr.open_group(zarr.storage.LocalStore(path), mode="r+", zarr_format=3)
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise SlideWriteError(f"{path}: not a zarr v3 store ({e})") from e
        return cls(group, path)

    @property
    def provenance(self) -> dict | None:
        """The provenance record stored with this pyramid, if any."""
        return from_attrs(self.group.attrs, str(self.path))

    @provenance.setter
    def provenance(self, record: dict | None) -> None:
        if record is None:
            self.group.attrs.pop(ATTRS_KEY, None)
        else:
            self.group.attrs[ATTRS_KEY] = record

    @property
    def complete(self) -> bool:
        """True once `finalize` has built the lower levels and written the NGFF metadata."""
        return bool(self.group.attrs[PLAN_KEY].get("complete"))

    def level(self, k: int) -> da.Array:
        """Level `k` as a lazy Y×X×3 dask array (chunks (tile, tile, 3))."""
        return da.from_zarr(self.levels[k]).transpose(1, 2, 0)

    def extra_level(self, name: str, k: int) -> da.Array:
        """Level `k` of extra output `name` as a lazy Y×X dask array."""
        return da.from_zarr(self.extra_levels[name][k])

    def written_tiles(self) -> set[tuple[int, int]]:
        """(row, column) indices of the level-0 tiles already on disk.

        Each chunk file is written under a temporary name and renamed by
        zarr's LocalStore, and empty chunks are stored too, so a listed tile
        is a complete one: a resumed run can skip exactly these.
        """
        # Default v3 chunk keys: "0/c/<channel block>/<row>/<column>".
        root = self.path / "0" / "c" / "0"
        done = set()
        if root.is_dir():
            for row in os.scandir(root):
                if row.is_dir() and row.name.isdigit():
                    done.update(
                        (int(row.name), int(c.name)) for c in os.scandir(row) if c.name.isdigit()
                    )
        return done

    def write_region(self, data, y: int, x: int, extras: dict | None = None) -> None:
        """Write a h×w×3 uint8 block into level 0 with its top-left corner at (y, x).

        extras: name -> h×w block of each extra output (written first, so a
        level-0 image chunk on disk means its extras are there too).
        Blocks aligned to the tile grid are committed chunk by chunk; an
        unaligned block rewrites the chunks it overlaps (read-modify-write),
        so concurrent writers must use disjoint, aligned blocks.
        """
        data = np.asarray(data)
        h, w = self.shape
        if data.ndim != 3 or data.shape[2] != 3 or data.dtype != np.uint8:
            raise ParameterError(
                f"data: expected an h×w×3 uint8 block, got {data.shape} {data.dtype}"
            )
        if y < 0 or x < 0 or y + data.shape[0] > h or x + data.shape[1] > w:
            raise ParameterError(
                f"region: block of {data.shape[:2]} at ({y}, {x}) falls outside level 0 of {(h, w)}"
            )
        missing = set(self.extras) - set(extras or {})
        if missing:
            raise ParameterError(f"extras: missing {sorted(missing)} for the block at ({y}, {x})")
        with io_errors(self.path):
            for name, plane in (extras or {}).items():
                arr = self.extra_levels[name][0]
                plane = np.asarray(plane, dtype=arr.dtype).reshape(data.shape[:2])
                arr[y : y + data.shape[0], x : x + data.shape[1]] = plane
            self.levels[0][:, y : y + data.shape[0], x : x + data.shape[1]] = data.transpose(
                2, 0, 1
            )

    def write_level0(self, image, progress=None) -> None:
        """Stream a whole Y×X×3 uint8 image (dask or numpy) into level 0, in row strips.

        progress: called with (rows done, rows) after every strip.
        """
        if tuple(image.shape[:2]) != self.shape:
            raise ParameterError(
                f"image: shape {image.shape[:2]} does not match the pyramid's {self.shape}"
            )
        with io_errors(self.path):
            _store_yxc(as_aligned_dask(image, self.tile), self.levels[0], progress)

    def build_lower_levels(self) -> None:
        """Derive levels 1… from the level above, read back from the store.

        Reading the stored level (not a dask graph rooted at level 0) means
        level 0 is never recomputed; the pixels equal what `build_pyramid`
        gives for the same level 0, so the reader and the writer agree.
        """
        with io_errors(self.path):
            for k in range(1, len(self.levels)):
                lower = downsample2x(self.level(k - 1), target_chunk=self.tile)
                _store_yxc(as_aligned_dask(lower, self.tile), self.levels[k])
            for name, kind in self.extras.items():
                how = EXTRA_LAYOUT[kind][2]
                for k in range(1, len(self.levels)):
                    lower = downsample2x(self.extra_level(name, k - 1), self.tile, how)
                    da.store(
                        as_aligned_dask(lower, self.tile), self.extra_levels[name][k], lock=False
                    )

    def finalize(self) -> None:
        """Build the lower levels and write the NGFF metadata that marks the image complete."""
        self.build_lower_levels()
        with io_errors(self.path):
            n = len(self.levels)
            labels = [name for name, kind in self.extras.items() if kind == "labels"]
            for name, kind in self.extras.items():
                where = EXTRA_LAYOUT[kind][0]
                attrs = (label_attrs if kind == "labels" else extra_image_attrs)(name, n, self.mpp)
                self.group[f"{where}/{name}"].attrs["ome"] = attrs
            if labels:
                self.group["labels"].attrs["ome"] = {"version": "0.5", "labels": labels}
            plan = dict(self.group.attrs[PLAN_KEY], complete=True)
            self.group.attrs.update({"ome": ngff_attrs(n, self.mpp, self.name), PLAN_KEY: plan})
