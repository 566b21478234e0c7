"""Tile grid coverage and blending windows that sum to one."""

import numpy as np
import pytest

from napari_stainfuser.errors import ParameterError
from napari_stainfuser.tiling.grid import TileGrid, pad_to, read_tile
from napari_stainfuser.tiling.windows import blend_region, tile_window

SHAPES = [(1, 1), (7, 300), (512, 512), (513, 1000), (333, 97)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("tile", "overlap"), [(64, 0), (64, 16), (100, 37), (16, 11)])
def test_grid_covers_image_and_tiles_in_matches_brute_force(shape, tile, overlap):
    g = TileGrid(shape, tile, overlap)
    cover = np.zeros(shape, int)
    for r, c in g.tiles():
        y, x = g.origin(r, c)
        assert (y, x) == (r * (tile - overlap), c * (tile - overlap))
        cover[y : y + tile, x : x + tile] += 1
    assert cover.min() >= 1
    # No tile lies wholly outside the image.
    assert (g.n_rows - 1) * g.step < shape[0] and (g.n_cols - 1) * g.step < shape[1]
    rng = np.random.default_rng(0)
    for _ in range(20):
        y0, x0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        y1, x1 = rng.integers(y0 + 1, shape[0] + 1), rng.integers(x0 + 1, shape[1] + 1)
        brute = [
            (r, c)
            for r, c in g.tiles()
            if r * g.step < y1
            and r * g.step + tile > y0
            and c * g.step < x1
            and c * g.step + tile > x0
        ]
        assert g.tiles_in(y0, y1, x0, x1) == brute


@pytest.mark.parametrize(("tile", "overlap"), [(64, 64), (64, 65), (0, 0), (64, -1)])
def test_bad_tile_or_overlap_is_a_parameter_error(tile, overlap):
    with pytest.raises(ParameterError, match="overlap|tile"):
        TileGrid((100, 100), tile, overlap)


@pytest.mark.parametrize("kind", ["cosine", "linear", "none"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("tile", "overlap"), [(64, 0), (64, 16), (100, 37), (40, 27)])
def test_windows_sum_to_one_everywhere_including_edges(kind, shape, tile, overlap):
    g = TileGrid(shape, tile, overlap)
    acc = np.zeros((g.n_rows * g.step + tile, g.n_cols * g.step + tile))
    for r, c in g.tiles():
        y, x = g.origin(r, c)
        w = tile_window(g, r, c, kind)
        assert w.min() >= 0 and w.max() <= 1
        acc[y : y + tile, x : x + tile] += w
    np.testing.assert_allclose(acc[: shape[0], : shape[1]], 1.0, rtol=0, atol=1e-12)


def test_cosine_window_is_smooth_inside_and_flat_at_slide_edges():
    g = TileGrid((300, 300), 64, 16)
    w = tile_window(g, 0, 0)
    # Top-left tile: nothing to share with above or to the left.
    assert np.all(w[:48, :48] == 1.0)
    inner = tile_window(g, 1, 1)
    assert inner[0, 32] < 0.01 and inner[32, 32] == 1.0
    # The ramp never jumps by more than the linear step would.
    assert np.abs(np.diff(inner[:, 32])).max() < 2 * np.pi / 2 / 16


@pytest.mark.parametrize("kind", ["cosine", "linear", "none"])
@pytest.mark.parametrize(("tile", "overlap"), [(64, 0), (64, 24), (50, 10)])
def test_blending_tiles_cut_from_one_image_gives_it_back_exactly(kind, tile, overlap):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (173, 211, 3), dtype=np.uint8)
    g = TileGrid(image.shape[:2], tile, overlap)
    tiles = {(r, c): read_tile(image, *g.origin(r, c), tile) for r, c in g.tiles()}
    out = blend_region(g, 0, 173, 0, 211, lambda r, c: tiles[r, c], kind)
    np.testing.assert_array_equal(out, image)


def test_blended_region_equals_crop_of_whole_blend():
    rng = np.random.default_rng(2)
    g = TileGrid((150, 170), 48, 16)
    # Tiles that disagree with each other, so weights matter.
    tiles = {rc: rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for rc in g.tiles()}
    whole = blend_region(g, 0, 150, 0, 170, lambda r, c: tiles[r, c])
    for y0, y1, x0, x1 in [(0, 32, 0, 32), (40, 77, 31, 170), (149, 150, 0, 1), (10, 140, 90, 95)]:
        part = blend_region(g, y0, y1, x0, x1, lambda r, c: tiles[r, c])
        np.testing.assert_array_equal(part, whole[y0:y1, x0:x1])


def test_read_tile_pads_by_reflection_past_the_edge():
    image = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    t = read_tile(image, 2, 1, 6)
    assert t.shape == (6, 6, 3)
    np.testing.assert_array_equal(t[:3, :3], image[2:5, 1:4])
    np.testing.assert_array_equal(t[3], image[3, [1, 2, 3, 2, 1, 2]])
    one = pad_to(np.full((1, 1, 3), 7, np.uint8), 4, 4)
    assert np.all(one == 7)
