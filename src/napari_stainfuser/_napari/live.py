"""The live result: a multiscale RGBA layer over the source that fills in as tiles land.

napari slices layers on its UI thread, so the arrays handed to it must answer
at once. :class:`LiveLevel` does: its ``[y0:y1, x0:x1]`` composes the stained
tiles already in memory (blended, resampled back, glass left transparent so
the source shows through) and leaves the rest transparent, and it asks the
engine for what is missing; it never waits on the model or reads the disk.

:class:`LiveResult` follows the camera: after the view settles (a short
debounce, as napari's own delay queue does) it computes the visible region
from the camera's centre, zoom and the canvas size, requests its tiles at
``VISIBLE`` priority, a ring around it at ``NEARBY``, and cancels what left.
Tiles land on the engine thread; a Qt signal hands the news to the main
thread, where one timer refreshes the layer at most every ~100 ms however
many tiles landed. Closing it stops the engine and disconnects everything.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from ..engine import BACKGROUND, NEARBY, VISIBLE
from .viewport import View, level_geometries

REFRESH_MS = 100
SETTLE_MS = 60
# Requests larger than this many pixels per side are answered transparent:
# napari never asks a multiscale level for more than the screen.
MAX_SIDE = 8192
# Composed blocks kept per level, so a slice is mostly copies: a pan re-slices
# the same blocks many times, and composing one (blend, resample, alpha) costs
# milliseconds of UI time.
BLOCK_CACHE_BYTES = 256 * 2**20


class LiveLevel:
    """One level of a live result, as an array napari can slice without waiting."""

    ndim = 3
    dtype = np.dtype(np.uint8)

    def __init__(self, level, on_miss=None):
        self.level = level
        self.plan = level.plan
        h, w = self.plan.shape
        self.shape = (h, w, 4)
        self.block = self.plan.grid.step if self.plan.factor == 1.0 else 256
        # napari widens its view to chunk boundaries and re-slices a multiscale
        # layer only when the view leaves them; without chunks it re-slices on
        # every camera step of a pan. 256 (not the tile step): a wider texture
        # makes each crossing cost more than the re-slices it saves.
        self.chunks = (256, 256, 4)
        self.on_miss = on_miss
        self._blocks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        ys, xs = (list(key) + [slice(None)] * 2)[:2]
        h, w = self.plan.shape
        y0, y1, sy = ys.indices(h) if isinstance(ys, slice) else (ys, ys + 1, 1)
        x0, x1, sx = xs.indices(w) if isinstance(xs, slice) else (xs, xs + 1, 1)
        out = self.region(y0, y1, x0, x1)[::sy, ::sx]
        if not isinstance(ys, slice):
            out = out[0]
        if not isinstance(xs, slice):
            out = out[..., 0, :] if out.ndim == 3 else out[0]
        rest = key[2:]
        return out[(Ellipsis, *rest)] if rest else out

    def __array__(self, dtype=None, copy=None):
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """RGBA of [y0:y1, x0:x1]: what is ready, transparent elsewhere; asks for the rest."""
        out = np.zeros((max(0, y1 - y0), max(0, x1 - x0), 4), np.uint8)
        if out.size == 0 or max(out.shape[:2]) > MAX_SIDE:
            return out
        b = self.block
        missing = []
        for by in range(y0 // b * b, y1, b):
            for bx in range(x0 // b * b, x1, b):
                block = self._block(by, bx, missing)
                if block is None:
                    continue  # glass, or not ready: transparent, the source shows through
                sy, sx = slice(max(by, y0), min(by + b, y1)), slice(max(bx, x0), min(bx + b, x1))
                out[sy.start - y0 : sy.stop - y0, sx.start - x0 : sx.stop - x0] = block[
                    sy.start - by : sy.stop - by, sx.start - bx : sx.stop - bx
                ]
        if missing:
            # NEARBY, not VISIBLE: napari slices on every step of a pan, and the
            # views it passes through must not queue ahead of the one the camera
            # comes to rest on (LiveResult.follow_view asks for that at VISIBLE).
            for rc in dict.fromkeys(missing):
                self.level.tile_future(*rc, NEARBY)
            if self.on_miss is not None:
                self.on_miss()
        return out

    def _block(self, by: int, bx: int, missing: list) -> np.ndarray | None:
        """The composed block at (by, bx), once all its tiles are ready; else None,
        with the absent tiles added to ``missing``. Ready tiles never change (a new
        target or method makes a new store), so a composed block stays valid."""
        key = (by, bx)
        block = self._blocks.get(key)
        if block is not None:
            self._blocks.move_to_end(key)
            return block
        h, w = self.plan.shape
        box = (by, min(by + self.block, h), bx, min(bx + self.block, w))
        tiles = self.plan.tiles_for(*box)
        if not tiles:
            return None
        ready = {rc: self.level.ready(*rc) for rc in tiles}
        absent = [rc for rc, t in ready.items() if t is None]
        if absent:
            missing.extend(absent)
            return None
        block = self.plan.assemble_rgba(*box, lambda r, c: ready[r, c].tile)
        self._blocks[key] = block
        self._cached_bytes += block.nbytes
        while self._cached_bytes > BLOCK_CACHE_BYTES:
            _, old = self._blocks.popitem(last=False)
            self._cached_bytes -= old.nbytes
        return block

    def filled_fraction(self, y0: int, y1: int, x0: int, x1: int) -> float:
        """The share of the box's tissue tiles that are ready (1.0 when there is none)."""
        tiles = self.plan.tiles_for(y0, y1, x0, x1)
        if not tiles:
            return 1.0
        return sum(self.level.ready(*rc) is not None for rc in tiles) / len(tiles)


# Live results by their layer, so the QA widget finds the one behind a layer.
_LIVE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def live_result_of(layer) -> LiveResult | None:
    """The running live result shown in ``layer``, if any."""
    live = _LIVE.get(id(layer))
    return live if live is not None and not live.closed and live.layer is layer else None


class _Bridge(QObject):
    """Carries engine-thread news to the main thread (a queued Qt signal)."""

    landed = Signal(object)


class LiveResult:
    """A live stained layer over ``source`` in ``viewer``, computed through ``pyramid``.

    pyramid: a :class:`~napari_stainfuser.tiling.ResultPyramid` made for this
        layer (it starts and owns its engine; :meth:`close` stops it).
    on_progress: called on the main thread with each engine Progress.
    target: the target the job was fitted to, for the QA widget's colour match.
    """

    def __init__(self, viewer, source, pyramid, name: str, on_progress=None, target=None):
        self.viewer = viewer
        self.source = source
        self.pyramid = pyramid
        self.target = target  # what the job was fitted to (a picture, an array, a preset)
        self.on_progress = on_progress
        self._closed = False
        self._bridge = _Bridge()
        self._bridge.landed.connect(self._on_landed)
        pyramid.engine.on_progress = self._bridge.landed.emit
        self._refresh = QTimer()
        self._refresh.setSingleShot(True)
        self._refresh.setInterval(REFRESH_MS)
        self._refresh.timeout.connect(self._do_refresh)
        self._settle = QTimer()
        self._settle.setSingleShot(True)
        self._settle.setInterval(SETTLE_MS)
        self._settle.timeout.connect(self.follow_view)
        # A level asks for what it misses; the refresh comes when tiles land.
        self.levels = [LiveLevel(lv) for lv in pyramid.levels]
        data = self.levels if len(self.levels) > 1 else self.levels[0]
        shapes = [lv.shape for lv in self.levels]
        scale = tuple(source.scale[-2:])
        translate = tuple(source.translate[-2:])
        self.geometry = level_geometries(shapes, scale, translate)
        self.layer = viewer.add_image(
            data, rgb=True, multiscale=len(self.levels) > 1, name=name, scale=scale,
            translate=translate, units=tuple(source.units[-2:]), contrast_limits=(0, 255),
            metadata={"napari_stainfuser": "live result", "source": source.name},
        )  # fmt: skip
        # Right above the source.
        layers = viewer.layers
        src, mine = layers.index(source), layers.index(self.layer)
        if mine != src + 1:
            layers.move(mine, src + 1 if mine > src else src)
        viewer.camera.events.center.connect(self._on_camera)
        viewer.camera.events.zoom.connect(self._on_camera)
        viewer.layers.events.removed.connect(self._on_removed)
        _LIVE[id(self.layer)] = self
        self.last_request = None
        self.first_landed_at: float | None = None
        self.follow_view()

    # -- following the camera -------------------------------------------------------

    def view(self) -> View:
        cam = self.viewer.camera
        canvas = self.viewer.canvas.viewbox_size(self.viewer.layers)
        return View(tuple(cam.center[-2:]), float(cam.zoom), tuple(canvas))

    def displayed_level(self) -> int:
        return int(self.layer.data_level) if self.layer.multiscale else 0

    def visible_box(self):
        """(level, (y0, y1, x0, x1)) on screen now, or (level, None)."""
        k = self.displayed_level()
        return k, self.geometry[k].box(self.view())

    def _on_camera(self, event=None) -> None:
        if not self._closed:
            self._settle.start()  # restart: wait until the camera rests

    def follow_view(self) -> None:
        """Visible tiles first, a ring around them next, nothing that left the view."""
        if self._closed:
            return
        k, box = self.visible_box()
        ring = self.geometry[k].box(self.view(), margin=self.pyramid.levels[k].plan.tile)
        for j, lv in enumerate(self.pyramid.levels):
            if j != k or box is None:
                lv.cancel_pending()
        if box is None:
            return
        level = self.pyramid.levels[k]
        level.request(*box, VISIBLE)
        level.request(*ring, NEARBY)
        level.cancel_pending(keep=ring)
        # The coarsest level is a few tiles: it makes the layer's thumbnail.
        lowest = self.pyramid.levels[-1]
        lowest.request(0, lowest.plan.shape[0], 0, lowest.plan.shape[1], BACKGROUND)
        self.last_request = (k, box, time.perf_counter())

    # -- tiles landing ----------------------------------------------------------------

    def _schedule_refresh(self) -> None:
        if not self._closed and not self._refresh.isActive():
            self._refresh.start()

    def _on_landed(self, progress) -> None:
        if self._closed:
            return
        if self.first_landed_at is None:
            self.first_landed_at = time.perf_counter()
        self._schedule_refresh()
        if self.on_progress is not None:
            self.on_progress(progress)

    def _do_refresh(self) -> None:
        if not self._closed:
            self.layer.refresh(extent=False)  # tiles landing never change the extent

    def filled_fraction(self) -> float:
        k, box = self.visible_box()
        return 1.0 if box is None else self.levels[k].filled_fraction(*box)

    # -- lifecycle ------------------------------------------------------------------------

    def _on_removed(self, event) -> None:
        if event.value is self.layer or event.value is self.source:
            self.close()

    def close(self) -> None:
        """Stop the work: timers, camera hooks, the engine (its threads joined)."""
        if self._closed:
            return
        self._closed = True
        self._refresh.stop()
        self._settle.stop()
        for emitter, cb in (
            (self.viewer.camera.events.center, self._on_camera),
            (self.viewer.camera.events.zoom, self._on_camera),
            (self.viewer.layers.events.removed, self._on_removed),
        ):
            emitter.disconnect(cb)
        self.pyramid.engine.on_progress = None
        self.pyramid.close()

    @property
    def closed(self) -> bool:
        return self._closed
