"""Lazy results: dask arrays whose chunks are stained through the engine.

:class:`StainedLevel` puts a :class:`~.plan.TilePlan` in front of an
:class:`~napari_stainfuser.engine.Engine` and a :class:`~.store.ResultStore`.
Its ``array`` is a Y×X×3 uint8 dask array; computing a chunk fetches the
stained tiles the chunk needs from memory, else from the on-disk tile cache,
else from the engine, and assembles them (blend, resample, tissue switch).
A viewer first calls :meth:`StainedLevel.request` for the visible region at
high priority, which returns at once, and refreshes when the futures land.

:class:`ResultPyramid` does this for every level of a slide with one engine,
so a whole pyramid is browsable before anything has been computed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path

import dask.array as da
import numpy as np

from ..engine import BACKGROUND, VISIBLE, Engine
from .plan import TilePlan
from .store import ResultStore, TileCache
from .tissue import detect_tissue

_ids = itertools.count()
_DISK: ThreadPoolExecutor | None = None
_DISK_LOCK = threading.Lock()


def _disk_pool() -> ThreadPoolExecutor:
    global _DISK
    with _DISK_LOCK:
        if _DISK is None:
            _DISK = ThreadPoolExecutor(2, thread_name_prefix="stainfuser-cache")
        return _DISK


def _completed(value) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


class StainedLevel:
    """Stained output of one slide level, computed on demand.

    Parameters
    ----------
    plan:
        How the level is tiled for the stainer.
    engine:
        The engine that runs the stainer (shared by all levels).
    store:
        In-memory LRU shared by all levels.
    cache:
        Optional on-disk :class:`TileCache` for this plan.
    chunk:
        Chunk edge of :attr:`array`; default: the tile step (each chunk then
        needs at most four tiles).
    name:
        Key prefix for the engine and the store; must be unique per level.
    """

    def __init__(
        self,
        plan: TilePlan,
        engine: Engine,
        store: ResultStore | None = None,
        *,
        cache: TileCache | None = None,
        chunk: int | None = None,
        name: str | None = None,
    ):
        self.plan = plan
        self.engine = engine
        self.store = store if store is not None else ResultStore()
        self.cache = cache
        self.name = name or f"stained-{next(_ids)}"
        step = plan.grid.step if plan.factor == 1.0 else 512
        self.chunk = int(chunk or step)
        self._lock = threading.Lock()
        self._inflight: dict[tuple[int, int], Future] = {}
        self._array: da.Array | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.plan.shape, 3)

    def _key(self, r: int, c: int):
        return (self.name, r, c)

    def tile_future(self, r: int, c: int, priority: float = BACKGROUND) -> Future:
        """A future of the stained tile (r, c) (tile × tile × 3 uint8).

        Already computed tiles come back as completed futures; others are
        queued on the engine at ``priority`` (or raised to it if queued).
        """
        rc = (r, c)
        with self._lock:
            hit = self.store.get(self._key(r, c))
            if hit is not None:
                return _completed(hit)
            fut = self._inflight.get(rc)
            if fut is not None and not fut.cancelled():
                self.engine.prioritise([self._key(r, c)], priority)
                return fut
            if self.cache is not None and self.cache.has(r, c):
                # Decoding from disk is I/O too: not on the caller's thread.
                fut = _disk_pool().submit(self._from_disk, rc)
                self._inflight[rc] = fut
                return fut
            efut = self.engine.submit(self._key(r, c), lambda: self.plan.load(r, c), priority)
            # Unwrap TileOutput so callers get the array.
            fut = Future()
            self._inflight[rc] = fut

            def done(ef, fut=fut):
                # Runs on the engine thread as the result is set, before the
                # engine forgets the key: store first, then resolve, then drop
                # the in-flight entry, so a tile is never computed twice.
                try:
                    if ef.cancelled():
                        fut.cancel()
                        fut.set_running_or_notify_cancel()
                    elif ef.exception() is not None:
                        fut.set_exception(ef.exception())
                    else:
                        tile = ef.result().tile
                        self.store.put(self._key(*rc), tile)
                        if self.cache is not None:
                            self.cache.write(*rc, tile)
                        fut.set_result(tile)
                except Exception as exc:  # e.g. the disk cache is full
                    if not fut.done():
                        fut.set_exception(exc)
                finally:
                    with self._lock:
                        if self._inflight.get(rc) is fut:
                            del self._inflight[rc]

            efut.add_done_callback(done)
            return fut

    def _from_disk(self, rc) -> np.ndarray:
        try:
            tile = self.cache.read(*rc)
            self.store.put(self._key(*rc), tile)
            return tile
        finally:
            with self._lock:
                self._inflight.pop(rc, None)

    def get_tile(self, r: int, c: int, priority: float = BACKGROUND) -> np.ndarray:
        """The stained tile (r, c), computing it if needed (blocks)."""
        while True:
            fut = self.tile_future(r, c, priority)
            if not fut.cancelled():
                try:
                    return fut.result()
                except CancelledError:
                    pass
            # Someone cancelled the shared request; ask again for ourselves.

    def request(
        self, y0: int, y1: int, x0: int, x1: int, priority: float = VISIBLE
    ) -> list[Future]:
        """Queue the tiles the box [y0, y1) × [x0, x1) needs; returns at once."""
        return [self.tile_future(r, c, priority) for r, c in self.plan.tiles_for(y0, y1, x0, x1)]

    def cancel_pending(self, keep: tuple[int, int, int, int] | None = None) -> int:
        """Drop queued tiles of this level, except those the box ``keep`` needs."""
        keep_set = set() if keep is None else set(self.plan.tiles_for(*keep))
        with self._lock:
            keys = [self._key(*rc) for rc in self._inflight if rc not in keep_set]
        return self.engine.cancel(keys)

    def region(
        self, y0: int, y1: int, x0: int, x1: int, priority: float = BACKGROUND
    ) -> np.ndarray:
        """The stained box [y0, y1) × [x0, x1) (blocks until computed)."""
        for f in self.request(y0, y1, x0, x1, priority):
            f.exception()  # wait; errors surface in get_tile below
        return self.plan.assemble(y0, y1, x0, x1, lambda r, c: self.get_tile(r, c, priority))

    @property
    def array(self) -> da.Array:
        """The whole level as a lazy dask array chunked ``chunk × chunk × 3``."""
        if self._array is None:
            h, w = self.plan.shape
            chunks = (_split(h, self.chunk), _split(w, self.chunk), (3,))
            name = f"{self.name}-{hashlib.sha1(self.name.encode()).hexdigest()[:8]}"
            dsk = {}
            ys = np.cumsum((0,) + chunks[0])
            xs = np.cumsum((0,) + chunks[1])
            for i in range(len(chunks[0])):
                for j in range(len(chunks[1])):
                    box = (int(ys[i]), int(ys[i + 1]), int(xs[j]), int(xs[j + 1]))
                    dsk[(name, i, j, 0)] = (self.region, *box)
            self._array = da.Array(dsk, name, chunks, dtype=np.uint8)
        return self._array


def _split(size: int, step: int) -> tuple[int, ...]:
    n, rest = divmod(size, step)
    return (step,) * n + ((rest,) if rest else ())


class ResultPyramid:
    """Lazy stained pyramid of a slide: one :class:`StainedLevel` per level.

    Parameters
    ----------
    slide:
        Anything with ``.levels`` (Y×X×3 arrays, finest first) and ``.mpp``
        (µm/px of level 0, or None).
    stainer:
        The stainer; an :class:`Engine` is started for it unless ``engine`` is given.
    tissue:
        True to detect tissue once on the slide's overview, a
        :class:`~.tissue.TissueSwitch` already made for it (see
        :func:`~.tissue.detect_tissue`), or None/False to stain everything.
    cache_dir:
        Directory for on-disk tile caches (one per level, named by a
        fingerprint of the stainer, the slide and the tiling), or None.
    stainer_id:
        What identifies the stainer in that fingerprint (e.g. its method and
        target); required with ``cache_dir``.
    native_coarse:
        Levels much coarser than the stainer's working µm/px are stained at
        their own resolution (a preview) instead of being upsampled back to
        full working resolution, which would cost as much as level 0.
    """

    def __init__(
        self,
        slide,
        stainer,
        *,
        engine: Engine | None = None,
        tissue=None,
        tile: int | None = None,
        overlap: int | None = None,
        seed: int = 0,
        window: str = "cosine",
        store: ResultStore | None = None,
        cache_dir: str | Path | None = None,
        stainer_id: str | None = None,
        native_coarse: bool = True,
    ):
        self.slide = slide
        self.engine = engine or Engine(stainer)
        self._own_engine = engine is None
        self.store = store or ResultStore()
        spec = stainer.spec
        if tissue is True:
            tissue = detect_tissue(slide)
        elif tissue is False:
            tissue = None
        if cache_dir is not None and not stainer_id:
            from ..errors import ParameterError

            raise ParameterError("stainer_id: needed to name an on-disk cache")
        levels = list(slide.levels)
        mpp0 = getattr(slide, "mpp", None)
        self.levels: list[StainedLevel] = []
        for k, level in enumerate(levels):
            mpp = None if not mpp0 else mpp0 * levels[0].shape[1] / level.shape[1]
            if native_coarse and k > 0 and mpp and spec.mpp and mpp > 1.5 * spec.mpp:
                mpp = None
            plan = TilePlan(
                level, spec, tile=tile, overlap=overlap, mpp=mpp, tissue=tissue,
                seed=seed, window=window,
            )  # fmt: skip
            cache = None
            if cache_dir is not None:
                fp = {
                    "stainer": stainer_id,
                    "slide": str(getattr(slide, "path", "")),
                    "level": k,
                    **plan.describe(),
                }
                digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:20]
                cache = TileCache.open(
                    Path(cache_dir) / f"{digest}.zarr", plan.grid.n_rows, plan.grid.n_cols,
                    plan.tile, fp,
                )  # fmt: skip
            self.levels.append(
                StainedLevel(plan, self.engine, self.store, cache=cache, name=f"L{k}-{next(_ids)}")
            )

    @property
    def arrays(self) -> list[da.Array]:
        """The lazy levels, finest first (what a napari multiscale layer takes)."""
        return [lv.array for lv in self.levels]

    def close(self) -> None:
        """Cancel queued work and stop the engine if this pyramid started it."""
        for lv in self.levels:
            lv.cancel_pending()
        if self._own_engine:
            self.engine.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
