"""Tissue detection against the synthetic slide's true tissue mask and on real data."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_stainfuser.errors import ParameterError
from napari_stainfuser.slide import open_slide
from napari_stainfuser.slide.synthetic import SyntheticTissue
from napari_stainfuser.stain import mask_at_shape, otsu_threshold, tissue_mask

DATA = Path(__file__).parents[1] / "data"


def _rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(DATA / name))[..., :3].copy()


@pytest.mark.parametrize("origin", [(0, 0), (300, 400)])
def test_mask_matches_synthetic_ground_truth(origin):
    # 5 µm/px: a low-resolution view with tissue islands on glass.
    tissue = SyntheticTissue(seed=0, mpp=5.0)
    rgb = tissue.render_he((512, 512), origin=origin).compute()
    truth = tissue.tissue_mask((512, 512), origin=origin).compute()
    ours = tissue_mask(rgb).mask
    assert 0.1 < truth.mean() < 0.9  # both classes present
    iou = (ours & truth).sum() / (ours | truth).sum()
    assert iou > 0.9


def test_real_tiles():
    almost_white = tissue_mask(_rgb("he/histolab-almost-white-2.png"))
    dense = tissue_mask(_rgb("he/torchstain-source.png"))
    assert 0.0 < almost_white.fraction < 0.2
    assert dense.fraction > 0.7
    assert almost_white.mask.dtype == bool and almost_white.mask.shape == (512, 512)


@pytest.mark.parametrize(
    "image",
    [
        np.full((64, 64, 3), 255, np.uint8),
        np.full((64, 64, 3), 243, np.uint8),
        np.zeros((0, 5, 3), np.uint8),
        np.full((1, 1, 3), 255, np.uint8),
    ],
    ids=["white", "glass-grey", "empty", "1x1"],
)
def test_glass_and_degenerate_images_have_no_tissue(image):
    m = tissue_mask(image)
    assert m.mask.shape == image.shape[:2]
    assert not m.mask.any()


def test_bad_image_is_a_parameter_error():
    with pytest.raises(ParameterError, match="tile: expected an H×W×3"):
        tissue_mask(np.zeros((8, 8, 4), np.uint8), name="tile")
    with pytest.raises(ParameterError, match="uint8"):
        tissue_mask(np.zeros((8, 8, 3), np.float32))


def test_otsu_separates_two_populations():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.2, 0.03, 5000), rng.normal(0.8, 0.03, 5000)]).clip(0, 1)
    assert 0.3 < otsu_threshold(v) < 0.7
    assert np.isnan(otsu_threshold(np.full(100, 0.5)))


def test_slide_mask_on_low_resolution_level():
    slide = open_slide(DATA / "CMU-1-Small-Region.svs")
    m = tissue_mask(slide)  # levels: 2967×2220, 1483×1110, 741×555
    assert m.level == 1
    assert m.mask.shape == slide.levels[1].shape[:2]
    np.testing.assert_allclose(m.downsample, (2967 / 1483, 2220 / 1110))
    # The same as detecting on that level read directly.
    direct = tissue_mask(np.asarray(slide.levels[1]))
    np.testing.assert_array_equal(m.mask, direct.mask)
    # A smaller budget strides the coarsest level, with a consistent answer.
    small = tissue_mask(slide, max_side=600)
    assert max(small.mask.shape) <= 600 and small.level == 2
    assert abs(small.fraction - m.fraction) < 0.05
    # Glass right of the tissue's top end; tissue in the middle of the strip.
    assert m.region(200, 1800, 600, 2200).mean() < 0.02  # a few dust specks at most
    assert m.region(2000, 900, 2400, 1300).mean() > 0.8
    full = m.at_shape(slide.levels[0].shape[:2])
    assert full.shape == (2967, 2220)
    assert abs(full.mean() - m.fraction) < 0.01


def test_mask_at_shape_is_nearest_neighbour():
    m = np.array([[True, False], [False, True]])
    np.testing.assert_array_equal(
        mask_at_shape(m, (4, 4)),
        np.kron(m, np.ones((2, 2), bool)),
    )
    np.testing.assert_array_equal(mask_at_shape(np.kron(m, np.ones((3, 3), bool)), (2, 2)), m)


def test_otsu_and_small_object_removal_agree_with_scikit_image():
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects

    from napari_stainfuser.slide import open_slide
    from napari_stainfuser.stain.tissue import _detect, otsu_threshold, saturation_luminance

    img = np.asarray(open_slide(DATA / "CMU-1-Small-Region.svs").levels[1])
    for values in saturation_luminance(img):
        counts, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
        centre = threshold_otsu(hist=(counts, (edges[:-1] + edges[1:]) / 2))
        # The same bin: skimage gives its centre, ours its upper edge.
        assert otsu_threshold(values) == pytest.approx(centre + 0.5 / 256, abs=1e-9)
    sat, lum = saturation_luminance(img)
    raw = (sat > 0.1) | (lum < 0.8)
    opened = ndimage.binary_opening(raw, structure=np.ones((3, 3), bool))
    ours, _ = _detect(img, (0.1, 0.1), (0.8, 0.8), 1, 16)
    np.testing.assert_array_equal(ours, remove_small_objects(opened, max_size=15))
    assert 0.2 < ours.mean() < 0.9
