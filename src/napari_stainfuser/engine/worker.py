"""The device worker: one thread owns the stainer and drains a priority queue.

Callers submit tile requests (a key, a ``load`` callable that reads the
pixels, and a priority) from any thread and get a
:class:`concurrent.futures.Future` back at once; nothing they call waits on
the device. The worker takes the most urgent requests, batches those of the
same priority up to the device's batch size, runs the stainer and resolves
the futures. A failing batch fails only its own futures; the worker carries on.

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

from ..stainer import Stainer

log = logging.getLogger(__name__)

# Conventional priorities; any number works, lower is sooner.
VISIBLE = 0
NEARBY = 1
BACKGROUND = 2


@dataclass(frozen=True)
class TileOutput:
    """A stained tile (H×W×3 uint8) and its extra outputs (name -> k×H×W)."""

    tile: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineProgress:
    """Counts since the engine started; ``tiles_per_s`` over the busy time."""

    done: int
    failed: int
    cancelled: int
    pending: int
    submitted: int
    tiles_per_s: float

    @property
    def eta_s(self) -> float | None:
        if self.tiles_per_s <= 0:
            return None
        return self.pending / self.tiles_per_s


@dataclass
class _Request:
    key: Hashable
    load: Callable[[], tuple]
    priority: float
    seq: int
    future: Future


def stain_batch(
    stainer: Stainer, tiles: list[np.ndarray], noises: list | None = None
) -> list[TileOutput]:
    """Run ``stainer`` once on same-shaped H×W×3 uint8 tiles (and their noise).

    The one place where numpy tiles become a B×3×H×W tensor and back; the
    engine and the batch runner both go through it.
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
    y = y.permute(0, 2, 3, 1).cpu().numpy()
    extras = {k: v.cpu().numpy() for k, v in res.extras.items()}
    return [
        TileOutput(
            np.ascontiguousarray(y[i]), {k: np.ascontiguousarray(v[i]) for k, v in extras.items()}
        )
        for i in range(len(tiles))
    ]


class Engine:
    """Runs ``stainer`` on one worker thread, serving tile requests by priority.

    Parameters
    ----------
    stainer:
        Any :class:`~napari_stainfuser.stainer.Stainer`.
    batch_size:
        Tiles per device call; defaults to ``stainer.spec.batch_size``.
    on_progress:
        ``callable(EngineProgress)`` after every batch (worker thread).
    on_error:
        ``callable(keys, exception)`` for every failed batch or tile load
        (worker thread). Failures are also set on the futures.
    loaders:
        Threads that read tile pixels for a batch in parallel (I/O, decoding).

    Each request's ``load()`` returns ``(tile, noise)``: an H×W×3 uint8 array
    and the initial latent noise (C×h×w float32) or None.
    """

    def __init__(
        self,
        stainer: Stainer,
        *,
        batch_size: int | None = None,
        on_progress: Callable[[EngineProgress], None] | None = None,
        on_error: Callable[[list, BaseException], None] | None = None,
        loaders: int = 2,
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
        self._busy_s = 0.0
        self._loader = ThreadPoolExecutor(max(1, loaders), thread_name_prefix=f"{name}-load")
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- calling side (any thread) -------------------------------------------------

    def submit(self, key: Hashable, load: Callable[[], tuple], priority: float = VISIBLE) -> Future:
        """Queue one tile; returns its future at once.

        A key that is already queued or running is not queued twice: its
        existing future is returned and its priority raised to ``priority``
        if that is more urgent.
        """
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
            req = _Request(key, load, priority, -1, Future())
            self._pending[key] = req
            self._counts["submitted"] += 1
            self._push(req, priority)
            return req.future

    def prioritise(self, keys: Iterable[Hashable], priority: float) -> int:
        """Move queued requests to ``priority`` (either way); returns how many moved."""
        n = 0
        with self._cv:
            for key in keys:
                req = self._pending.get(key)
                if req is not None and req.priority != priority:
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
                    n += 1
            self._counts["cancelled"] += n
            self._cv.notify_all()
            # Stale heap entries are skipped lazily; rebuild when mostly stale.
            if len(self._heap) > 2 * len(self._pending) + 64:
                self._heap = [e for e in self._heap if self._is_live(e)]
                heapq.heapify(self._heap)
        return n

    def pending(self) -> int:
        with self._cv:
            return len(self._pending)

    def progress(self) -> EngineProgress:
        with self._cv:
            return self._progress_locked()

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
        """Stop the worker. Queued requests are cancelled (or, with
        ``cancel_pending=False``, finished first). Joins the thread if ``wait``."""
        if cancel_pending:
            self.cancel()
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        # From a callback on the worker itself there is nothing to wait for.
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()
            self._loader.shutdown(wait=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

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
            if batch and entry[0] != batch[0].priority:
                break
            heapq.heappop(self._heap)
            req = self._pending.pop(entry[2])
            # False when the caller cancelled the future itself.
            if req.future.set_running_or_notify_cancel():
                self._running[req.key] = req
                batch.append(req)
            else:
                self._counts["cancelled"] += 1
        return batch

    def _progress_locked(self) -> EngineProgress:
        c = self._counts
        rate = c["done"] / self._busy_s if self._busy_s > 0 else 0.0
        return EngineProgress(
            c["done"], c["failed"], c["cancelled"], len(self._pending), c["submitted"], rate
        )

    # -- worker thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._pending:
                    self._cv.wait()
                if self._stop and not self._pending:
                    break
                batch = self._take_batch()
            if batch:
                t0 = time.perf_counter()
                self._process(batch)
                with self._cv:
                    self._busy_s += time.perf_counter() - t0
                    for req in batch:
                        self._running.pop(req.key, None)
                    progress = self._progress_locked()
                    self._cv.notify_all()
                self._notify(self.on_progress, progress)

    def _fail(self, reqs: list[_Request], exc: BaseException) -> None:
        for req in reqs:
            req.future.set_exception(exc)
        with self._cv:
            self._counts["failed"] += len(reqs)
        log.warning("stainer failed on %d tile(s) %s: %s", len(reqs), [r.key for r in reqs], exc)
        self._notify(self.on_error, [r.key for r in reqs], exc)

    def _notify(self, fn, *args) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:  # a broken callback must not stop the device
            log.exception("engine callback %r raised", fn)

    def _process(self, batch: list[_Request]) -> None:
        loads = [self._loader.submit(req.load) for req in batch]
        groups: dict[tuple, list[tuple[_Request, np.ndarray, np.ndarray | None]]] = {}
        for req, fut in zip(batch, loads, strict=True):
            try:
                tile, noise = fut.result()
                tile = np.asarray(tile)
                if tile.ndim != 3 or tile.shape[2] != 3 or tile.dtype != np.uint8:
                    raise ValueError(
                        f"tile {req.key!r}: expected H×W×3 uint8, got {tile.shape} {tile.dtype}"
                    )
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
