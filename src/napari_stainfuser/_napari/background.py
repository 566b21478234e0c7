"""Levels napari can slice at once whose pixels are made in the background.

napari slices layers on its UI thread. A lazy level whose pixels take time to
make (the synthetic sample renders its tissue on demand) would freeze the
viewer for as long as that takes, on every pan into new tissue. The levels of
a :class:`BackgroundPyramid` answer at once from the blocks already made. A
block not made yet shows the same place at the finest coarser level that has
it (a blurred stand-in, as map viewers show), or glass before any has, and is
made on a background thread, the view asked for last first. When blocks land,
the layers showing the pyramid are refreshed on the main thread, at most every
~100 ms.

Everything that must see the real pixels (a job's source, a target picked from
the layer, the QA metrics, the writer) reads :func:`pixels_of` a level, never
its stand-ins. No Qt at import: the refresh bridge is made by the pyramid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import weakref
from collections import OrderedDict

import numpy as np

from ..tiling.memory import ResultStore
from .viewport import index_box

log = logging.getLogger(__name__)

BLOCK = 512
SLICE_CHUNK = 256
CACHE_BYTES = 512 * 2**20
REFRESH_MS = 100
# Blocks asked for and not yet made, newest kept: a pan passes through views the
# camera does not rest on, and those are dropped rather than made.
MAX_WANTED = 256
# Stand-ins kept: 128 RGB blocks of BLOCK².
STAND_IN_BYTES = 128 * BLOCK * BLOCK * 3
# Above the priority of the UI thread (Linux niceness): on a small CPU the
# viewer's drawing comes first, the background's blocks after.
BACKGROUND_NICENESS = 10


def pixels_of(level):
    """The array behind a level of a layer: its real pixels, never stand-ins."""
    return level.array if isinstance(level, BackgroundLevel) else level


def _lower_this_threads_priority() -> None:
    # On Linux a thread is a task of its own (and starts at its creator's niceness),
    # so this leaves the UI thread as it is.
    if sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        with contextlib.suppress(OSError):
            now = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, now + BACKGROUND_NICENESS))


class BackgroundLevel:
    """One level of a :class:`BackgroundPyramid`: what is made, stand-ins elsewhere."""

    ndim = 3

    def __init__(self, pyramid: BackgroundPyramid, k: int, array):
        self.pyramid, self.k, self.array = pyramid, k, array
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        # napari re-slices a multiscale layer when the view leaves the chunk boundaries
        # around it; smaller chunks, a smaller texture to upload each time (as LiveLevel).
        self.chunks = (SLICE_CHUNK, SLICE_CHUNK, self.shape[2])

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, key) -> np.ndarray:
        box, pick = index_box(key, self.shape)
        return self.pyramid.region(self.k, *box)[pick]

    def __array__(self, dtype=None, copy=None):
        # napari converts the coarsest level for its thumbnail on every slice, on the
        # UI thread: this answers at once too. The real pixels: pixels_of(level).
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"BackgroundLevel({self.k}, shape={self.shape})"


class BackgroundPyramid:
    """Levels (finest first, each half the last) answered from blocks made in the background.

    levels: lazy arrays (dask), H×W×C, each level 2× coarser than the one before.
    fill: the stand-in where no level has been made yet (glass).
    workers: background threads (they exist only while there is work).
    The coarsest level is asked for at once: it is the overview and the
    stand-in of every finer level.
    """

    def __init__(self, levels, fill=255, block: int = BLOCK, workers: int | None = None,
                 cache_bytes: int = CACHE_BYTES):  # fmt: skip
        self.block = int(block)
        self.fill = fill
        self.levels = [BackgroundLevel(self, k, a) for k, a in enumerate(levels)]
        self.workers = max(1, int(workers or min(2, os.cpu_count() or 1)))
        self._lock = threading.Lock()
        # Blocks made: the overview's always kept (every finer level's stand-in),
        # the others within cache_bytes.
        self._overview: dict[tuple[int, int, int], np.ndarray] = {}
        self._made = ResultStore(cache_bytes)
        self._wanted: OrderedDict[tuple[int, int, int], None] = OrderedDict()
        self._making: set[tuple[int, int, int]] = set()
        self._failed: set[tuple[int, int, int]] = set()
        self._threads: list[threading.Thread] = []
        self._overview_changed = False
        self._stand_ins = ResultStore(STAND_IN_BYTES)
        self._viewers: weakref.WeakSet = weakref.WeakSet()
        self._bridge = _make_bridge(self._refresh_layers)
        last = self.levels[-1]
        self._ask([(last.k, by, bx) for by, bx in self._blocks_over(last.k, 0, last.shape[0],
                                                                   0, last.shape[1])])  # fmt: skip

    # -- reading (the UI thread) ----------------------------------------------------------

    def _blocks_over(self, k, y0, y1, x0, x1):
        b = self.block
        return [(by, bx) for by in range(y0 // b * b, y1, b) for bx in range(x0 // b * b, x1, b)]

    def region(self, k: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Level k's [y0:y1, x0:x1] from the blocks made, stand-ins elsewhere; the blocks
        missing are asked for."""
        shape = self.levels[k].shape
        out = np.empty((max(0, y1 - y0), max(0, x1 - x0), *shape[2:]), self.levels[k].dtype)
        if out.size == 0:
            return out
        b, missing = self.block, []
        for by, bx in self._blocks_over(k, y0, y1, x0, x1):
            key = (k, by, bx)
            block = self._made_block(key)
            if block is None:
                missing.append(key)
                block = self._stand_in(key)
            sy0, sy1 = max(by, y0), min(by + b, y1)
            sx0, sx1 = max(bx, x0), min(bx + b, x1)
            out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = block[
                sy0 - by : sy1 - by, sx0 - bx : sx1 - bx
            ]
        if missing:
            self._ask(missing)
        return out

    def _made_block(self, key) -> np.ndarray | None:
        if key[0] == len(self.levels) - 1:
            return self._overview.get(key)
        return self._made.get(key)

    def _made_region(self, k, y0, y1, x0, x1) -> np.ndarray | None:
        """Level k's [y0:y1, x0:x1] if every block under it is made, else None."""
        shape = self.levels[k].shape
        out = np.empty((y1 - y0, x1 - x0, *shape[2:]), self.levels[k].dtype)
        b = self.block
        for by, bx in self._blocks_over(k, y0, y1, x0, x1):
            made = self._made_block((k, by, bx))
            if made is None:
                return None
            sy0, sy1, sx0, sx1 = max(by, y0), min(by + b, y1), max(bx, x0), min(bx + b, x1)
            out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = made[
                sy0 - by : sy1 - by, sx0 - bx : sx1 - bx
            ]
        return out

    def _stand_in(self, key) -> np.ndarray:
        """What block ``key`` shows until it is made: the finest coarser level made over
        it, enlarged (nearest neighbour), else the fill. Kept until the block is made:
        napari slices the same view many times."""
        kept = self._stand_ins.get(key)
        if kept is not None:
            return kept
        k, by, bx = key
        h, w, *rest = self.levels[k].shape
        y1, x1 = min(by + self.block, h), min(bx + self.block, w)
        out = None
        for j in range(k + 1, len(self.levels)):
            f = 2 ** (j - k)
            hj, wj = self.levels[j].shape[:2]
            # Level-k pixel y lies in level-j pixel y // f; a level halves rounding
            # down, so its last rows may lie past level j's: they take its last row.
            iy = np.minimum(np.arange(by, y1) // f, hj - 1)
            ix = np.minimum(np.arange(bx, x1) // f, wj - 1)
            coarse = self._made_region(j, int(iy[0]), int(iy[-1]) + 1, int(ix[0]), int(ix[-1]) + 1)
            if coarse is None:
                continue
            out = coarse[iy - iy[0]][:, ix - ix[0]]
            break
        if out is None:  # not kept: the overview, once made, is the better stand-in
            return np.full((y1 - by, x1 - bx, *rest), self.fill, self.levels[k].dtype)
        out = np.ascontiguousarray(out)
        if self._made_block(key) is None:
            self._stand_ins.put(key, out)
        return out

    # -- making (background threads) ------------------------------------------------------

    def _ask(self, keys) -> None:
        with self._lock:
            for key in keys:
                if key in self._making or key in self._failed or self._made_block(key) is not None:
                    continue
                self._wanted[key] = None
                self._wanted.move_to_end(key)
            # Too many: the oldest views go, never the overview.
            last = len(self.levels) - 1
            for old in [key for key in self._wanted if key[0] != last]:
                if len(self._wanted) <= MAX_WANTED:
                    break
                del self._wanted[old]
            while self._wanted and len(self._threads) < self.workers:
                t = threading.Thread(target=self._work, name="stainfuser-background", daemon=True)
                self._threads.append(t)
                t.start()

    def _work(self) -> None:
        try:
            _lower_this_threads_priority()
            while self._make_one():
                pass
        finally:
            with self._lock:
                self._threads.remove(threading.current_thread())

    def _next(self):
        """The overview first (every other level's stand-in), then the view asked for last."""
        last = len(self.levels) - 1
        for key in self._wanted:
            if key[0] == last:
                del self._wanted[key]
                return key
        return self._wanted.popitem(last=True)[0]

    def _make_one(self) -> bool:
        """Make the next block wanted; False when there is none."""
        with self._lock:
            if not self._wanted:
                return False
            key = self._next()
            self._making.add(key)
        k, by, bx = key
        try:
            part = self.levels[k].array[by : by + self.block, bx : bx + self.block]
            # On this thread (sync): the work stays at this thread's priority.
            made = part.compute(scheduler="sync") if hasattr(part, "compute") else part
            made = np.ascontiguousarray(np.asarray(made))
        except Exception:  # a block that fails shows its stand-in; the rest carry on
            log.exception("making block %s of level %d failed", (by, bx), k)
            with self._lock:
                self._making.discard(key)
                self._failed.add(key)
            return True
        if k == len(self.levels) - 1:
            self._overview[key] = made
        else:
            self._made.put(key, made)
        self._stand_ins.discard(key)
        with self._lock:
            self._making.discard(key)
            if k == len(self.levels) - 1:
                self._overview_changed = True
        if self._bridge is not None:
            try:
                self._bridge.landed.emit()
            except RuntimeError:  # Qt is gone (the application quit): nobody will look
                with self._lock:
                    self._wanted.clear()
                return False
        return True

    def pending(self) -> int:
        """Blocks asked for and not made yet."""
        with self._lock:
            return len(self._wanted) + len(self._making)

    def is_made(self, k: int, y0: int, y1: int, x0: int, x1: int) -> bool:
        """Whether level k's box shows its real pixels now."""
        return all(
            self._made_block((k, by, bx)) is not None
            for by, bx in self._blocks_over(k, y0, y1, x0, x1)
        )

    # -- refreshing (the main thread) -----------------------------------------------------

    def _refresh_layers(self) -> None:
        """Redraw the layers showing this pyramid, in every viewer that has shown it.
        When none does any more (the layer was removed), the blocks still wanted are
        dropped: nobody will look at them."""
        import napari

        current = napari.current_viewer()
        if current is not None:
            self._viewers.add(current)
        with self._lock:
            overview_changed, self._overview_changed = self._overview_changed, False
        shown = False
        for viewer in list(self._viewers):
            for layer in list(viewer.layers):
                data = layer.data if getattr(layer, "multiscale", False) else [layer.data]
                if any(level is self.levels[0] for level in data):
                    shown = True
                    refresh_landed(layer, overview_changed)
        if not shown:
            with self._lock:
                self._wanted.clear()


def refresh_landed(layer, overview_changed: bool) -> None:
    """Redraw a layer whose pixels landed (its extent never changes).

    napari keeps the coarsest level it read for the thumbnail, and shows that
    copy whenever the level is displayed, until the layer's data changes: when
    the overview changed, the copy is forgotten. Only then is the thumbnail
    redrawn too: it repaints the layer list, whose SVG icons are slow to draw.
    """
    # Private, napari 0.9's; a napari without it keeps whatever copy it has.
    forget = getattr(layer, "_reset_thumbnail_level_data", None)
    if overview_changed and forget is not None:
        forget()
    layer.refresh(extent=False, thumbnail=overview_changed)


def _make_bridge(refresh):
    """A Qt object on this (the main) thread: blocks landing on a background thread
    refresh the layers here, once per REFRESH_MS however many landed. None without Qt."""
    try:
        from qtpy.QtCore import QObject, QTimer, Signal
    except ImportError:  # headless, without Qt: levels still answer, nothing is redrawn
        return None

    class _Bridge(QObject):
        landed = Signal()

        def __init__(self):
            super().__init__()
            self.timer = QTimer(self)
            self.timer.setSingleShot(True)
            self.timer.setInterval(REFRESH_MS)
            self.timer.timeout.connect(refresh)
            self.landed.connect(self._on_landed)

        def _on_landed(self):
            if not self.timer.isActive():
                self.timer.start()

    return _Bridge()
