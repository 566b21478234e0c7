"""Constants and helpers shared by the stain tests (fixtures stay in conftest.py).

A uniquely named module rather than ``from conftest import``: every test
folder's conftest is imported as the top-level module ``conftest``, so that
import would pick whichever folder's conftest was loaded last.
"""

from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).parents[1] / "data"
METHODS = ("macenko", "reinhard", "ruifrok", "vahadane")


def read_rgb(name: str) -> np.ndarray:
    """A test image as H×W×3 uint8 (alpha dropped), decoded by Pillow."""
    return np.asarray(Image.open(DATA / name).convert("RGB")).copy()
