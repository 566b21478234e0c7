"""The "Stain normalization" dock widget: thin Qt over :class:`NormalizationModel`.

Slow work (reading a target, fitting, opening a slide, a whole-slide run)
runs in napari thread workers; results and errors come back to the main
thread, where expected failures become one-line notifications.
"""

from __future__ import annotations

import numpy as np
from napari.utils import progress as napari_progress
from qtpy.QtCore import QSettings, Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...errors import StainFuserError
from ..normalize_model import PRECISIONS, TARGET_KINDS, NormalizationModel
from .threads import ProgressFeed, in_thread, notify_failure
from .whole_slide import WholeSlideRun

SETTINGS = ("napari-stainfuser", "widgets")
KIND_LABELS = {
    "layer": "image layer (its visible area)",
    "region": "rectangle on a Shapes layer",
    "preset": "stain preset (.json)",
    "file": "image file",
}


def _pixmap(rgb: np.ndarray) -> QPixmap:
    rgb = np.ascontiguousarray(rgb[..., :3])
    h, w = rgb.shape[:2]
    image = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(image.copy())


class _PathRow(QWidget):
    """A path and its "…" picker: a file to open or save, or a folder (``folder``)."""

    def __init__(
        self, caption: str, filters: str, parent=None, save: bool = False, folder: bool = False
    ):
        super().__init__(parent)
        self.edit = QLineEdit()
        self.button = QPushButton("…")
        self.button.setFixedWidth(28)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit)
        lay.addWidget(self.button)
        self._caption, self._filters, self._save, self._folder = caption, filters, save, folder
        self.button.clicked.connect(self.browse)

    def browse(self) -> None:
        if self._folder:
            path = QFileDialog.getExistingDirectory(self, self._caption, self.edit.text())
        else:
            pick = QFileDialog.getSaveFileName if self._save else QFileDialog.getOpenFileName
            path, _ = pick(self, self._caption, self.edit.text(), self._filters)
        if path:
            self.edit.setText(path)
            self.edit.editingFinished.emit()


class NormalizationWidget(QWidget):
    """Source, target, method and its options; Live, Whole slide…, Cancel, Save preset."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.model = NormalizationModel(napari_viewer)
        self.settings = QSettings(*SETTINGS)
        self.live = None
        self._worker = None
        self._progress = None
        self._summary_worker = None
        self._closed = False

        self.source = QComboBox()
        self.kind = QComboBox()
        for box in (self.source, self.kind):
            box.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            box.setMinimumContentsLength(12)
        for k in TARGET_KINDS:
            self.kind.addItem(KIND_LABELS[k], k)
        self.target_layer = QComboBox()
        self.target_shapes = QComboBox()
        for box in (self.target_layer, self.target_shapes):
            box.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            box.setMinimumContentsLength(12)
        self.target_file = _PathRow(
            "Target picture or stain preset",
            "Images and presets (*.png *.jpg *.jpeg *.tif *.tiff *.json);;All files (*)",
        )
        self.thumbnail = QLabel()
        self.thumbnail.setFixedHeight(96)
        self.thumbnail.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.stains = QLabel()
        self.stains.setWordWrap(True)
        self.stains.setTextFormat(Qt.TextFormat.RichText)
        self.method = QComboBox()
        self.method.addItems(list(self.model.methods()))
        self.device = QComboBox()
        from ...devices import available_devices

        for name, label in available_devices():
            self.device.addItem(f"{name}: {label}" if name != "cpu" else "cpu", name)

        self.diffusion = QGroupBox("StainFuser")
        self.weights = _PathRow(
            "StainFuser weights", "Checkpoints (*.safetensors *.pth);;All files (*)"
        )
        self.weights.edit.setText(str(self.settings.value("stainfuser/weights", "") or ""))
        self.steps = QSpinBox()
        self.steps.setRange(1, 1000)
        self.steps.setValue(20)
        self.sampler = QComboBox()
        self.sampler.addItems(list(self.model.samplers()))
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.precision = QComboBox()
        self.precision.addItems(list(PRECISIONS))
        self.distilled = QCheckBox("fast (distilled)")
        self.distilled.setToolTip(
            "Distil StainFuser into a per-pixel colour map on this slide's tissue first, "
            "then stain through it at lookup-table speed (colour only, no texture)"
        )
        form = QFormLayout(self.diffusion)
        form.addRow("weights", self.weights)
        form.addRow("steps", self.steps)
        form.addRow("sampler", self.sampler)
        form.addRow("seed", self.seed)
        form.addRow("precision", self.precision)
        form.addRow("", self.distilled)

        self.live_button = QPushButton("Live")
        self.live_button.setToolTip("Stain the view as you pan and zoom, visible region first")
        self.slide_button = QPushButton("Whole slide…")
        self.cancel_button = QPushButton("Cancel")
        self.preset_button = QPushButton("Save preset")
        self.open_button = QPushButton("Open result")
        self.open_button.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.whole = WholeSlideRun(
            "stain normalization", self.status, self.open_button, self._failed
        )

        top = QFormLayout()
        top.addRow("source", self.source)
        top.addRow("target", self.kind)
        top.addRow("target layer", self.target_layer)
        top.addRow("shapes layer", self.target_shapes)
        top.addRow("target file", self.target_file)
        top.addRow("", self.thumbnail)
        top.addRow("", self.stains)
        top.addRow("method", self.method)
        top.addRow("device", self.device)
        self._form = top
        buttons = QHBoxLayout()
        for b in (self.live_button, self.slide_button, self.cancel_button, self.preset_button):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.diffusion)
        lay.addLayout(buttons)
        lay.addWidget(self.open_button)
        lay.addWidget(self.status)
        lay.addStretch(1)

        self.source.currentTextChanged.connect(self._on_source)
        self.kind.currentIndexChanged.connect(self._on_kind)
        self.target_layer.currentTextChanged.connect(self._on_target_changed)
        self.target_shapes.currentTextChanged.connect(self._on_target_changed)
        self.target_file.edit.editingFinished.connect(self._on_target_changed)
        self.method.currentTextChanged.connect(self._on_method)
        self.live_button.clicked.connect(self.start_live)
        self.slide_button.clicked.connect(self.whole_slide)
        self.cancel_button.clicked.connect(self.cancel)
        self.preset_button.clicked.connect(self.save_preset)
        self.open_button.clicked.connect(self.open_result)
        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed,
                   napari_viewer.layers.events.moved):  # fmt: skip
            ev.connect(self._refresh_layers)
        self.destroyed.connect(_closer(self))
        self._refresh_layers()
        # With a second image in the viewer it is the likely target; else a file.
        if (
            self.target_layer.count()
            and self.target_layer.currentText() != self.source.currentText()
        ):
            self.kind.setCurrentIndex(TARGET_KINDS.index("layer"))
        else:
            self.kind.setCurrentIndex(TARGET_KINDS.index("file"))
        self._on_kind()
        self._on_method(self.method.currentText())

    # -- keeping the choices current ------------------------------------------------------

    def _refresh_layers(self, event=None) -> None:
        images = self.model.image_layers()
        source = self.source.currentText() or (images[0] if images else "")
        targets = [n for n in self.model.image_layers(exclude_results=False) if n != source]
        for box, names in (
            (self.source, images),
            (self.target_layer, targets),
            (self.target_shapes, self.model.shapes_layers()),
        ):
            current = box.currentText()
            box.blockSignals(True)
            box.clear()
            box.addItems(names)
            if current in names:
                box.setCurrentText(current)
            elif box is self.target_layer and len(names) > 1:
                # A second image is the likely target of the first.
                box.setCurrentText(
                    next((n for n in names if n != self.source.currentText()), names[0])
                )
            box.blockSignals(False)
        self.model.source = self.source.currentText() or None
        self.model.target_layer = self.target_layer.currentText() or None
        self.model.target_shapes = self.target_shapes.currentText() or None

    def _on_source(self, name: str) -> None:
        self.model.source = name or None
        self._refresh_layers()  # the target list leaves the source out
        self._restart_if_live()

    def _on_kind(self, index=None) -> None:
        kind = self.kind.currentData()
        self.model.target_kind = kind
        self._form.setRowVisible(self.target_layer, kind in ("layer", "region"))
        self._form.setRowVisible(self.target_shapes, kind == "region")
        self._form.setRowVisible(self.target_file, kind in ("preset", "file"))
        self._on_target_changed()

    def _on_method(self, method: str) -> None:
        self.model.method = method
        self.diffusion.setVisible(self.model.diffusion())
        self.preset_button.setEnabled(self.model.can_save_preset())
        self._on_target_changed()

    def _on_target_changed(self, *args) -> None:
        self.model.target_layer = self.target_layer.currentText() or None
        self.model.target_shapes = self.target_shapes.currentText() or None
        self.model.target_path = self.target_file.edit.text().strip() or None
        self.update_summary()
        self._restart_if_live()

    def _sync(self) -> None:
        """Copy the option widgets into the model (the weights are remembered)."""
        m = self.model
        m.source = self.source.currentText() or None
        m.target_kind = self.kind.currentData()
        m.target_layer = self.target_layer.currentText() or None
        m.target_shapes = self.target_shapes.currentText() or None
        m.target_path = self.target_file.edit.text().strip() or None
        m.method = self.method.currentText()
        m.device = self.device.currentData() or "cpu"
        m.weights = self.weights.edit.text().strip() or None
        m.steps = self.steps.value()
        m.sampler = self.sampler.currentText()
        m.seed = self.seed.value()
        m.precision = self.precision.currentText()
        m.distilled = self.distilled.isChecked()
        if m.weights:
            self.settings.setValue("stainfuser/weights", m.weights)

    # -- the target's thumbnail and stain ----------------------------------------------------

    def update_summary(self) -> None:
        self._sync()
        try:
            target = self.model.target()
        except StainFuserError as exc:
            self.thumbnail.clear()
            self.stains.setText(f"<i>{exc}</i>")
            return
        model = self.model
        self._summary_seq = seq = getattr(self, "_summary_seq", 0) + 1

        def show(summary):
            if seq == self._summary_seq:  # an older target's summary is stale
                self._show_summary(summary)

        def failed(exc):
            if seq == self._summary_seq:
                self.stains.setText(f"<i>{' '.join(str(exc).split())}</i>")

        self._summary_worker = in_thread(lambda: model.summary(target), show, failed)

    def _show_summary(self, summary) -> None:
        if summary.thumbnail is not None:
            self.thumbnail.setPixmap(_pixmap(summary.thumbnail))
        else:
            self.thumbnail.clear()
        rows = [
            f'<span style="background-color: rgb{c}">&nbsp;&nbsp;&nbsp;&nbsp;</span> {name}: {text}'
            for name, c, text in summary.stains
        ]
        self.stains.setText("<br>".join(rows) or f"{summary.method}: target encoded when it starts")

    # -- live ---------------------------------------------------------------------------------

    def _restart_if_live(self) -> None:
        if self.live is not None and not self.live.closed:
            self.start_live()

    def start_live(self) -> None:
        """A result layer above the source that follows the camera."""
        self.stop_live()
        self._sync()
        model = self.model
        try:
            source = model.source_layer()
            target = model.target()
        except StainFuserError as exc:
            notify_failure(exc)
            return

        def open_job():
            from ...tiling.lazy import ResultPyramid

            return ResultPyramid(model.prepare(model.job(target, live=True), live=True))

        self.status.setText(f"fitting {model.method} and opening {source.name} …")
        self._worker = in_thread(
            open_job, lambda pyr: self._show_live(source, pyr, target), self._failed
        )

    def _show_live(self, source, pyramid, target=None) -> None:
        from ..live import LiveResult

        self._worker = None
        if self._closed or source not in self.viewer.layers:
            pyramid.close()
            return
        self._progress = ProgressFeed(napari_progress(total=0, desc="stain normalization (live)"))
        self.live = LiveResult(
            self.viewer, source, pyramid, self.model.result_name(), self._live_progress, target
        )
        self.status.setText("live: staining the visible region first")

    def _live_progress(self, p) -> None:
        self.status.setText(
            f"live: {p.done} tiles done, {p.rate:.1f} tiles/s, {p.pending} queued ({p.what})"
        )
        # napari's bar processes events: read it once, use it last.
        if self._progress is not None:
            self._progress.advance(p, f"stain normalization ({p.what})")

    def stop_live(self) -> None:
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

    # -- whole slide ----------------------------------------------------------------------------

    def whole_slide(self, path: str | None = None) -> None:
        """Ask for an output and run the batch job with a progress bar."""
        if path is None or path is False:
            path, _ = QFileDialog.getSaveFileName(
                self,
                "Normalize the whole slide into",
                "",
                "OME-TIFF (*.ome.tif);;OME-Zarr (*.ome.zarr)",
            )
            if not path:
                return
        self._sync()
        from ...batch.output import OutputSpec

        try:
            out = OutputSpec.create(path)
            job = self.model.job()
        except StainFuserError as exc:
            notify_failure(exc)
            return
        model = self.model

        def run(report):
            from ...batch.run import run_job

            prepared = model.prepare(job)  # distilled first, off the UI thread
            return run_job(
                prepared, out, resume=out.work.exists(), overwrite=False, progress=report
            )

        self.whole.start(out, run)

    def open_result(self) -> None:
        if self.whole.result_path is not None:
            self.viewer.open(str(self.whole.result_path), plugin="napari-stainfuser")

    # -- the rest --------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the live layer's work and any whole-slide run (which can be resumed)."""
        self.whole.cancel()
        self.stop_live()
        self.status.setText("cancelled")

    def save_preset(self, path: str | None = None) -> None:
        self._sync()
        if path is None or path is False:
            path, _ = QFileDialog.getSaveFileName(
                self, "Save stain preset", "", "Stain preset (*.json)"
            )
            if not path:
                return
        try:
            saved = self.model.save_preset(path)
        except StainFuserError as exc:
            notify_failure(exc)
            return
        self.status.setText(f"saved {saved}")

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Everything this widget started, stopped (a whole-slide run stops at its next
        tile group and can be resumed)."""
        self._closed = True
        self.whole.close()
        self.stop_live()


def _closer(widget):
    # Not a method: the widget is being deleted when this runs.
    live = [widget]

    def close(*_):
        w = live.pop() if live else None
        if w is not None:
            try:
                w.shutdown()
            except RuntimeError:  # its Qt parts are already gone
                if w.live is not None:
                    w.live.pyramid.close()

    return close
