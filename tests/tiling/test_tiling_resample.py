"""Region-wise resampling equals whole-image resampling and matches PIL."""

import numpy as np
import pytest
from PIL import Image

from napari_stainfuser.tiling.resample import resample_region, scale_factor, scaled_shape

DATA = __import__("pathlib").Path(__file__).parents[1] / "data"


def _image(h=120, w=140):
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)).astype(np.float64)
    # Smooth-ish content plus texture, like tissue.
    img = np.kron(base, np.ones((4, 4, 1)))[:h, :w] * 0.7 + rng.integers(0, 77, (h, w, 3))
    return img.astype(np.uint8)


@pytest.mark.parametrize("factor", [0.5, 2.0, 0.37, 1.6])
def test_region_equals_crop_of_whole(factor):
    img = _image()
    h, w = scaled_shape(img.shape, factor)
    whole = resample_region(img, 0, h, 0, w, factor)
    for y0, y1, x0, x1 in [(0, 10, 0, 10), (h - 7, h, w - 9, w), (13, h // 2, 22, w - 3)]:
        np.testing.assert_array_equal(
            resample_region(img, y0, y1, x0, x1, factor), whole[y0:y1, x0:x1]
        )


@pytest.mark.parametrize(("size", "out"), [(120, 60), (120, 240), (120, 30)])
def test_interior_matches_pil_antialiased_bilinear(size, out):
    img = _image(size, size)
    factor = out / size
    ours = resample_region(img, 0, out, 0, out, factor).astype(int)
    ref = np.asarray(Image.fromarray(img).resize((out, out), Image.BILINEAR)).astype(int)
    m = max(2, int(2 / factor))  # PIL truncates the filter at the border instead of replicating
    m = min(m, out // 4)
    assert np.abs(ours[m:-m, m:-m] - ref[m:-m, m:-m]).max() <= 1


def test_scale_factor():
    assert scale_factor(0.25, 0.5) == 0.5
    assert scale_factor(0.5, 0.5) == 1.0
    assert scale_factor(0.499, 0.5) == 1.0  # within tolerance: no resampling
    assert scale_factor(None, 0.5) == 1.0
    assert scale_factor(0.5, None) == 1.0
