"""Makes ``virtual-ihc-widget.png``: the Virtual IHC dock with the CD3 model that
``stainfuser demo --ihc`` trains, live over the demo's unseen H&E (K = 2, 5 DDIM steps,
128-px tiles), once every tile has landed.

    stainfuser demo --ihc            # writes stainfuser-demo-ihc/
    xvfb-run -a -s "-screen 0 1600x1000x24" \
        python docs/screenshots/virtual_ihc_widget.py stainfuser-demo-ihc docs/screenshots/virtual-ihc-widget.png
"""

import sys
import time

import napari
import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

from napari_stainfuser._napari._qt.virtual_ihc_widget import VirtualIHCWidget


def pump(seconds, done):
    app, end = QApplication.instance(), time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.02)
        if done():
            return True
    return False


def main(demo: str, out: str) -> None:
    he = np.asarray(Image.open(f"{demo}/he.png").convert("RGB"))
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    viewer.add_image(he, rgb=True, name="H&E", scale=(1.0, 1.0), units="µm")
    w = VirtualIHCWidget(viewer)
    viewer.window.add_dock_widget(w, name="Virtual IHC", area="right")
    w.weights.edit.setText(f"{demo}/run")
    w.weights.edit.editingFinished.emit()
    w.samples.setValue(2)
    w.steps.setValue(5)
    w.tile.setCurrentIndex(w.tile.findData(128))
    viewer.reset_view()
    w.live_button.click()
    assert pump(60, lambda: w.live is not None), w.status.text()
    assert pump(600, lambda: w.live.filled_fraction() >= 1.0), w.status.text()
    pump(1.0, lambda: False)
    viewer.screenshot(out, canvas_only=False, flash=False)
    print(f"wrote {out}: {w.status.text()}")
    w.cancel()
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
