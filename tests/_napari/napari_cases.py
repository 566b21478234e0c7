"""Helpers shared by the napari tests: data, event pumping, screenshots."""

import os
import shutil
import threading
import time
from pathlib import Path

DATA = Path(__file__).parents[1] / "data"
CMU = DATA / "CMU-1-Small-Region.svs"
TARGET = DATA / "he" / "torchstain-target.png"
WEIGHTS = DATA / "stainfuser-reference" / "checkpoint.safetensors"
# Set to a folder to keep the screenshots the tests take (the README's come from there).
SCREENSHOT_DIR = os.environ.get("STAINFUSER_SCREENSHOT_DIR")


def pump(seconds: float, until=None) -> bool:
    """Run the Qt event loop for ``seconds`` or until ``until()`` is true; returns it."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        app.processEvents()
        if until is not None and until():
            return True
        time.sleep(0.01)
    return bool(until()) if until is not None else True


def engine_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("stainfuser-engine")]


def screenshot(viewer, path: Path, name: str) -> Path:
    out = Path(path) / name
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(SCREENSHOT_DIR) / name)
    return out
