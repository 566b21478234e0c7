"""Constants and helpers shared by the batch-run tests.

A uniquely named module rather than ``from conftest import``: every test
folder's conftest is the top-level module ``conftest``, so importing from it
picks whichever folder's conftest pytest loaded last.
"""

from pathlib import Path

import numpy as np

DATA = Path(__file__).parents[1] / "data"
CMU = DATA / "CMU-1-Small-Region.svs"
TARGET = DATA / "he" / "torchstain-target.png"
WEIGHTS = DATA / "stainfuser-reference" / "checkpoint.safetensors"
CLASSICAL = ("macenko", "reinhard", "ruifrok", "vahadane")
# Direct computation (no 256³ lookup table) and a small fitting sample keep
# each fit well under a second; the per-pixel maps are the same.
FAST = {"lut": False, "max_pixels": 20000}


def read_level0(path) -> np.ndarray:
    """Level 0 of an output, decoded independently of our reader."""
    path = Path(path)
    if path.name.endswith(".ome.zarr"):
        import zarr

        return np.asarray(zarr.open_group(str(path), mode="r")["0"][:]).transpose(1, 2, 0)
    import tifffile

    return tifffile.imread(path, level=0)


def tiny_stainfuser(**kw):
    from napari_stainfuser.stainers import make_stainer

    opts = {"steps": 2, "tile_size": 128, "overlap": 32, **kw}
    return make_stainer("stainfuser", TARGET, weights=WEIGHTS, **opts)
