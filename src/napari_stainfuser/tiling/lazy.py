"""Lazy results of a job: every level of a slide, stained on demand through the engine.

:class:`ResultPyramid` opens a :class:`~napari_stainfuser.job.SlideJob` (the
same fitting, tissue mask and plans a batch run uses) and puts one
:class:`StainedLevel` per slide level in front of one
:class:`~napari_stainfuser.engine.Engine` and one
:class:`~.memory.ResultStore`, so a whole pyramid is browsable before
anything has been computed.

A level answers in two ways:

- without waiting, for a viewer: :meth:`StainedLevel.ready` gives the
  tiles already in memory, :meth:`StainedLevel.request` queues the missing
  ones at a priority and returns at once;
- blocking, for scripts: :meth:`StainedLevel.region` and the dask
  :attr:`StainedLevel.array` compute what they need.

Per-pixel stainers are requested tile by tile (the engine batches them as it
likes: their output cannot depend on it). Other stainers are requested in the
job's fixed groups, the batches a whole-slide run stains, so what a viewer
shows is what the batch run writes.
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

from ..engine import BACKGROUND, VISIBLE, Engine, TileOutput
from .memory import ResultStore
from .store import TileCache

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
    batch_size:
        The job's group size (stainers that are not per-pixel).
    chunk:
        Chunk edge of :attr:`array`; default: the tile step (each chunk then
        needs at most four tiles).
    name:
        Key prefix for the engine and the store; must be unique per level.
    """

    def __init__(
        self,
        plan,
        engine: Engine,
        store: ResultStore | None = None,
        *,
        cache: TileCache | None = None,
        batch_size: int = 8,
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
        self.batch_size = max(1, int(batch_size))
        self._lock = threading.Lock()
        self._inflight: dict[tuple[int, int], Future] = {}
        self._groups: dict[tuple[int, int], int] | None = None
        self._group_tiles: list[list[tuple[int, int]]] = []
        self._array: da.Array | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.plan.shape, 3)

    def _key(self, r: int, c: int):
        return (self.name, r, c)

    def _group_of(self, r: int, c: int) -> int:
        """The index of the fixed group tile (r, c) is stained in (tissue tiles, raster order)."""
        with self._lock:
            if self._groups is None:
                tiles = self.plan.tissue_tiles()
                self._group_tiles = [
                    tiles[i : i + self.batch_size] for i in range(0, len(tiles), self.batch_size)
                ]
                self._groups = {rc: g for g, grp in enumerate(self._group_tiles) for rc in grp}
            return self._groups[(r, c)]

    # -- without waiting --------------------------------------------------------------

    def ready(self, r: int, c: int) -> TileOutput | None:
        """Tile (r, c) if it is in memory now, else None. Never waits."""
        return self.store.get(self._key(r, c))

    def request(
        self, y0: int, y1: int, x0: int, x1: int, priority: float = VISIBLE
    ) -> list[Future]:
        """Queue the tiles the box [y0, y1) × [x0, x1) needs; returns their futures at once."""
        return [self.tile_future(r, c, priority) for r, c in self.plan.tiles_for(y0, y1, x0, x1)]

    def tile_future(self, r: int, c: int, priority: float = BACKGROUND) -> Future:
        """A future of tile (r, c)'s :class:`TileOutput`.

        Tiles in memory come back as completed futures; tiles in the disk
        cache are read on a background thread; others are queued on the
        engine at ``priority`` (or raised to it if queued).
        """
        rc = (r, c)
        hit = self.store.get(self._key(r, c))
        if hit is not None:
            return _completed(hit)
        with self._lock:
            fut = self._inflight.get(rc)
            if fut is not None and not fut.cancelled():
                # Only ever raised here: asking for a ring at NEARBY must not
                # demote the visible tiles inside it.
                self.engine.prioritise([self._engine_key(rc)], priority, raise_only=True)
                return fut
            if self.cache is not None and self.cache.has(r, c):
                # Decoding from disk is I/O too: not on the caller's thread.
                fut = _disk_pool().submit(self._from_disk, rc)
                self._inflight[rc] = fut
                return fut
        if self.plan.per_pixel:
            return self._submit_tile(rc, priority)
        return self._submit_group(rc, priority)

    def _engine_key(self, rc):
        if self.plan.per_pixel or self._groups is None:
            return self._key(*rc)
        return (self.name, "group", self._groups.get(rc))

    def _submit_tile(self, rc, priority) -> Future:
        r, c = rc
        with self._lock:
            fut = self._inflight.get(rc)
            if fut is not None and not fut.cancelled():
                return fut
            fut = Future()
            self._inflight[rc] = fut
        efut = self.engine.submit(self._key(r, c), lambda: self.plan.load(r, c), priority)
        efut.add_done_callback(lambda ef: self._landed([rc], [fut], ef, single=True))
        return fut

    def _submit_group(self, rc, priority) -> Future:
        g = self._group_of(*rc)
        tiles = self._group_tiles[g]
        with self._lock:
            fut = self._inflight.get(rc)
            if fut is not None and not fut.cancelled():
                return fut
            futs = {t: self._inflight.get(t) for t in tiles}
            for t in tiles:
                if futs[t] is None or futs[t].cancelled():
                    futs[t] = Future()
                    self._inflight[t] = futs[t]
        order = [futs[t] for t in tiles]
        efut = self.engine.submit_group(
            (self.name, "group", g), lambda: [self.plan.load(*t) for t in tiles], len(tiles),
            priority,
        )  # fmt: skip
        efut.add_done_callback(lambda ef: self._landed(tiles, order, ef, single=False))
        return futs[rc]

    def _landed(self, tiles, futs, ef: Future, single: bool) -> None:
        # Runs on the engine thread as the result is set, before the engine
        # forgets the key: store first, then resolve, then drop the in-flight
        # entry, so a tile is never computed twice.
        try:
            if ef.cancelled():
                for f in futs:
                    if f.cancel():
                        f.set_running_or_notify_cancel()
                return
            if ef.exception() is not None:
                for f in futs:
                    if not f.done():
                        f.set_exception(ef.exception())
                return
            outs = [ef.result()] if single else ef.result()
            for rc, out, f in zip(tiles, outs, futs, strict=True):
                self.store.put(self._key(*rc), out)
                if self.cache is not None:
                    self.cache.write(*rc, out.tile, out.extras)
                if not f.done():
                    f.set_result(out)
        except Exception as exc:  # e.g. the disk cache is full
            for f in futs:
                if not f.done():
                    f.set_exception(exc)
        finally:
            with self._lock:
                for rc, f in zip(tiles, futs, strict=True):
                    if self._inflight.get(rc) is f:
                        del self._inflight[rc]

    def _from_disk(self, rc) -> TileOutput:
        try:
            out = TileOutput(self.cache.read(*rc), self.cache.read_extras(*rc))
            self.store.put(self._key(*rc), out)
            return out
        finally:
            with self._lock:
                self._inflight.pop(rc, None)

    def cancel_pending(self, keep: tuple[int, int, int, int] | None = None) -> int:
        """Drop queued tiles of this level, except those the box ``keep`` needs."""
        keep_set = set() if keep is None else set(self.plan.tiles_for(*keep))
        with self._lock:
            keys = {self._engine_key(rc) for rc in self._inflight if rc not in keep_set}
            if not self.plan.per_pixel and keep_set and self._groups is not None:
                keys -= {self._engine_key(rc) for rc in keep_set}
        return self.engine.cancel(keys)

    # -- blocking ------------------------------------------------------------------------

    def get(self, r: int, c: int, priority: float = BACKGROUND) -> TileOutput:
        """Tile (r, c), computing it if needed (blocks)."""
        while True:
            fut = self.tile_future(r, c, priority)
            if not fut.cancelled():
                try:
                    return fut.result()
                except CancelledError:
                    pass
            # Someone cancelled the shared request; ask again for ourselves.

    def region(
        self, y0: int, y1: int, x0: int, x1: int, priority: float = BACKGROUND
    ) -> np.ndarray:
        """The stained box [y0, y1) × [x0, x1) (blocks until computed)."""
        for f in self.request(y0, y1, x0, x1, priority):
            f.exception()  # wait; errors surface in get below
        return self.plan.assemble(y0, y1, x0, x1, lambda r, c: self.get(r, c, priority).tile)

    def extra_region(
        self, name: str, y0: int, y1: int, x0: int, x1: int, priority: float = BACKGROUND
    ) -> np.ndarray:
        """Extra output ``name`` over the box, blended like the image (blocks)."""
        for f in self.request(y0, y1, x0, x1, priority):
            f.exception()
        return self.plan.assemble_extra(
            y0, y1, x0, x1, lambda r, c: self.get(r, c, priority).extras[name]
        )

    @property
    def array(self) -> da.Array:
        """The whole level as a lazy dask array chunked ``chunk × chunk × 3`` (blocking chunks)."""
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
    """Lazy stained pyramid of a job's slide: one :class:`StainedLevel` per level.

    Parameters
    ----------
    job:
        A :class:`~napari_stainfuser.job.SlideJob` (opened here) or an
        :class:`~napari_stainfuser.job.OpenJob` already opened.
    engine:
        The engine to use; one is started for the job's stainer if None (and
        stopped by :meth:`close`).
    store:
        The in-memory LRU of stained tiles.
    cache_dir:
        Directory for on-disk tile caches (one per level, named by the job's
        fingerprint), or None.
    native_coarse:
        Levels much coarser than the stainer's working µm/px are stained at
        their own resolution (a preview) instead of being resampled up to
        full working resolution, which would cost as much as level 0.
    on_progress:
        Passed to the engine it starts.
    """

    def __init__(
        self,
        job,
        *,
        engine: Engine | None = None,
        store: ResultStore | None = None,
        cache_dir: str | Path | None = None,
        native_coarse: bool = True,
        on_progress=None,
        on_error=None,
    ):
        from ..job import OpenJob

        self.job = job if isinstance(job, OpenJob) else job.open()
        opened = self.job
        self.engine = engine or Engine(
            opened.stainer, batch_size=opened.batch_size, on_progress=on_progress,
            on_error=on_error,
        )  # fmt: skip
        self._own_engine = engine is None
        self.store = store or ResultStore()
        base = opened.identity() if cache_dir is not None else None
        self.levels: list[StainedLevel] = []
        for k in range(len(opened.source.levels)):
            plan = opened.plan_for(k, native_coarse=native_coarse)
            cache = None
            if cache_dir is not None:
                fp = {**base, "level": k, "plan": plan.describe()}
                digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:20]
                cache = TileCache.open(
                    Path(cache_dir) / f"{digest}.zarr", plan.grid.n_rows, plan.grid.n_cols,
                    plan.tile, fp, extras=tuple(e.name for e in opened.spec.extras),
                )  # fmt: skip
            self.levels.append(
                StainedLevel(
                    plan,
                    self.engine,
                    self.store,
                    cache=cache,
                    batch_size=opened.batch_size,
                    name=f"L{k}-{next(_ids)}",
                )  # fmt: skip
            )

    @property
    def stainer(self):
        return self.job.stainer

    @property
    def arrays(self) -> list[da.Array]:
        """The lazy levels, finest first (blocking dask arrays, for scripts)."""
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
