"""Inputs that crash other stain normalizers: background, pen, black, saturated,
tiny and single-colour images, and bad arguments."""

import numpy as np
import pytest
import torch
from stain_cases import METHODS

from napari_stainfuser.errors import ParameterError, StainEstimationError
from napari_stainfuser.stain import get_normalizer, rgb_to_lab, tissue_mask
from napari_stainfuser.stain.lab import delta_e2000_rgb, delta_e_ciede2000

SATURATED = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]], np.uint8
)


def _inputs(images):
    return {
        "white": np.full((64, 64, 3), 255, np.uint8),
        "almost_white": images["almost_white"],
        "pen": images["pen"],
        "ihc": images["ihc"],
        "black": np.zeros((32, 32, 3), np.uint8),
        "saturated": np.tile(SATURATED[None], (6, 1, 1)),
        "1x1": np.array([[[200, 100, 150]]], np.uint8),
        "single_colour": np.full((50, 40, 3), (180, 90, 160), np.uint8),
        "empty": np.zeros((0, 7, 3), np.uint8),
    }


INPUTS = [
    "white",
    "almost_white",
    "pen",
    "ihc",
    "black",
    "saturated",
    "1x1",
    "single_colour",
    "empty",
]


@pytest.mark.parametrize("slide_level", [False, True], ids=["per-image", "slide-level"])
@pytest.mark.parametrize("method", METHODS)
def test_hard_inputs_keep_dtype_shape_and_stay_finite(method, slide_level, images, fitted):
    norm = fitted(method, slide_level=slide_level)
    for name, x in _inputs(images).items():
        out = norm.transform(x)
        assert out.dtype == np.uint8 and out.shape == x.shape, name
        f = norm.transform(torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255.0)
        assert f.shape == (1, 3, *x.shape[:2]) and f.dtype == torch.float32, name
        assert torch.isfinite(f).all(), name
        assert f.numel() == 0 or (float(f.min()) >= 0.0 and float(f.max()) <= 1.0), name


@pytest.mark.parametrize("slide_level", [False, True], ids=["per-image", "slide-level"])
@pytest.mark.parametrize("method", METHODS)
def test_white_stays_white(method, slide_level, fitted, images):
    norm = fitted(method, slide_level=slide_level)
    white = np.full((16, 16, 3), 255, np.uint8)
    assert float(delta_e2000_rgb(norm.transform(white), white).max()) < 2.0
    # A white pixel inside real tissue too. The tile has enough tissue that the
    # per-image path really estimates its own statistics from it.
    tile = images["source"][192:288, 288:384].copy()
    tile[0, 0] = 255
    get_normalizer(method).fit(tile)  # estimable: raises otherwise
    out = norm.transform(tile)
    assert float(delta_e2000_rgb(out[:1, :1], tile[:1, :1]).max()) < 2.0


@pytest.mark.parametrize("method", METHODS)
def test_background_stays_background_with_slide_statistics(method, images, fitted):
    # The glass of the almost-white tile is still glass after normalization.
    norm = fitted(method, slide_level=True)
    tile = images["almost_white"]
    glass = ~tissue_mask(tile).mask
    still_glass = ~tissue_mask(norm.transform(tile)).mask
    assert still_glass[glass].mean() > 0.95


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target", ["white", "1x1", "empty"])
def test_target_without_tissue_is_an_estimation_error(method, target, images):
    x = _inputs(images)[target]
    with pytest.raises(StainEstimationError, match=f"^{target}: too little tissue") as err:
        get_normalizer(method).fit(x, name=target)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", ["macenko", "vahadane", "reinhard"])
def test_single_colour_target_is_an_estimation_error(method, images):
    with pytest.raises(StainEstimationError, match="^flat: .*single colour"):
        get_normalizer(method).fit(np.full((60, 60, 3), (180, 90, 160), np.uint8), name="flat")


def _mean_tissue_lab(image: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    return rgb_to_lab(image[mask]).double().mean(0)


@pytest.mark.parametrize("method", METHODS)
def test_pen_marked_target_can_be_fitted_and_used(method, images):
    pen, src = images["pen"], images["source"].copy()
    src[:8, :8] = 255  # a patch of glass
    norm = get_normalizer(method).fit(pen, name="pen target")
    out = norm.transform(src)
    assert out.dtype == np.uint8 and out.shape == src.shape
    f = norm.transform(torch.from_numpy(src).permute(2, 0, 1)[None].float() / 255.0)
    assert torch.isfinite(f).all()
    assert float(delta_e2000_rgb(out[:8, :8], src[:8, :8]).max()) < 2.0
    # The tissue moved toward the (pen-marked) target: its mean colour, over the
    # same tissue pixels, is closer to the target's mean tissue colour than the
    # source's was.
    tissue = tissue_mask(src).mask
    goal = _mean_tissue_lab(pen, tissue_mask(pen).mask)
    before = float(delta_e_ciede2000(_mean_tissue_lab(src, tissue), goal))
    after = float(delta_e_ciede2000(_mean_tissue_lab(out, tissue), goal))
    assert after < before, (before, after)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((8, 8, 4), np.uint8), r"x: expected an H×W×3"),
        (np.zeros((8, 8), np.uint8), r"x: expected an H×W×3"),
        (np.zeros((8, 8, 3), np.int16), r"x: expected uint8 or float"),
        (np.full((8, 8, 3), 1.5), r"x: float input must be in \[0, 1\]"),
        (np.full((8, 8, 3), -0.1, np.float32), r"x: float input must be in \[0, 1\]"),
        (np.full((8, 8, 3), np.nan), r"x: float input must be in \[0, 1\]"),
        (torch.zeros(1, 4, 8, 8, dtype=torch.uint8), r"x: expected a B×3×H×W"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), r"x: expected a B×3×H×W"),
        (torch.full((1, 3, 8, 8), 255.0), r"x: float input must be in \[0, 1\]"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.int32), r"x: expected uint8 or float"),
        ([[1, 2, 3]], r"x must be"),
    ],
)
def test_bad_input_is_a_one_line_parameter_error(x, match, fitted):
    with pytest.raises(ParameterError, match=match) as err:
        fitted("macenko").transform(x)
    assert "\n" not in str(err.value)


def test_bad_fit_input_names_the_parameter():
    with pytest.raises(ParameterError, match="target image: expected an H×W×3"):
        get_normalizer("reinhard").fit(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ParameterError, match="uint8"):
        get_normalizer("reinhard").fit(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ParameterError, match="empty list"):
        get_normalizer("reinhard").fit([])
