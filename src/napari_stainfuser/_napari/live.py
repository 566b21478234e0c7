"""The live result: a multiscale RGBA layer over the source that fills in as tiles land.

napari slices layers on its UI thread, so the arrays handed to it must answer
at once. :class:`LiveLevel` does: its ``[y0:y1, x0:x1]`` composes the stained
tiles already in memory (blended, resampled back, glass left transparent so
the source shows through) and leaves the rest transparent, and it asks the
engine for what is missing; it never waits on the model or reads the disk.
:class:`LiveExtra` does the same for a stainer's extra output (a cell mask,
an uncertainty map) from the very tiles the image is composed of.

:class:`LiveResult` follows the camera: after the view settles (a short
debounce, as napari's own delay queue does) it computes the visible region
from the camera's centre, zoom and the canvas size, requests its tiles at
``VISIBLE`` priority, a ring around it at ``NEARBY``, and cancels what left.
Tiles land on the engine thread; a Qt signal hands the news to the main
thread, where one timer refreshes the layer at most every ~100 ms however
many tiles landed. Closing it stops the engine and disconnects everything;
its layers stay, showing what was computed.
"""

from __future__ import annotations

import threading
import time
import weakref

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from ..engine import BACKGROUND, NEARBY, VISIBLE
from ..errors import ParameterError
from ..tiling.memory import ResultStore
from .background import refresh_landed
from .viewport import View, index_box, level_geometries

REFRESH_MS = 100
THUMBNAIL_S = 2.0
SETTLE_MS = 60
# Requests larger than this many pixels per side are answered transparent:
# napari never asks a multiscale level for more than the screen.
MAX_SIDE = 8192
# Composed blocks kept per level, so a slice is mostly copies: a pan re-slices
# the same blocks many times, and composing one (blend, resample, alpha) costs
# milliseconds of UI time.
BLOCK_CACHE_BYTES = 256 * 2**20
# Extra outputs shown live: float maps in this colormap; label images as outlines,
# this many pixels of the level shown thick, so the stain under a cell stays
# visible, in a colour that neither DAB brown nor hematoxylin blue is.
EXTRA_COLORMAP = "magma"
LABELS_CONTOUR = 1
LABELS_COLOR = "lime"


def style_mask(layer) -> None:
    """Show a cell-mask Labels layer as outlines over the stain it was computed from."""
    from napari.utils.colormaps import DirectLabelColormap

    layer.colormap = DirectLabelColormap(color_dict={None: "transparent", 1: LABELS_COLOR})
    layer.contour = LABELS_CONTOUR


class _LiveArray:
    """One level of a live output, as an array napari can slice without waiting.

    Its blocks are composed from the tiles already in memory, once all the tiles
    a block needs are there; anything else reads as zeros (transparent, or no
    label) and its tiles are asked for. A subclass gives ``shape``, ``dtype``,
    ``chunks`` and ``_compose(box, ready)``: the block over ``box`` from its
    tiles' :class:`~napari_stainfuser.engine.TileOutput` ``ready[r, c]``.
    """

    dtype: np.dtype

    def __init__(self, level, on_miss=None):
        self.level = level
        self.plan = level.plan
        self.block = self.plan.grid.step if self.plan.factor == 1.0 else 256
        self.on_miss = on_miss
        # False once the engine is stopped: what is ready still shows, nothing is asked for.
        self.asking = True
        self._blocks = ResultStore(BLOCK_CACHE_BYTES)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, key) -> np.ndarray:
        box, pick = index_box(key, self.plan.shape)
        return self.region(*box)[pick]

    def __array__(self, dtype=None, copy=None):
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)

    def _zeros(self, h: int, w: int) -> np.ndarray:
        return np.zeros((h, w, *self.shape[2:]), self.dtype)

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """[y0:y1, x0:x1]: what is ready, zeros elsewhere; asks for the rest."""
        out = self._zeros(max(0, y1 - y0), max(0, x1 - x0))
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
        if missing and self.asking:
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
        block = self._compose(box, ready)
        self._blocks.put(key, block)
        return block

    def filled_fraction(self, y0: int, y1: int, x0: int, x1: int) -> float:
        """The share of the box's tissue tiles that are ready (1.0 when there is none)."""
        tiles = self.plan.tiles_for(y0, y1, x0, x1)
        if not tiles:
            return 1.0
        return sum(self.level.ready(*rc) is not None for rc in tiles) / len(tiles)


class LiveLevel(_LiveArray):
    """One level of a live result: RGBA, stained pixels opaque and glass transparent."""

    ndim = 3
    dtype = np.dtype(np.uint8)

    def __init__(self, level, on_miss=None):
        super().__init__(level, on_miss)
        h, w = self.plan.shape
        self.shape = (h, w, 4)
        # napari widens its view to chunk boundaries and re-slices a multiscale
        # layer only when the view leaves them; without chunks it re-slices on
        # every camera step of a pan. 256 (not the tile step): a wider texture
        # makes each crossing cost more than the re-slices it saves.
        self.chunks = (256, 256, 4)

    def _compose(self, box, ready: dict) -> np.ndarray:
        return self.plan.assemble_rgba(*box, lambda r, c: ready[r, c].tile)


class LiveExtra(_LiveArray):
    """One level of an extra output of a live result, from the same tiles as its image.

    kind "labels": the probability blended, then thresholded at one half as a
    batch run writes it: uint8 0/1. kind "image": the blended float32 map.
    Not ready and glass read 0 (no label; nothing, with additive blending).
    """

    ndim = 2

    def __init__(self, level, name: str, kind: str, on_miss=None):
        super().__init__(level, on_miss)
        self.name = name
        self.kind = kind
        self.dtype = np.dtype(np.uint8 if kind == "labels" else np.float32)
        self.shape = tuple(self.plan.shape)
        self.chunks = (256, 256)

    def _compose(self, box, ready: dict) -> np.ndarray:
        plane = self.plan.assemble_extra(*box, lambda r, c: ready[r, c].extras[self.name])
        if self.kind == "labels":
            return (plane >= 0.5).astype(np.uint8)
        return plane

    def high(self, y0: int, y1: int, x0: int, x1: int) -> float | None:
        """A display maximum from what is ready in the box (its 99.5th percentile above
        zero), or None while nothing there is."""
        values = self.region(y0, y1, x0, x1)
        values = values[values > 0]
        return float(np.percentile(values, 99.5)) if values.size else None


# Live results by their layer, so the QA widget finds the one behind a layer.
_LIVE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def live_result_of(layer) -> LiveResult | None:
    """The running live result shown in ``layer`` (its image or an extra), if any."""
    live = _LIVE.get(id(layer))
    if live is None or live.closed or not any(la is layer for la in live.layers):
        return None
    return live


def _place(layers, layer, below) -> None:
    """Move ``layer`` to right above ``below``."""
    under, mine = layers.index(below), layers.index(layer)
    if mine != under + 1:
        layers.move(mine, under + 1 if mine > under else under)


class _Bridge(QObject):
    """Carries engine-thread news to the main thread (a queued Qt signal)."""

    landed = Signal(object)


class LiveResult:
    """A live stained layer over ``source`` in ``viewer``, computed through ``pyramid``.

    pyramid: a :class:`~napari_stainfuser.tiling.ResultPyramid` made for this
        layer (it starts and owns its engine; :meth:`close` stops it).
    on_progress: called on the main thread with each engine Progress.
    target: the target the job was fitted to, for the QA widget's colour match.
    extras: {extra output of the stainer: layer name}, shown above the image in
        this order from the same tiles: "labels" extras as a Labels layer (0/1),
        "image" ones as a float image in EXTRA_COLORMAP, hidden at first and
        additive so that zero (glass, not ready) shows nothing; its contrast is
        fitted once, to the first tiles on screen.
    reuse: layers of these names that an earlier, stopped live result over the
        same source left are given the new data, rather than new layers added
        beside them (their display settings stay).
    """

    def __init__(
        self, viewer, source, pyramid, name: str, on_progress=None, target=None, extras=None,
        reuse: bool = False,
    ):  # fmt: skip
        self.viewer = viewer
        self.source = source
        self.pyramid = pyramid
        self.target = target  # what the job was fitted to (a picture, an array, a preset)
        self.on_progress = on_progress
        self._closed = False
        self._bridge = _Bridge()
        self._bridge.landed.connect(self._on_landed)
        pyramid.engine.on_progress = self._bridge.landed.emit
        self._thumbnail_at = 0.0
        self._overview = QTimer()
        self._overview.setSingleShot(True)
        self._overview.timeout.connect(self._do_refresh)
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
        self._reuse = reuse
        self.layer = self._reused(name, "Image", data) or viewer.add_image(
            data, rgb=True, multiscale=len(self.levels) > 1, name=name, scale=scale,
            translate=translate, units=tuple(source.units[-2:]), contrast_limits=(0, 255),
            metadata={"napari_stainfuser": "live result", "source": source.name},
        )  # fmt: skip
        _place(viewer.layers, self.layer, source)
        self.extras: dict[str, list[LiveExtra]] = {}
        self.extra_layers: dict[str, object] = {}
        self._unfitted: set[str] = set()
        self._add_extras(dict(extras or {}), scale, translate, tuple(source.units[-2:]))
        viewer.camera.events.center.connect(self._on_camera)
        viewer.camera.events.zoom.connect(self._on_camera)
        viewer.layers.events.removed.connect(self._on_removed)
        for layer in self.layers:
            _LIVE[id(layer)] = self
        self.last_request = None
        self.first_landed_at: float | None = None
        self.follow_view()

    def _add_extras(self, names: dict, scale, translate, units) -> None:
        kinds = {e.name: e.kind for e in self.pyramid.job.spec.extras}
        unknown = sorted(set(names) - set(kinds))
        if unknown:
            raise ParameterError(
                f"extras: the stainer gives no {', '.join(unknown)} "
                f"(it gives: {', '.join(kinds) or 'none'})"
            )
        below = self.layer
        for extra, layer_name in names.items():
            kind = kinds[extra]
            levels = [LiveExtra(lv, extra, kind) for lv in self.pyramid.levels]
            common = {
                "name": layer_name, "multiscale": len(levels) > 1, "scale": scale,
                "translate": translate, "units": units,
                "metadata": {"napari_stainfuser": "live extra", "source": self.source.name,
                             "extra": extra},
            }  # fmt: skip
            data = levels if len(levels) > 1 else levels[0]
            if kind == "labels":
                layer = self._reused(layer_name, "Labels", data) or self.viewer.add_labels(
                    data, **common
                )
                style_mask(layer)
                layer.editable = False  # it is computed: there is nothing to paint into
            else:
                # Limits given until the first tiles land (fitted then): a float
                # layer would otherwise read its data to find them. Hidden at first:
                # added over the image, it would tint all of it.
                layer = self._reused(layer_name, "Image", data) or self.viewer.add_image(
                    data, colormap=EXTRA_COLORMAP, blending="additive", contrast_limits=(0, 1),
                    visible=False, **common,
                )  # fmt: skip
                self._unfitted.add(extra)
            _place(self.viewer.layers, layer, below)
            below = layer
            self.extras[extra] = levels
            self.extra_layers[extra] = layer
        if names:
            self.viewer.layers.selection.active = self.layer  # its controls, not the last extra's

    def _reused(self, name: str, kind: str, data):
        """The layer ``name`` with ``data`` in it, when reuse applies to it (see the class
        docstring); else None. Reusing also keeps Labels layers from being removed and
        added in one go, which can crash napari 0.9's renderer."""
        if not self._reuse or name not in self.viewer.layers:
            return None
        layer = self.viewer.layers[name]
        meta = layer.metadata or {}
        levels = data if isinstance(data, list) else [data]
        same = (
            type(layer).__name__ == kind
            and meta.get("napari_stainfuser") in ("live result", "live extra")
            and meta.get("source") == self.source.name
            and layer.multiscale == (len(levels) > 1)
            and [tuple(s) for s in layer.level_shapes] == [lv.shape[:2] for lv in levels]
            and live_result_of(layer) is None
        )
        if not same:
            return None
        layer.data = data
        return layer

    @property
    def layers(self) -> list:
        """The image layer and the extra layers still in the viewer."""
        return [self.layer, *self.extra_layers.values()]

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
        if self._closed:
            return
        # The coarsest level (the overview napari keeps a copy of) at most every
        # THUMBNAIL_S: it repaints the layer list.
        now = time.perf_counter()
        overview = now - self._thumbnail_at >= THUMBNAIL_S
        if overview:
            self._thumbnail_at = now
        elif not self._overview.isActive():  # and once more after the last tiles landed
            self._overview.start(int(1000 * (THUMBNAIL_S - (now - self._thumbnail_at))) + 1)
        for layer in self.layers:
            refresh_landed(layer, overview)
        if self._unfitted:
            self._fit_contrast()

    def _fit_contrast(self) -> None:
        """Fit each float extra's display range once, to what is on screen (as
        napari's "once" does), as soon as some of it is ready."""
        k, box = self.visible_box()
        if box is None:
            return
        for extra in list(self._unfitted):
            layer = self.extra_layers.get(extra)
            high = self.extras[extra][k].high(*box)
            if layer is None or high is None:
                continue
            high = max(high, 1e-6)
            layer.contrast_limits_range = (0.0, high)
            layer.contrast_limits = (0.0, high)
            self._unfitted.discard(extra)

    def filled_fraction(self) -> float:
        k, box = self.visible_box()
        return 1.0 if box is None else self.levels[k].filled_fraction(*box)

    # -- lifecycle ------------------------------------------------------------------------

    def _on_removed(self, event) -> None:
        if event.value is self.layer or event.value is self.source:
            self.close()
            return
        for extra, layer in list(self.extra_layers.items()):
            if event.value is layer:
                del self.extra_layers[extra]

    def close(self) -> None:
        """Stop the work: timers, camera hooks, the engine (its threads then end once
        the batch it is staining, if any, is done)."""
        if self._closed:
            return
        self._closed = True
        self._refresh.stop()
        self._overview.stop()
        self._settle.stop()
        # The layers stay, showing what was computed; a stopped engine takes no requests.
        for level in (*self.levels, *(lv for lvs in self.extras.values() for lv in lvs)):
            level.asking = False
        for emitter, cb in (
            (self.viewer.camera.events.center, self._on_camera),
            (self.viewer.camera.events.zoom, self._on_camera),
            (self.viewer.layers.events.removed, self._on_removed),
        ):
            emitter.disconnect(cb)
        self.pyramid.engine.on_progress = None
        # Queued tiles are dropped now; the batch on the device cannot be stopped
        # and may take many seconds (a diffusion model on a CPU), so its end is
        # waited for (the engine's threads joined) off the UI thread.
        for level in self.pyramid.levels:
            level.cancel_pending()
        threading.Thread(target=self.pyramid.close, name="stainfuser-live-close").start()

    @property
    def closed(self) -> bool:
        return self._closed
