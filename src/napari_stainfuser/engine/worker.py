"""The device worker: a thread that owns the stainer and drains a priority queue.

Callers submit requests from any thread and get a
:class:`concurrent.futures.Future` back at once; nothing they call waits on
the device. A request is one tile (``submit``: its ``load`` returns
``(tile, noise)``) or a fixed group of tiles (``submit_group``: its ``load``
returns a list of them), which is always stained as one batch, alone: a
whole-slide job's groups are fixed by its plan, so a model sees the same
batches whoever runs them. The worker takes the most urgent requests,
batches single tiles of the same priority up to the device's batch size,
runs the stainer and resolves the futures. A failing batch fails only its
own futures; the worker carries on.

Priorities are numbers, lower runs sooner (0 = visible on screen). A batch
only ever holds requests of one priority, so a visible tile never waits
behind a batch that is being filled with background prefetch.

No Qt here: the napari layer binds to the futures and to ``on_progress``,
both of which fire on the worker thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from ..progress import Progress
from ..stainer import Stainer

log = logging.getLogger(__name__)

# Conventional priorities; any number works, lower is sooner.
VISIBLE = 0
NEARBY = 1
BACKGROUND = 2


@dataclass(frozen=True)
class TileOutput:
    """A stained tile (H×W×3 uint8) and its extra outputs (name -> H×W float32)."""

    tile: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class _Request:
    key: Hashable
    load: Callable[[], object]
    priority: float
    seq: int
    future: Future
    size: int = 1
    group: bool = False


def stain_batch(
    stainer: Stainer, tiles: list[np.ndarray], noises: list | None = None
) -> list[TileOutput]:
    """Run ``stainer`` once on same-shaped H×W×3 uint8 tiles (and their noise).

    The one place where numpy tiles become a B×3×H×W tensor and back; the
    engine and the batch runner both go through it. Each extra output comes
    back as one H×W float32 plane per tile.
    """
    x = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).contiguous()
    noise = None
    if noises is not None and noises[0] is not None:
        noise = torch.from_numpy(np.stack(noises))
    with torch.inference_mode():
        res = stainer.stain(x, noise=noise)
    y = res.tiles
    if tuple(y.shape) != tuple(x.shape) or y.dtype != torch.uint8:
        raise ValueError(
            f"stainer returned {tuple(y.shape)} {y.dtype} for input {tuple(x.shape)} uint8"
        )
    b, _, h, w = x.shape
    declared = {e.name for e in getattr(stainer.spec, "extras", ())}
    if declared - set(res.extras):
        raise ValueError(f"stainer did not return its extra outputs {sorted(declared)}")
    extras = {}
    for k, v in res.extras.items():
        if v.numel() != b * h * w:
            raise ValueError(
                f"extra output {k!r} has shape {tuple(v.shape)}, expected {b}×1×{h}×{w}"
            )
        extras[k] = v.reshape(b, h, w).float().cpu().numpy()
    y = y.permute(0, 2, 3, 1).cpu().numpy()
    return [
        TileOutput(
            np.ascontiguousarray(y[i]), {k: np.ascontiguousarray(v[i]) for k, v in extras.items()}
        )
        for i in range(len(tiles))
    ]


class Engine:
    """Runs ``stainer`` on worker threads, serving requests by priority.

    Parameters
    ----------
    stainer:
        Any :class:`~napari_stainfuser.stainer.Stainer`.
    batch_size:
        Tiles per device call; defaults to ``stainer.spec.batch_size``.
    on_progress:
        ``callable(Progress)`` after every batch (worker thread).
    on_error:
        ``callable(keys, exception)`` for every failed batch or tile load
        (worker thread). Failures are also set on the futures.
    loaders:
        Threads that read tile pixels for a batch in parallel (I/O, decoding).
    workers:
        Device threads. One owns a GPU; on a CPU, whole-slide runs use one
        per core (each with torch pinned to one thread).

    Each tile's ``load()`` returns ``(tile, noise)``: an H×W×3 uint8 array
    and the initial latent noise (C×h×w float32) or None.
    """

    def __init__(
        self,
        stainer: Stainer,
        *,
        batch_size: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_error: Callable[[list, BaseException], None] | None = None,
        loaders: int = 2,
        workers: int = 1,
        name: str = "stainfuser-engine",
    ):
        self.stainer = stainer
        self.batch_size = max(1, int(batch_size or stainer.spec.batch_size))
        self.on_progress = on_progress
        self.on_error = on_error
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Hashable]] = []
        self._pending: dict[Hashable, _Request] = {}
        self._running: dict[Hashable, _Request] = {}
        self._seq = itertools.count()
        self._stop = False
        self._counts = {"done": 0, "failed": 0, "cancelled": 0, "submitted": 0}
        self._active = 0
        self._busy_s = 0.0
        self._busy_since = 0.0
        self._t0 = time.perf_counter()
        self._loader = ThreadPoolExecutor(max(1, loaders), thread_name_prefix=f"{name}-load")
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(max(1, int(workers)))
        ]
        for t in self._threads:
            t.start()

    # -- calling side (any thread) -------------------------------------------------

    def submit(self, key: Hashable, load: Callable[[], tuple], priority: float = VISIBLE) -> Future:
        """Queue one tile; returns its future (of a :class:`TileOutput`) at once.

        A key that is already queued or running is not queued twice: its
        existing future is returned and its priority raised to ``priority``
        if that is more urgent.
        """
        return self._submit(key, load, priority, 1, False)

    def submit_group(
        self, key: Hashable, load: Callable[[], list], size: int, priority: float = VISIBLE
    ) -> Future:
        """Queue a fixed group of ``size`` tiles, stained as one batch of its own.

        ``load()`` returns a list of ``(tile, noise)``; the future's result is
        the list of :class:`TileOutput` in the same order.
        """
        return self._submit(key, load, priority, int(size), True)

    def _submit(self, key, load, priority, size, group) -> Future:
        with self._cv:
            if self._stop:
                raise RuntimeError("the engine has been shut down")
            running = self._running.get(key)
            if running is not None:
                return running.future
            req = self._pending.get(key)
            if req is not None:
                if priority < req.priority:
                    self._push(req, priority)
                return req.future
            req = _Request(key, load, priority, -1, Future(), size, group)
            self._pending[key] = req
            self._counts["submitted"] += size
            self._push(req, priority)
            return req.future

    def prioritise(
        self, keys: Iterable[Hashable], priority: float, raise_only: bool = False
    ) -> int:
        """Move queued requests to ``priority`` (either way, or with ``raise_only``
        only those now behind it); returns how many moved."""
        n = 0
        with self._cv:
            for key in keys:
                req = self._pending.get(key)
                if req is None or (raise_only and req.priority <= priority):
                    continue
                if req.priority != priority:
                    self._push(req, priority)
                    n += 1
        return n

    def cancel(self, keys: Iterable[Hashable] | None = None) -> int:
        """Drop queued requests (all of them when ``keys`` is None).

        Their futures are cancelled. Requests already on the device finish.
        Returns how many were dropped.
        """
        with self._cv:
            chosen = list(self._pending) if keys is None else list(keys)
            n = 0
            for key in chosen:
                req = self._pending.pop(key, None)
                if req is not None:
                    req.future.cancel()
                    self._counts["cancelled"] += req.size
                    n += 1
            self._cv.notify_all()
            # Stale heap entries are skipped lazily; rebuild when mostly stale.
            if len(self._heap) > 2 * len(self._pending) + 64:
                self._heap = [e for e in self._heap if self._is_live(e)]
                heapq.heapify(self._heap)
        return n

    def pending(self) -> int:
        with self._cv:
            return len(self._pending)

    def is_queued(self, key: Hashable) -> bool:
        with self._cv:
            return key in self._pending or key in self._running

    def progress(self, what: str = "slide") -> Progress:
        with self._cv:
            return self._progress_locked(what)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._pending or self._running:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def shutdown(self, wait: bool = True, cancel_pending: bool = True) -> None:
        """Stop the workers. Queued requests are cancelled (or, with
        ``cancel_pending=False``, finished first). Joins the threads if ``wait``."""
        if cancel_pending:
            self.cancel()
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        # From a callback on a worker itself there is nothing to wait for.
        if wait and threading.current_thread() not in self._threads:
            for t in self._threads:
                t.join()
            self._loader.shutdown(wait=True)

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    # -- queue internals (hold self._cv) --------------------------------------------

    def _push(self, req: _Request, priority: float) -> None:
        req.priority = priority
        req.seq = next(self._seq)
        heapq.heappush(self._heap, (priority, req.seq, req.key))
        self._cv.notify()

    def _is_live(self, entry) -> bool:
        req = self._pending.get(entry[2])
        return req is not None and req.seq == entry[1]

    def _take_batch(self) -> list[_Request]:
        batch: list[_Request] = []
        while self._heap and len(batch) < self.batch_size:
            entry = self._heap[0]
            if not self._is_live(entry):
                heapq.heappop(self._heap)
                continue
            req = self._pending[entry[2]]
            # A group is a batch of its own; single tiles batch with their priority.
            if batch and (req.group or entry[0] != batch[0].priority):
                break
            heapq.heappop(self._heap)
            del self._pending[entry[2]]
            # False when the caller cancelled the future itself.
            if req.future.set_running_or_notify_cancel():
                self._running[req.key] = req
                batch.append(req)
                if req.group:
                    break
            else:
                self._counts["cancelled"] += req.size
        return batch

    def _progress_locked(self, what: str) -> Progress:
        c = self._counts
        busy = self._busy_s + (time.perf_counter() - self._busy_since if self._active else 0.0)
        rate = c["done"] / busy if busy > 0 else 0.0
        total = c["submitted"] - c["cancelled"]
        elapsed = time.perf_counter() - self._t0
        return Progress("stain", c["done"], total, rate, elapsed, c["failed"], c["cancelled"], what)

    # -- worker threads ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._pending:
                    self._cv.wait()
                if self._stop and not self._pending:
                    break
                batch = self._take_batch()
                if batch:
                    if self._active == 0:
                        self._busy_since = time.perf_counter()
                    self._active += 1
            if batch:
                self._process(batch)
                with self._cv:
                    self._active -= 1
                    if self._active == 0:
                        self._busy_s += time.perf_counter() - self._busy_since
                    for req in batch:
                        self._running.pop(req.key, None)
                    what = "visible" if batch[0].priority <= VISIBLE else "prefetch"
                    progress = self._progress_locked(what)
                    self._cv.notify_all()
                self._notify(self.on_progress, progress)

    def _fail(self, reqs: list[_Request], exc: BaseException) -> None:
        for req in reqs:
            req.future.set_exception(exc)
        with self._cv:
            self._counts["failed"] += sum(r.size for r in reqs)
        log.warning("stainer failed on %d request(s) %s: %s", len(reqs), [r.key for r in reqs], exc)
        self._notify(self.on_error, [r.key for r in reqs], exc)

    def _notify(self, fn, *args) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:  # a broken callback must not stop the device
            log.exception("engine callback %r raised", fn)

    def _process(self, batch: list[_Request]) -> None:
        if batch[0].group:
            self._process_group(batch[0])
            return
        loads = [self._loader.submit(req.load) for req in batch]
        groups: dict[tuple, list[tuple[_Request, np.ndarray, np.ndarray | None]]] = {}
        for req, fut in zip(batch, loads, strict=True):
            try:
                tile, noise = fut.result()
                tile = _check_tile(req.key, tile)
            except Exception as exc:
                self._fail([req], exc)
                continue
            shape = (tile.shape, None if noise is None else np.shape(noise))
            groups.setdefault(shape, []).append((req, tile, noise))
        for items in groups.values():
            reqs = [it[0] for it in items]
            try:
                outputs = stain_batch(
                    self.stainer, [it[1] for it in items], [it[2] for it in items]
                )
            except Exception as exc:
                self._fail(reqs, exc)
                continue
            with self._cv:
                self._counts["done"] += len(reqs)
            for req, out in zip(reqs, outputs, strict=True):
                req.future.set_result(out)

    def _process_group(self, req: _Request) -> None:
        try:
            loaded = self._loader.submit(req.load).result()
            tiles = [_check_tile(req.key, t) for t, _ in loaded]
            outputs = stain_batch(self.stainer, tiles, [n for _, n in loaded]) if tiles else []
        except Exception as exc:
            self._fail([req], exc)
            return
        with self._cv:
            self._counts["done"] += req.size
        req.future.set_result(outputs)


def _check_tile(key, tile) -> np.ndarray:
    tile = np.asarray(tile)
    if tile.ndim != 3 or tile.shape[2] != 3 or tile.dtype != np.uint8:
        raise ValueError(f"tile {key!r}: expected H×W×3 uint8, got {tile.shape} {tile.dtype}")
    return tile
