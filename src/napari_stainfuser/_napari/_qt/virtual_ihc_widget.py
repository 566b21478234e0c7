"""The "Virtual IHC" dock widget: thin Qt over :class:`VirtualIHCModel`.

H&E in; the virtual IHC of a marker, its cell mask and (with K > 1 samples)
its uncertainty out, live over the view or for the whole slide. Slow work
(loading the model, opening the slide, a whole-slide run) runs in napari
thread workers; results and errors come back to the main thread, where
expected failures become one-line notifications.
"""

from __future__ import annotations

from napari.utils import progress as napari_progress
from napari.utils.notifications import show_info
from qtpy.QtCore import QObject, QSettings, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...errors import StainFuserError
from ...job.checks import MAX_SAMPLES, MAX_STEPS
from ..live import style_mask
from ..virtual_ihc_model import TILES, WEIGHTS_KEY, VirtualIHCModel
from .normalize_widget import SETTINGS, _closer, _PathRow
from .threads import ProgressFeed, in_thread, notify_failure
from .whole_slide import WholeSlideRun

MARKER_ROWS = 4


class _LiveNews(QObject):
    """A live run's tile failures, from the engine thread to the main thread."""

    failed = Signal(object, object)  # the run's number, the exception


class VirtualIHCWidget(QWidget):
    """Source, weights, marker and sampling; Live, Whole slide…, Cancel."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.model = VirtualIHCModel(napari_viewer)
        self.settings = QSettings(*SETTINGS)
        self.live = None
        self._live_seq = 0
        self._worker = None
        self._progress = None
        self._closed = False
        self._news = _LiveNews()
        self._news.failed.connect(self._tile_failed)
        self._failed_seq = None

        self.source = QComboBox()
        self.source.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.source.setMinimumContentsLength(12)
        self.weights = _PathRow("Virtual-IHC checkpoint or training run folder", "", folder=True)
        self.weights.edit.setPlaceholderText("checkpoint or training run folder")
        self.weights.edit.setText(str(self.settings.value(WEIGHTS_KEY, "") or ""))
        self.marker = QListWidget()
        self.marker.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.marker.setToolTip("The markers this checkpoint was trained on")
        row = self.marker.fontMetrics().height() + 6
        self.marker.setMaximumHeight(MARKER_ROWS * row + 2 * self.marker.frameWidth())

        self.sampling = QGroupBox("Sampling")
        self.steps = QSpinBox()
        self.steps.setRange(1, MAX_STEPS)
        self.steps.setValue(self.model.steps)
        self.samples = QSpinBox()
        self.samples.setRange(1, MAX_SAMPLES)
        self.samples.setValue(self.model.samples)
        self.samples.setToolTip(
            "K samples with different noise: the IHC and the mask are their mean; "
            "with K > 1 their spread is added as an uncertainty layer (shown on request)"
        )
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.sampler = QComboBox()
        self.sampler.addItems(list(self.model.samplers()))
        self.tile = QComboBox()
        for t in TILES:
            self.tile.addItem("checkpoint's" if t is None else f"{t} px", t)
        self.tile.setToolTip("Inference tile edge; overlapping tiles are blended")
        self.device = QComboBox()
        for name, label in self.model.devices():
            self.device.addItem(f"{name}: {label}" if name != "cpu" else "cpu", name)
        form = QFormLayout(self.sampling)
        form.addRow("steps", self.steps)
        form.addRow("samples (K)", self.samples)
        form.addRow("seed", self.seed)
        form.addRow("sampler", self.sampler)
        form.addRow("tile", self.tile)
        form.addRow("device", self.device)

        self.live_button = QPushButton("Live")
        self.live_button.setToolTip("Stain the view as you pan and zoom, visible region first")
        self.slide_button = QPushButton("Whole slide…")
        self.cancel_button = QPushButton("Cancel")
        self.open_button = QPushButton("Open result")
        self.open_button.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.whole = WholeSlideRun("virtual IHC", self.status, self.open_button, self._failed)

        top = QFormLayout()
        top.addRow("H&&E", self.source)  # "&&": a lone "&" makes a shortcut
        top.addRow("weights", self.weights)
        top.addRow("marker", self.marker)
        buttons = QHBoxLayout()
        for b in (self.live_button, self.slide_button, self.cancel_button):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.sampling)
        lay.addLayout(buttons)
        lay.addWidget(self.open_button)
        lay.addWidget(self.status)
        lay.addStretch(1)

        self.source.currentTextChanged.connect(self._on_source)
        self.weights.edit.editingFinished.connect(self._on_weights)
        self.marker.currentTextChanged.connect(self._on_marker)
        self.live_button.clicked.connect(self.start_live)
        self.slide_button.clicked.connect(self.whole_slide)
        self.cancel_button.clicked.connect(self.cancel)
        self.open_button.clicked.connect(self.open_result)
        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed,
                   napari_viewer.layers.events.moved):  # fmt: skip
            ev.connect(self._refresh_layers)
        self.destroyed.connect(_closer(self))
        self._refresh_layers()
        # A remembered folder that has gone says so here, not in a popup on opening.
        self._load_markers(notify=False)

    # -- keeping the choices current ------------------------------------------------------

    def _refresh_layers(self, event=None) -> None:
        names = self.model.image_layers()
        current = self.source.currentText()
        self.source.blockSignals(True)
        self.source.clear()
        self.source.addItems(names)
        if current in names:
            self.source.setCurrentText(current)
        self.source.blockSignals(False)
        self.model.source = self.source.currentText() or None
        live = self.live
        if live is not None and (
            live.closed
            or live.source not in self.viewer.layers
            or live.layer not in self.viewer.layers
        ):
            # The source or the IHC layer was removed (the live result stops itself
            # too, whichever hears of it first).
            self.stop_live()
            self.status.setText("live stopped: its layer was removed")

    def _on_source(self, name: str) -> None:
        self.model.source = name or None
        self._restart_if_live()

    def _on_weights(self) -> None:
        text = self.weights.edit.text().strip() or None
        if text == self.model.weights and self.marker.count():
            return  # editingFinished also fires on focus loss
        self._load_markers(notify=True)
        self._restart_if_live()

    def _load_markers(self, notify: bool) -> None:
        """The marker list of the weights folder's checkpoint; a valid folder is remembered."""
        self.model.weights = self.weights.edit.text().strip() or None
        previous = self.marker.currentItem().text() if self.marker.currentItem() else None
        self.marker.blockSignals(True)
        self.marker.clear()
        self.marker.blockSignals(False)
        self.model.marker = None
        if self.model.weights is None:
            self.status.setText("choose a virtual-IHC checkpoint folder")
            return
        try:
            markers = self.model.markers()
        except StainFuserError as exc:
            self.status.setText(" ".join(str(exc).split()))
            if notify:
                notify_failure(exc)
            return
        self.settings.setValue(WEIGHTS_KEY, self.model.weights)
        self.marker.blockSignals(True)
        self.marker.addItems(list(markers))
        self.marker.blockSignals(False)
        row = list(markers).index(previous) if previous in markers else 0
        self.marker.setCurrentRow(row)
        self.status.setText(f"{len(markers)} marker(s): {', '.join(markers)}")

    def _on_marker(self, marker: str) -> None:
        self.model.marker = marker or None
        self._restart_if_live()

    def _sync(self) -> None:
        """Copy the option widgets into the model."""
        m = self.model
        m.source = self.source.currentText() or None
        m.marker = self.marker.currentItem().text() if self.marker.currentItem() else None
        m.steps = self.steps.value()
        m.samples = self.samples.value()
        m.seed = self.seed.value()
        m.sampler = self.sampler.currentText()
        m.tile = self.tile.currentData()
        m.device = self.device.currentData() or "cpu"

    # -- live -------------------------------------------------------------------------------

    def _restart_if_live(self) -> None:
        if self.live is not None and not self.live.closed:
            self.start_live()

    def start_live(self) -> None:
        """The IHC, its mask and its uncertainty above the source, following the camera."""
        self.stop_live()
        self._sync()
        model = self.model
        try:
            source = model.source_layer()
            options = model.options()
        except StainFuserError as exc:
            self._failed(exc)
            return
        names = (model.result_name(), model.extra_names())
        self._live_seq += 1
        seq = self._live_seq
        news = self._news

        def open_job():
            from ...tiling.lazy import ResultPyramid

            return ResultPyramid(
                model.job(options), on_error=lambda keys, exc: news.failed.emit(seq, exc)
            )

        def failed(exc):
            if seq == self._live_seq:  # not for a start since cancelled or replaced
                self._failed(exc)

        self.status.setText(f"loading the {model.marker} model and opening {source.name} …")
        self._worker = in_thread(
            open_job, lambda pyr: self._show_live(seq, source, pyr, *names), failed
        )

    def _show_live(self, seq: int, source, pyramid, name: str, extras: dict) -> None:
        from ..live import LiveResult

        if seq != self._live_seq or self._closed or source not in self.viewer.layers:
            pyramid.close()  # cancelled, restarted or the source went while it opened
            return
        self._worker = None
        self._progress = ProgressFeed(napari_progress(total=0, desc="virtual IHC (live)"))
        # Live again on the same source and marker refills the same layers.
        self.live = LiveResult(
            self.viewer, source, pyramid, name, self._live_progress, extras=extras, reuse=True
        )
        self.status.setText("live: staining the visible region first")

    def _tile_failed(self, seq: int, exc) -> None:
        # Once per run: a failing device (out of memory, say) fails every batch alike.
        if seq == self._live_seq and self._failed_seq != seq:
            self._failed_seq = seq
            self._failed(exc)

    def _live_progress(self, p) -> None:
        self.status.setText(
            f"live: {p.done} tiles done, {p.rate:.2f} tiles/s, {p.pending} queued ({p.what})"
        )
        # napari's bar processes events: read it once, use it last.
        if self._progress is not None:
            self._progress.advance(p, f"virtual IHC ({p.what})")

    def stop_live(self) -> None:
        self._live_seq += 1  # a model still loading is dropped when it arrives
        self._worker = None
        live, self.live = self.live, None
        if live is not None:
            live.close()
        bar, self._progress = self._progress, None
        if bar is not None:
            bar.close()

    def _failed(self, exc) -> None:
        self._worker = None
        self.status.setText(" ".join(str(exc).split()))
        notify_failure(exc)

    # -- whole slide --------------------------------------------------------------------------

    def whole_slide(self, path: str | None = None) -> None:
        """Ask for an output and run ``stain_slide`` with a progress bar; the same output
        again continues a cancelled run."""
        if path is None or path is False:
            path, _ = QFileDialog.getSaveFileName(
                self,
                "Virtual IHC of the whole slide into",
                "",
                "OME-Zarr (*.ome.zarr);;OME-TIFF (*.ome.tif)",
            )
            if not path:
                return
        self._sync()
        from ...batch.output import OutputSpec

        model = self.model
        try:
            out = OutputSpec.create(path)
            options = model.options()
            model.job(options)  # every check now, not after the model has loaded
        except StainFuserError as exc:
            self._failed(exc)
            return
        self.whole.start(out, lambda report: model.whole_slide(out.path, options, report))

    def open_result(self) -> None:
        """The written IHC, and its mask and uncertainty where the output holds them."""
        path = self.whole.result_path
        if path is None:
            return
        try:
            self.viewer.open(str(path), plugin="napari-stainfuser")
            for data, kwargs, kind in self.model.result_extra_layers(path):
                layer = getattr(self.viewer, f"add_{kind}")(data, **kwargs)
                if kind == "labels":
                    style_mask(layer)
        except StainFuserError as exc:
            self._failed(exc)
            return
        files = self.model.extra_files(path)
        if files:
            show_info(f"mask and uncertainty beside it: {', '.join(p.name for p in files)}")

    # -- the rest --------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the live layers' work and any whole-slide run (which can be resumed)."""
        self.whole.cancel()
        self.stop_live()
        self.status.setText("cancelled")

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Everything this widget started, stopped (a whole-slide run stops at its next
        tile group and can be resumed)."""
        self._closed = True
        self.whole.close()
        self.stop_live()
