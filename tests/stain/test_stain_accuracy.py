"""Accuracy against ground truth on synthetic pairs: the same tissue rendered
with stain matrix A (input) and matrix B (ground truth); the target is B's
rendering of another region of the same synthetic slide."""

import pytest

from napari_stainfuser.metrics import image_metrics
from napari_stainfuser.slide.synthetic import MACENKO_REFERENCE_HE, SyntheticTissue, synthetic_pair
from napari_stainfuser.stain import RUIFROK_HE, get_normalizer

SIZE = 512


@pytest.fixture(scope="module")
def pair():
    a, truth = synthetic_pair(
        (SIZE, SIZE), seed=0, matrix_a=RUIFROK_HE, matrix_b=MACENKO_REFERENCE_HE
    )
    _, target = synthetic_pair(
        (SIZE, SIZE),
        seed=0,
        matrix_a=RUIFROK_HE,
        matrix_b=MACENKO_REFERENCE_HE,
        origin=(0, 3 * SIZE),
    )
    return a.compute(), truth.compute(), target.compute()


@pytest.mark.parametrize("method", ["macenko", "vahadane", "reinhard"])
def test_normalized_is_closer_to_ground_truth_than_the_input(method, pair):
    a, truth, target = pair
    before = image_metrics(a, truth)
    out = get_normalizer(method).fit(target).transform(a)
    after = image_metrics(out, truth)
    # A different hue is the whole error here; a stain normalizer must remove
    # most of it, not merely nudge it.
    assert after["delta_e2000"] < 0.5 * before["delta_e2000"]
    assert after["psnr"] > before["psnr"] + 5.0


def test_ruifrok_cannot_change_hue(pair):
    # Ruifrok keeps its fixed stain vectors and only rescales amounts, so with
    # a different eosin/hematoxylin hue in the target it stays far from it.
    a, truth, target = pair
    before = image_metrics(a, truth)["delta_e2000"]
    out = get_normalizer("ruifrok").fit(target).transform(a)
    assert image_metrics(out, truth)["delta_e2000"] > 0.8 * before


@pytest.mark.parametrize("scale", [0.7, 1.4], ids=["under-stained", "over-stained"])
def test_ruifrok_corrects_staining_intensity(scale):
    # What Ruifrok is for: the same stain vectors, but every concentration of
    # the source is scaled; the ground truth is the same tissue at ×1.
    tissue = SyntheticTissue(seed=0, mpp=0.5)
    a = tissue.render_he((SIZE, SIZE), RUIFROK_HE, scale=scale).compute()
    truth = tissue.render_he((SIZE, SIZE), RUIFROK_HE).compute()
    target = tissue.render_he((SIZE, SIZE), RUIFROK_HE, origin=(0, 3 * SIZE)).compute()
    before = image_metrics(a, truth)
    after = image_metrics(get_normalizer("ruifrok").fit(target).transform(a), truth)
    assert after["delta_e2000"] < 0.5 * before["delta_e2000"]
    assert after["psnr"] > before["psnr"] + 5.0
