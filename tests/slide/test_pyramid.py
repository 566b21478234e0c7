"""Lazy 2x pyramid: pixels equal an independent float area average, chunks stay aligned,
each level is one layer of one task per chunk, and a chunk reads only the chunks under it."""

import itertools

import dask.array as da
import numpy as np
import pytest
from dask.core import flatten

from napari_stainfuser.slide.pyramid import build_pyramid, downsample2x


def _area_average(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    blocks = img[:h, :w].astype(np.float64).reshape(h // 2, 2, w // 2, 2, -1)
    # Round half up, the same convention as the integer implementation.
    out = np.floor(blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)
    return out.reshape(h // 2, w // 2, *img.shape[2:])


class _RecordingSource:
    """Array-like level 0 that logs the block of each read (value 7 + block row, mod 100).

    Wrapped with `da.from_array` as the slide reader wraps its tile sources.
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, chunks, calls):
        self.bounds = [_bounds(c) for c in chunks[:2]]
        self.shape = tuple(sum(c) for c in chunks)
        self.ndim = len(self.shape)
        self.calls = calls

    def __getitem__(self, index):
        ys, xs = index[:2]
        p, q = (b.index(s.start) for b, s in zip(self.bounds, (ys, xs), strict=True))
        self.calls.append((p, q))
        return np.full((ys.stop - ys.start, xs.stop - xs.start, 3), 7 + p % 100, np.uint8)


def _recording_level0(chunks, calls):
    return da.from_array(
        _RecordingSource(chunks, calls),
        chunks=chunks,
        asarray=False,
        fancy=False,
        inline_array=True,
        meta=np.empty((0, 0, 0), np.uint8),
    )


def _bounds(chunks):
    return list(itertools.accumulate(chunks, initial=0))


def _block(level, i, j):
    # Plain slicing, not `.blocks`: dask makes `.blocks` a legacy layer whose culling walks
    # every key of every layer, which would hide what this module's layers cost.
    ys, xs = _bounds(level.chunks[0]), _bounds(level.chunks[1])
    return level[ys[i] : ys[i + 1], xs[j] : xs[j + 1]]


@pytest.fixture(scope="module")
def img():
    return np.random.default_rng(0).integers(0, 256, size=(1001, 1337, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "chunks",
    [
        (240, 240, 3),
        (256, 256, 3),
        (97, 97, 3),  # odd chunks: boundaries of output pairs still fall on even rows
        (64, 100, 3),
        ((300, 211, 490), (97, 500, 3, 737), 3),  # irregular, odd boundaries mid-image
        ((500, 500, 1), (1337,), 3),  # single column of blocks; last row alone in its block
        ((1001,), (100,) * 13 + (37,), 3),  # single row of blocks
        (256, 256, 1),  # one chunk per colour channel
    ],
)
def test_downsample_matches_area_average(img, chunks):
    out = downsample2x(da.from_array(img, chunks=chunks))
    assert out.shape == (500, 668, 3)
    np.testing.assert_array_equal(out.compute(), _area_average(img))


def test_extreme_values_do_not_overflow_and_round_half_up():
    # 2×2 sums of 1020 (all 255), 2 mod 4 (mean x.5 rounds up) and 1 mod 4 (x.25 rounds down).
    img = np.zeros((6, 8, 3), np.uint8)
    img[:2, :2] = 255
    img[2:4, :2] = np.array([[0, 1], [0, 1]])[..., None]
    img[4:, :2] = np.array([[0, 0], [0, 1]])[..., None]
    img[:, 2:] = np.random.default_rng(2).integers(250, 256, (6, 6, 3), dtype=np.uint8)
    out = downsample2x(da.from_array(img, chunks=(4, 4, 3))).compute()
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[1, 0].tolist() == [1, 1, 1]
    assert out[2, 0].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(out, _area_average(img))


@pytest.mark.parametrize("target", [None, 64, 300, 512])
def test_target_chunk_keeps_pixels_and_alignment(img, target):
    level = da.from_array(img, chunks=(128, 128, 3))
    out = downsample2x(level, target_chunk=target)
    np.testing.assert_array_equal(out.compute(), _area_average(img))
    t = target or 128
    for axis in (0, 1):
        sizes = out.chunks[axis]
        assert all(c >= t for c in sizes[:-1]), sizes
        # Every output boundary is a halved parent boundary: no chunk straddles a split parent.
        assert set(_bounds(sizes)) <= {b // 2 for b in _bounds(level.chunks[axis])}


def test_strip_wider_than_target_is_cut_into_target_pieces(img):
    # A strip TIFF: one chunk spans the whole width.
    out = downsample2x(da.from_array(img, chunks=(64, 1337, 3)), target_chunk=128)
    assert out.chunks[0] == (128,) * 3 + (116,)
    assert out.chunks[1] == (128,) * 4 + (156,)
    np.testing.assert_array_equal(out.compute(), _area_average(img))


def test_two_dimensional_image(img):
    grey = np.ascontiguousarray(img[..., 1])
    out = downsample2x(da.from_array(grey, chunks=(97, 130)))
    np.testing.assert_array_equal(out.compute(), _area_average(grey[..., None])[..., 0])


def test_every_level_matches_repeated_area_average_and_keeps_parent_chunks():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(2999, 1789, 3), dtype=np.uint8)
    levels = build_pyramid(da.from_array(img, chunks=(128, 128, 3)), min_size=200)
    assert [lv.shape[:2] for lv in levels] == [
        (2999, 1789),
        (1499, 894),
        (749, 447),
        (374, 223),
        (187, 111),
    ]
    ref = img
    for parent, lv in itertools.pairwise(levels):
        ref = _area_average(ref)
        np.testing.assert_array_equal(lv.compute(), ref)
        for axis in (0, 1):
            # Output chunks equal the parent's chunk size, and output block i sits on parent
            # blocks 2i and 2i+1.
            assert all(c == 128 for c in lv.chunks[axis][:-1])
            assert 0 < lv.chunks[axis][-1] <= 128
            pairs = {b // 2 for b in _bounds(parent.chunks[axis])[::2]} | {parent.shape[axis] // 2}
            assert _bounds(lv.chunks[axis]) == sorted(pairs)


def test_pyramid_stops_near_1024_and_keeps_chunk_size():
    level0 = da.zeros((9000, 5000, 3), dtype=np.uint8, chunks=(512, 512, 3))
    levels = build_pyramid(level0)
    shapes = [lv.shape[:2] for lv in levels]
    # 1125 is still above 1024, so one more level: the smallest has its long side in (512, 1024].
    assert shapes == [(9000, 5000), (4500, 2500), (2250, 1250), (1125, 625), (562, 312)]
    for lv in levels[1:]:
        assert lv.chunks[0][0] == min(512, lv.shape[0])
        assert lv.chunks[1][0] == min(512, lv.shape[1])


def test_each_level_is_one_layer_of_one_task_per_block_on_its_parents():
    level0 = da.zeros((5000, 3001, 3), dtype=np.uint8, chunks=(256, 256, 3))
    levels = build_pyramid(level0)
    base_layers = len(level0.dask.layers)
    for k, (parent, lv) in enumerate(itertools.pairwise(levels), start=1):
        assert len(lv.dask.layers) == base_layers + k
        assert lv.dask.dependencies[lv.name] == {parent.name}
        tasks = dict(lv.dask.layers[lv.name])
        assert len(tasks) == np.prod(lv.numblocks)
        assert set(tasks) == set(flatten(lv.__dask_keys__()))
        ny, nx = parent.numblocks[:2]
        for (_, i, j, c), task in tasks.items():
            expected = {
                (parent.name, p, q, c)
                for p in (2 * i, 2 * i + 1)
                for q in (2 * j, 2 * j + 1)
                if p < ny and q < nx
            }
            assert set(task.dependencies) == expected


def test_lower_level_reads_only_needed_chunks():
    calls = []
    level0 = _recording_level0(((256,) * 16, (256,) * 16, (3,)), calls)
    level1 = downsample2x(level0)
    region = level1[:128, :128].compute()
    assert (region == 7).all()
    # Level-1 chunks are 256 px like level 0's, so its first chunk needs the 2×2 level-0 chunks
    # under it and nothing else out of the 256 in the image.
    assert sorted(calls) == [(0, 0), (0, 1), (1, 0), (1, 1)]


@pytest.mark.parametrize(
    ("level", "block", "parents"),
    [
        (1, (3, 2), [(p, q) for p in (6, 7) for q in (4, 5)]),
        # The last, partial and odd row/column of chunks (level 0 is 16·256 + 77 px).
        (1, (8, 8), [(16, 16)]),
        (1, (8, 0), [(16, 0), (16, 1)]),
        (2, (1, 1), [(p, q) for p in range(4, 8) for q in range(4, 8)]),
    ],
)
def test_one_block_reads_exactly_the_chunks_under_it(level, block, parents):
    calls = []
    chunks = ((256,) * 16 + (77,), (256,) * 16 + (77,), (3,))
    levels = build_pyramid(_recording_level0(chunks, calls), min_size=1)
    out = _block(levels[level], *block).compute()
    assert sorted(calls) == sorted(parents)
    rows = sorted({p for p, _ in parents})
    expected = np.repeat(np.array([7 + p for p in rows], np.float64), 256 // 2**level)
    expected = expected[: out.shape[0]]
    # Each output row averages level-0 rows of one block row (value 7 + block row).
    np.testing.assert_array_equal(out[:, 0, 0], np.floor(expected + 0.5).astype(np.uint8))


def test_100k_slide_builds_lazily_and_a_deep_block_reads_only_its_chunks():
    calls = []
    n = 100_000
    chunks = da.core.normalize_chunks((256, 256, 3), (n, n, 3))
    levels = build_pyramid(_recording_level0(chunks, calls))
    assert [lv.shape[0] for lv in levels] == [n // 2**k for k in range(8)]
    for lv in levels[1:]:
        assert lv.chunks[0][:-1] == (256,) * (len(lv.chunks[0]) - 1)
        assert lv.chunks[1][:-1] == (256,) * (len(lv.chunks[1]) - 1)
    assert calls == []
    out = _block(levels[3], 40, 45).compute()
    assert out.shape == (256, 256, 3)
    assert sorted(calls) == [(p, q) for p in range(320, 328) for q in range(360, 368)]
