"""Optical density, deconvolution and CIELAB against formulas, physical ground
truth and scikit-image (an independent implementation)."""

import numpy as np
import pytest
import torch
from skimage import color

from napari_stainfuser.errors import ParameterError
from napari_stainfuser.stain import (
    RUIFROK_HDAB,
    RUIFROK_HE,
    RUIFROK_HEDAB,
    complete_matrix,
    deconvolve,
    delta_e_ciede2000,
    lab_to_rgb,
    od_to_rgb,
    reconstruct,
    rgb_to_lab,
    rgb_to_od,
    rgb_to_stains,
    stain_matrix,
    stains_to_rgb,
)
from napari_stainfuser.stain.lab import delta_e2000_rgb

ALL_U8 = np.arange(256, dtype=np.uint8)


@pytest.mark.parametrize("io", [240.0, 255.0, 250.5])
def test_od_table_matches_beer_lambert(io):
    od = rgb_to_od(ALL_U8, io).numpy()
    expected = -np.log((ALL_U8.astype(np.float64) + 1.0) / io)
    np.testing.assert_allclose(od, expected, rtol=0, atol=1e-6)
    # The float path is the same function.
    np.testing.assert_allclose(rgb_to_od(ALL_U8.astype(np.float32), io).numpy(), od, atol=1e-6)


def test_od_round_trip_is_exact_after_rounding():
    back = od_to_rgb(rgb_to_od(ALL_U8, 240.0), 240.0)
    np.testing.assert_array_equal(np.floor(back.numpy() + 0.5).astype(np.uint8), ALL_U8)


def test_od_rejects_bad_io():
    with pytest.raises(ParameterError, match="io"):
        rgb_to_od(ALL_U8, 0)
    with pytest.raises(ParameterError, match="io"):
        rgb_to_od(ALL_U8, float("nan"))


def test_named_matrices_are_unit_rows_of_ruifrok_vectors():
    for m in (RUIFROK_HE, RUIFROK_HDAB, RUIFROK_HEDAB):
        np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0)
    # Hematoxylin of Ruifrok & Johnston's table 1, normalised by hand.
    h = np.array([0.650, 0.704, 0.286])
    np.testing.assert_allclose(stain_matrix("H&E")[0], h / np.linalg.norm(h))
    with pytest.raises(ParameterError, match="valid"):
        stain_matrix("trichrome")
    with pytest.raises(ParameterError):
        stain_matrix([[0.0, 0.0, 0.0]])


@pytest.mark.parametrize("stains", ["he", "hdab", "hedab", [[0.2, 0.5, 0.8], [0.9, 0.3, 0.1]]])
def test_deconvolution_recovers_known_concentrations(stains):
    # Physical ground truth: Beer–Lambert with known concentrations.
    m = stain_matrix(stains)
    rng = np.random.default_rng(0)
    conc = rng.uniform(0.0, 1.5, (1000, m.shape[0]))
    od = torch.from_numpy(conc @ m)
    np.testing.assert_allclose(deconvolve(od, stains).numpy(), conc, atol=1e-10)
    np.testing.assert_allclose(reconstruct(torch.from_numpy(conc), stains).numpy(), od.numpy())
    rgb = stains_to_rgb(conc.astype(np.float32), stains, io=240.0)
    back = rgb_to_stains(rgb, stains, io=240.0).numpy()
    np.testing.assert_allclose(back, conc, atol=1e-4)


def test_complete_matrix_is_invertible_and_keeps_stains():
    for m in (RUIFROK_HE, RUIFROK_HE[:1], RUIFROK_HEDAB):
        full = complete_matrix(m)
        assert full.shape == (3, 3)
        np.testing.assert_allclose(full[: len(m)], m)
        assert abs(np.linalg.det(full)) > 1e-3


def test_lab_matches_skimage():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (4096, 3), dtype=np.uint8)
    rgb[:8] = [
        [0, 0, 0],
        [255, 255, 255],
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [1, 1, 1],
        [10, 10, 10],
        [128, 128, 128],
    ]
    ref = color.rgb2lab(rgb[None])[0]
    # scikit-image uses the rounded CIE constants 0.008856 and 7.787 where we
    # use 216/24389 and 24389/27/116; for dark colours that moves L, a, b by
    # up to ~2e-4. float32 (the uint8 path) adds ~1e-4.
    np.testing.assert_allclose(rgb_to_lab(rgb).numpy(), ref, atol=5e-4)
    np.testing.assert_allclose(rgb_to_lab(torch.from_numpy(rgb / 255.0)).numpy(), ref, atol=3e-4)
    # Inverse: exact round trip in float64, and scikit-image's inverse.
    lab = rgb_to_lab(torch.from_numpy(rgb / 255.0))
    np.testing.assert_allclose(lab_to_rgb(lab).numpy(), rgb / 255.0, atol=1e-12)
    np.testing.assert_allclose(
        lab_to_rgb(torch.from_numpy(ref)).numpy(), color.lab2rgb(ref[None])[0], atol=1e-5
    )


def test_ciede2000_matches_sharma_reference_pairs_and_skimage():
    # Sharma, Wu & Dalal (2005), test data pairs 1, 2, 3 and 7.
    lab1 = np.array(
        [[50, 2.6772, -79.7751], [50, 3.1571, -77.2803], [50, 2.8361, -74.0200], [50, 0, 0]]
    )
    lab2 = np.array([[50, 0, -82.7485], [50, 0, -82.7485], [50, 0, -82.7485], [50, -1, 2]])
    de = delta_e_ciede2000(torch.from_numpy(lab1), torch.from_numpy(lab2)).numpy()
    np.testing.assert_allclose(de, [2.0425, 2.8615, 3.4412, 2.3669], atol=1e-4)
    rng = np.random.default_rng(2)
    a = rng.uniform([0, -100, -100], [100, 100, 100], (20000, 3))
    b = a + rng.normal(0, 8, a.shape)
    np.testing.assert_allclose(
        delta_e_ciede2000(torch.from_numpy(a), torch.from_numpy(b)).numpy(),
        color.deltaE_ciede2000(a, b),
        atol=1e-9,
    )


def test_delta_e_of_rgb_images_matches_skimage():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    y = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    ref = color.deltaE_ciede2000(color.rgb2lab(x), color.rgb2lab(y))
    # Same CIE-constant difference as in test_lab_matches_skimage.
    np.testing.assert_allclose(delta_e2000_rgb(x, y).numpy(), ref, atol=5e-4)
