"""The consistent noise field: indexed by slide coordinates, chunk-independent."""

import numpy as np
import pytest

from napari_stainfuser.tiling.noise import NoiseField, per_tile_noise


def test_any_window_equals_the_crop_of_a_large_window():
    f = NoiseField(seed=3, channels=4, block=16)
    big = f.region(0, 0, 100, 90)
    rng = np.random.default_rng(0)
    for _ in range(30):
        y, x = rng.integers(0, 80), rng.integers(0, 70)
        h, w = rng.integers(1, 100 - y), rng.integers(1, 90 - x)
        # A fresh field (empty cache, other block size is a different field) must agree too.
        g = NoiseField(seed=3, channels=4, block=16, cache_blocks=1)
        np.testing.assert_array_equal(g.region(y, x, h, w), big[:, y : y + h, x : x + w])


def test_overlapping_tiles_see_the_same_noise_and_per_tile_noise_does_not():
    f = NoiseField(seed=11, channels=4)
    a = f.region(0, 0, 64, 64)  # latent tile at slide (0, 0), 512 px, factor 8
    b = f.region(0, 56, 64, 64)  # neighbour with a 64 px (8 latent px) overlap
    np.testing.assert_array_equal(a[:, :, 56:], b[:, :, :8])
    pa = per_tile_noise(11, 0, 0, 4, 64, 64)
    pb = per_tile_noise(11, 0, 1, 4, 64, 64)
    assert not np.allclose(pa[:, :, 56:], pb[:, :, :8])


def test_field_is_standard_normal_and_seeded():
    f = NoiseField(seed=0, channels=4, block=64)
    z = f.region(0, 0, 256, 256).ravel()
    n = z.size
    # 6 standard errors: fails only if the generator is wrong.
    assert abs(z.mean()) < 6 / np.sqrt(n)
    assert abs(z.var() - 1) < 6 * np.sqrt(2 / n)
    # Neighbouring blocks are not copies of each other.
    assert (
        abs(
            np.corrcoef(
                z.reshape(4, 256, 256)[:, :64, :64].ravel(),
                z.reshape(4, 256, 256)[:, :64, 64:128].ravel(),
            )[0, 1]
        )
        < 0.05
    )
    assert not np.array_equal(NoiseField(1, 4).region(0, 0, 8, 8), f.region(0, 0, 8, 8))
    np.testing.assert_array_equal(NoiseField(0, 4).region(5, 9, 8, 8), f.region(5, 9, 8, 8))


@pytest.mark.parametrize("channels", [0, -1])
def test_bad_channel_count(channels):
    from napari_stainfuser.errors import ParameterError

    with pytest.raises(ParameterError, match="channels"):
        NoiseField(0, channels)
