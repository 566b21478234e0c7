"""Lazy 2x pyramid: pixels equal an independent float area average, chunks stay aligned."""

import dask.array as da
import numpy as np
import pytest

from napari_stainfuser.slide.pyramid import build_pyramid, downsample2x


def _area_average(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    blocks = img[:h, :w].astype(np.float64).reshape(h // 2, 2, w // 2, 2, -1)
    # Round half up, the same convention as the integer implementation.
    return np.floor(blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


@pytest.mark.parametrize("chunk", [240, 256, 97])
def test_downsample_matches_area_average(chunk):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(1001, 1337, 3), dtype=np.uint8)
    out = downsample2x(da.from_array(img, chunks=(chunk, chunk, 3)))
    np.testing.assert_array_equal(out.compute(), _area_average(img))


def test_pyramid_stops_near_1024_and_keeps_chunk_size():
    level0 = da.zeros((9000, 5000, 3), dtype=np.uint8, chunks=(512, 512, 3))
    levels = build_pyramid(level0)
    shapes = [lv.shape[:2] for lv in levels]
    # 1125 is still above 1024, so one more level: the smallest has its long side in (512, 1024].
    assert shapes == [(9000, 5000), (4500, 2500), (2250, 1250), (1125, 625), (562, 312)]
    for lv in levels[1:]:
        assert lv.chunks[0][0] == min(512, lv.shape[0])
        assert lv.chunks[1][0] == min(512, lv.shape[1])


def test_lower_level_reads_only_needed_chunks():
    calls = []

    def make(block_id=None):
        calls.append(block_id[:2])
        return np.full((256, 256, 3), 7, dtype=np.uint8)

    level0 = da.map_blocks(
        make,
        chunks=((256,) * 16, (256,) * 16, (3,)),
        dtype=np.uint8,
        meta=np.empty((0, 0, 0), np.uint8),
    )
    level1 = downsample2x(level0)
    region = level1[:128, :128].compute()
    assert (region == 7).all()
    # Level-1 chunks are merged back to 256 px, so its first chunk needs the 2×2 level-0 chunks
    # under it and nothing else out of the 256 in the image.
    assert sorted(calls) == [(0, 0), (0, 1), (1, 0), (1, 1)]
