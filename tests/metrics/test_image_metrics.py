"""PSNR, SSIM and ΔE2000 against scikit-image's implementations."""

from pathlib import Path

import numpy as np
import pytest
from skimage import color
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_stainfuser.errors import ParameterError
from napari_stainfuser.metrics import image_metrics, mean_delta_e2000, psnr, ssim


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)
    b = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    return a, b


def test_psnr_matches_skimage(pair):
    a, b = pair
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-10)
    fa, fb = a / 255.0, b / 255.0
    assert psnr(fa, fb) == pytest.approx(peak_signal_noise_ratio(fa, fb, data_range=1.0), abs=1e-10)
    assert psnr(a, a) == float("inf")


def test_ssim_matches_skimage_gaussian_window(pair):
    a, b = pair
    ref = structural_similarity(
        a,
        b,
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert ssim(a, b) == pytest.approx(ref, abs=1e-10)
    assert ssim(a, a) == pytest.approx(1.0)
    g = a[..., 0]
    ref_g = structural_similarity(
        g, b[..., 0], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim(g, b[..., 0]) == pytest.approx(ref_g, abs=1e-10)


def test_delta_e_matches_skimage(pair):
    a, b = pair
    ref = color.deltaE_ciede2000(color.rgb2lab(a), color.rgb2lab(b)).mean()
    # skimage rounds the CIE constants (see tests/stain/test_stain_physics.py).
    assert mean_delta_e2000(a, b) == pytest.approx(ref, abs=1e-4)
    assert mean_delta_e2000(a, a) == 0.0
    m = image_metrics(b, a)
    assert set(m) == {"psnr", "ssim", "delta_e2000"}


def test_bad_pairs_are_parameter_errors(pair):
    a, b = pair
    with pytest.raises(ParameterError, match="same shape"):
        psnr(a, b[:10])
    with pytest.raises(ParameterError, match="same dtype"):
        ssim(a, b.astype(np.float32))
    with pytest.raises(ParameterError, match="too small"):
        ssim(a[:5, :5], b[:5, :5])
    with pytest.raises(ParameterError, match="H×W×3"):
        mean_delta_e2000(a[..., 0], b[..., 0])


def test_ssim_matches_skimage_on_real_h_and_e():
    from napari_stainfuser.slide import open_slide

    img = np.asarray(
        open_slide(Path(__file__).parents[1] / "data" / "CMU-1-Small-Region.svs").levels[1]
    )
    a, b = img[:512, :640], img[300:812, 400:1040]
    ref = structural_similarity(
        a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=255,
    )  # fmt: skip
    assert ssim(a, b) == pytest.approx(ref, abs=1e-12)
