"""Seam score: definition checked against a direct loop, and its two limits."""

import numpy as np
import pytest

from napari_stainfuser.errors import ParameterError
from napari_stainfuser.metrics.seams import grid_seams, seam_score


def _loop_score(img, sy, sx):
    """The definition written out pixel by pixel."""
    img = img.astype(float)
    h, w = img.shape[:2]
    b_y = [abs(img[y, x] - img[y - 1, x]).mean() for y in sy for x in range(w)]
    b_x = [abs(img[y, x] - img[y, x - 1]).mean() for x in sx for y in range(h)]
    i_y = [abs(img[y, x] - img[y - 1, x]).mean() for y in range(1, h) if y not in sy for x in range(w)]
    i_x = [abs(img[y, x] - img[y, x - 1]).mean() for x in range(1, w) if x not in sx for y in range(h)]
    border = (sum(b_y) + sum(b_x)) / (len(b_y) + len(b_x))
    inside = (np.mean(i_y) * len(b_y) + np.mean(i_x) * len(b_x)) / (len(b_y) + len(b_x))
    return border / inside


def test_matches_the_definition_written_as_a_loop():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    img[:, 10:] = np.clip(img[:, 10:].astype(int) + 40, 0, 255)  # a seam at column 10
    for sy, sx in [((7,), (10, 20)), ((), (10,)), ((5, 12, 19), ())]:
        assert seam_score(img, sy, sx) == pytest.approx(_loop_score(img, sy, sx), rel=1e-12)


def test_invisible_borders_score_one_and_visible_ones_more():
    rng = np.random.default_rng(1)
    img = rng.normal(128, 20, (600, 600, 3))
    sy = sx = grid_seams(600, 128, 32)
    # Stationary texture: 1.0 up to sampling error (about 1/sqrt(n) ≈ 0.5 % here).
    assert seam_score(np.clip(img, 0, 255).astype(np.uint8), sy, sx) == pytest.approx(1.0, abs=0.03)
    # Each tile gets its own colour offset: the borders show.
    tiled = img.copy()
    edges = [0, *sy, 600]
    for i in range(len(edges) - 1):
        for j in range(len(edges) - 1):
            tiled[edges[i] : edges[i + 1], edges[j] : edges[j + 1]] += rng.normal(0, 15)
    assert seam_score(np.clip(tiled, 0, 255).astype(np.uint8), sy, sx) > 1.2


def test_mask_restricts_the_measurement():
    rng = np.random.default_rng(2)
    img = rng.integers(100, 140, (64, 64, 3), dtype=np.uint8)
    img[:, 32:, :] = np.clip(img[:, 32:].astype(int) + 60, 0, 255)
    mask = np.zeros((64, 64), bool)
    mask[:, 40:] = True  # the seam at 32 lies outside: nothing to measure
    with pytest.raises(ParameterError, match="mask"):
        seam_score(img, (), (32,), mask=mask)
    mask[:, 20:] = True
    assert seam_score(img, (), (32,), mask=mask) > 2


def test_grid_seams_lie_in_the_middle_of_overlap_bands():
    # Tiles start at 0, 448 and 896 (three tiles reach 1000).
    assert grid_seams(1000, 512, 64) == [448 + 32, 896 + 32]
    assert grid_seams(1000, 256, 0) == [256, 512, 768]
    # Tiles cut at half resolution: the first border at working px 192 + 32 -> output px 448.
    assert grid_seams(1024, 256, 64, factor=0.5)[0] == 448


def test_bad_input():
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ParameterError, match="seams"):
        seam_score(img, (10,), ())
    with pytest.raises(ParameterError, match="seams"):
        seam_score(img, (), ())
    with pytest.raises(ParameterError, match="flat"):
        seam_score(img, (5,), ())
