"""The "Stain QA" dock widget: thin Qt over :class:`QAModel`.

Compare (side by side with linked cameras, a blend slider, a flicker key),
the stain plot and the measures of the visible region (recomputed off the UI
thread after the view settles), and a before/after PNG of the view.
"""

from __future__ import annotations

import html

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from ...errors import StainFuserError
from ..qa_model import QAModel
from .threads import in_thread, notify_failure

FLICKER_KEY = "f"
SETTLE_MS = 300
COLOURS = {"source": "tab:blue", "target": "tab:green", "result": "tab:red"}


class QAWidget(QWidget):
    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.model = QAModel(napari_viewer)
        self._worker = None
        self.report = None

        self.result = QComboBox()
        self.result.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.result.setMinimumContentsLength(12)
        self.side = QCheckBox("side by side")
        self.side.setToolTip("source and result in a grid, cameras linked")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 100)
        self.slider.setValue(100)
        self.flicker_button = QPushButton(f"Flicker ({FLICKER_KEY})")
        self.figure = Figure(figsize=(3.2, 2.6), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self.canvas.setMinimumWidth(160)
        self.measures = QLabel("")
        self.measures.setWordWrap(True)
        self.export_button = QPushButton("Export before/after PNG…")

        form = QFormLayout()
        form.addRow("result", self.result)
        form.addRow("", self.side)
        form.addRow("blend (source → result)", self.slider)
        form.addRow("", self.flicker_button)
        inner = QWidget()
        lay = QVBoxLayout(inner)
        lay.addLayout(form)
        lay.addWidget(self.measures)
        lay.addWidget(self.canvas)
        lay.addWidget(self.export_button)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        # As wide as the dock: the measures wrap instead of scrolling sideways.
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        self._settle = QTimer()
        self._settle.setSingleShot(True)
        self._settle.setInterval(SETTLE_MS)
        self._settle.timeout.connect(self.update_measures)
        self.result.currentTextChanged.connect(self._on_result)
        self.side.toggled.connect(self._guard(self.model.side_by_side))
        self.slider.valueChanged.connect(self._guard(lambda v: self.model.blend(v / 100)))
        self.flicker_button.clicked.connect(self._guard(lambda *_: self.model.flicker()))
        self.export_button.clicked.connect(self.export)
        napari_viewer.bind_key(FLICKER_KEY, self._flicker_key, overwrite=True)
        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            ev.connect(self._refresh_layers)
        napari_viewer.camera.events.center.connect(self._schedule)
        napari_viewer.camera.events.zoom.connect(self._schedule)
        self._refresh_layers()

    def _guard(self, fn):
        def run(*args):
            try:
                fn(*args)
            except StainFuserError as exc:
                notify_failure(exc)

        return run

    def _flicker_key(self, viewer) -> None:
        self._guard(lambda: self.model.flicker())()

    def _refresh_layers(self, event=None) -> None:
        names = self.model.results()
        current = self.result.currentText()
        self.result.blockSignals(True)
        self.result.clear()
        self.result.addItems(names)
        if current in names:
            self.result.setCurrentText(current)
        self.result.blockSignals(False)
        self._on_result(self.result.currentText())

    def _on_result(self, name: str) -> None:
        self.model.result = name or None
        self.model.source = None
        self._schedule()

    def _live(self):
        """The live result behind the chosen result layer."""
        from ..live import live_result_of

        name = self.model.result
        if not name or name not in self.viewer.layers:
            return None
        return live_result_of(self.viewer.layers[name])

    def _schedule(self, event=None) -> None:
        self._settle.start()

    def update_measures(self) -> None:
        live = self._live()
        if live is None:
            self.measures.setText("<i>start a live result in Stain normalization to measure it</i>")
            return
        model, target = self.model, live.target
        self._seq = seq = getattr(self, "_seq", 0) + 1

        def show(report):
            if seq == self._seq:  # a measure of an earlier view is stale
                self._show(report)

        def failed(exc):
            if seq == self._seq:
                self.measures.setText(f"<i>{' '.join(str(exc).split())}</i>")

        self._worker = in_thread(lambda: model.measure(live, target), show, failed)

    def _show(self, report) -> None:
        self.report = report
        self.measures.setText("<br>".join(html.escape(line) for line in report.lines()))
        ax = self.figure.gca() if self.figure.axes else self.figure.add_subplot(111)
        ax.clear()
        for name, pts in report.points.items():
            ax.scatter(
                pts[:, 0], pts[:, 1], s=2, alpha=0.3, color=COLOURS[name], label=f"{name} pixels"
            )
        for name, vecs in report.vectors.items():
            for v in vecs:
                ax.annotate("", xy=(v[0], v[1]), xytext=(0, 0),
                            arrowprops={"arrowstyle": "->", "color": COLOURS[name], "lw": 2})  # fmt: skip
            ax.plot([], [], color=COLOURS[name], lw=2, label=f"{name} stain vectors")
        ends = [v for vecs in report.vectors.values() for v in vecs]
        ends += [p for pts in report.points.values() for p in (pts.min(0), pts.max(0))]
        if ends:
            lo, hi = np.min(ends, axis=0), np.max(ends, axis=0)
            pad = 0.05 * (hi - lo + 1e-6)
            ax.set_xlim(min(lo[0], 0) - pad[0], hi[0] + pad[0])
            ax.set_ylim(min(lo[1], 0) - pad[1], max(hi[1], 0) + pad[1])
        ax.axhline(0, color="0.8", lw=0.5)
        ax.axvline(0, color="0.8", lw=0.5)
        ax.set_xlabel("optical density on the target's stain plane, axis 1", fontsize=7)
        ax.set_ylabel("axis 2", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6, loc="best")
        self.canvas.draw_idle()

    def export(self, path: str | None = None) -> None:
        live = self._live()
        if live is None:
            notify_failure(StainFuserError("export: no live result to export"))
            return
        if path is None or path is False:
            path, _ = QFileDialog.getSaveFileName(self, "Export before/after", "", "PNG (*.png)")
            if not path:
                return
        try:
            self.model.export(live, path)
        except StainFuserError as exc:
            notify_failure(exc)
