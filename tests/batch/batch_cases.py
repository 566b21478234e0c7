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


class MaskingStainer:
    """A small real stainer with extra outputs, for testing how they flow.

    The image is inverted; the "mask" is a probability that rises with
    darkness, (sum of RGB - 419.5) / 120, clipped to [0, 1] (never exactly
    one half for integer sums, so thresholding after blending is exact); the
    "uncertainty" is the sum of RGB / 765. All three are per-pixel functions,
    so the blended, tiled output must equal them computed on the whole image.
    It declares an overlap, so its tiles go through the cache and blending.
    """

    def __init__(self, tile=128, overlap=32, batch_size=4):
        from napari_stainfuser.stainer import ExtraOutput, StainerSpec

        self.spec = StainerSpec(
            tile_size=tile, overlap=overlap, per_pixel=False, batch_size=batch_size,
            extras=(ExtraOutput("mask", "labels"), ExtraOutput("uncertainty", "image")),
        )  # fmt: skip

    def stain(self, tiles, noise=None):
        from napari_stainfuser.stainer import StainResult

        total = tiles.double().sum(1, keepdim=True)
        return StainResult(
            255 - tiles,
            {
                "mask": ((total - 419.5) / 120).clamp(0, 1).float(),
                "uncertainty": (total / 765).float(),
            },
        )


def masking_truth(image: np.ndarray, tissue: np.ndarray) -> dict:
    """What MaskingStainer's outputs must be on the whole image, glass passed through."""
    total = image.astype(np.float64).sum(-1)
    return {
        "image": np.where(tissue[..., None], 255 - image, image),
        "mask": ((total - 419.5) / 120 >= 0.5) & tissue,
        "uncertainty": np.where(tissue, total / 765, 0.0),
    }
