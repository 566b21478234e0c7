"""Where stained tiles live once computed: an in-memory LRU and a zarr on disk.

:class:`~.memory.ResultStore` (in memory.py, which needs no zarr) keeps the
most recently used tiles within a byte budget, so panning back over a region
is instant and memory stays bounded.

:class:`TileCache` keeps stained tiles of one :class:`~.plan.TilePlan` on disk
as one zarr v3 array of shape (rows, cols, tile, tile, 3), one chunk per
tile. zarr's local store writes each chunk under a temporary name and renames
it, so a chunk file that exists is a complete tile: the set of chunk files is
the set of finished tiles. That makes the cache survive a killed process, a
new session (a region computed once is instant next time) and concurrent
writers on different tiles. The cache records a fingerprint of everything
that decides its pixels and refuses to be reopened for anything else.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from ..errors import ParameterError, SlideWriteError

FINGERPRINT_KEY = "napari_stainfuser_fingerprint"


class TileCache:
    """Stained tiles of one plan in a zarr v3 store at ``path`` (see module doc)."""

    def __init__(
        self, path: str | Path, array: zarr.Array, fingerprint: dict, extras: dict | None = None
    ):
        self.path = Path(path)
        self.array = array
        self.fingerprint = fingerprint
        self.extras: dict[str, zarr.Array] = extras or {}
        self.n_rows, self.n_cols, self.tile = (int(s) for s in array.shape[:3])

    @classmethod
    def open(
        cls,
        path: str | Path,
        n_rows: int,
        n_cols: int,
        tile: int,
        fingerprint: dict,
        *,
        compression_level: int = 1,
        extras: tuple[str, ...] = (),
    ) -> TileCache:
        """Open the cache at ``path``, creating it if absent.

        extras: names of a stainer's extra outputs, kept per tile beside it
        (float32 planes, before blending).
        An existing cache whose fingerprint differs raises ParameterError
        naming the first differing entries.
        """
        path = Path(path)
        fingerprint = json.loads(json.dumps(fingerprint))  # as stored: lists, not tuples
        try:
            if path.exists():
                group = zarr.open_group(zarr.storage.LocalStore(path), mode="r+", zarr_format=3)
                stored = group.attrs.get(FINGERPRINT_KEY)
                if stored != fingerprint:
                    raise ParameterError(
                        f"{path}: tile cache belongs to another run ({_diff(stored, fingerprint)})"
                    )
                arr = group["tiles"]
                extra = {n: group[f"extras/{n}"] for n in extras}
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                group = zarr.open_group(zarr.storage.LocalStore(path), mode="w-", zarr_format=3)
                arr = group.create_array(
                    "tiles",
                    shape=(n_rows, n_cols, tile, tile, 3),
                    chunks=(1, 1, tile, tile, 3),
                    dtype=np.uint8,
                    fill_value=0,
                    compressors=[ZstdCodec(level=compression_level)],
                    config={"write_empty_chunks": True},
                )
                extra = {
                    n: group.create_array(
                        f"extras/{n}",
                        shape=(n_rows, n_cols, tile, tile),
                        chunks=(1, 1, tile, tile),
                        dtype=np.float32,
                        fill_value=0,
                        compressors=[ZstdCodec(level=compression_level)],
                        config={"write_empty_chunks": True},
                    )
                    for n in extras
                }
                group.attrs[FINGERPRINT_KEY] = fingerprint
        except KeyError as e:
            raise ParameterError(f"{path}: tile cache lacks {e}; it belongs to another run") from e
        except OSError as e:
            raise SlideWriteError(f"{path}: cannot use tile cache: {e.strerror or e}") from e
        arr = arr.with_config({"write_empty_chunks": True})
        if tuple(arr.shape) != (n_rows, n_cols, tile, tile, 3):
            raise ParameterError(f"{path}: tile cache has shape {arr.shape}, expected another grid")
        extra = {n: a.with_config({"write_empty_chunks": True}) for n, a in extra.items()}
        return cls(path, arr, fingerprint, extra)

    def _chunk_file(self, r: int, c: int) -> Path:
        key = self.array.metadata.encode_chunk_key((r, c, 0, 0, 0))
        return self.path / "tiles" / key

    def has(self, r: int, c: int) -> bool:
        return self._chunk_file(r, c).is_file()

    def read(self, r: int, c: int) -> np.ndarray | None:
        """The stored tile, or None if it was never written."""
        if not self.has(r, c):
            return None
        return np.asarray(self.array[r, c])

    def read_extras(self, r: int, c: int) -> dict[str, np.ndarray]:
        """The stored extra outputs of tile (r, c): name -> tile × tile float32."""
        return {n: np.asarray(a[r, c]) for n, a in self.extras.items()}

    def write(self, r: int, c: int, tile: np.ndarray, extras: dict | None = None) -> None:
        """Store tile (r, c) and its extras; the tile goes last, as the mark of completion."""
        try:
            for n, a in self.extras.items():
                a[r, c] = np.asarray(extras[n], dtype=np.float32).reshape(a.shape[2:])
            self.array[r, c] = tile
        except OSError as e:
            raise SlideWriteError(
                f"{self.path}: cannot write tile ({r}, {c}): {e.strerror or e}"
            ) from e

    def done(self) -> set[tuple[int, int]]:
        """All tiles on disk (one directory listing per row)."""
        out = set()
        for r in range(self.n_rows):
            row_dir = self._chunk_file(r, 0).parent.parent.parent.parent
            if not row_dir.is_dir():
                continue
            for entry in row_dir.iterdir():
                if entry.name.isdigit() and self.has(r, int(entry.name)):
                    out.add((r, int(entry.name)))
        return out

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _diff(stored, wanted) -> str:
    if not isinstance(stored, dict):
        return "no fingerprint recorded"
    keys = sorted(set(stored) | set(wanted))
    diffs = [k for k in keys if stored.get(k) != wanted.get(k)]
    return "differs in " + ", ".join(
        f"{k}: {stored.get(k)!r} != {wanted.get(k)!r}" for k in diffs[:3]
    )
