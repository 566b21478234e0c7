"""Lazy stained pyramids through the engine, the result store and the disk cache."""

import threading
from pathlib import Path

import numpy as np
import pytest

from napari_stainfuser.engine import BACKGROUND, NEARBY, VISIBLE, Engine
from napari_stainfuser.job import SlideJob
from napari_stainfuser.slide import open_slide
from napari_stainfuser.slide.pyramid import build_pyramid
from napari_stainfuser.stainer import StainerSpec
from napari_stainfuser.stainers import make_stainer
from napari_stainfuser.tiling.lazy import ResultPyramid, StainedLevel
from napari_stainfuser.tiling.memory import ResultStore
from napari_stainfuser.tiling.plan import TilePlan
from napari_stainfuser.tiling.store import TileCache
from napari_stainfuser.tiling.tissue import detect_tissue

DATA = Path(__file__).parents[1] / "data"
TARGET = DATA / "he" / "torchstain-target.png"
FAST = {"lut": False, "max_pixels": 20000}


class Counting:
    def __init__(self, inner):
        self.inner, self.spec, self.tiles = inner, inner.spec, 0

    def stain(self, tiles, noise=None):
        self.tiles += len(tiles)
        return self.inner.stain(tiles, noise=noise)


class Crop:
    """A slide-like object over an in-memory crop (levels built as the reader builds them)."""

    def __init__(self, image, path="crop"):
        import dask.array as da

        self.levels = build_pyramid(da.from_array(image, chunks=(256, 256, 3)), min_size=256)
        self.mpp = 0.499
        self.path = path


@pytest.fixture(scope="module")
def crop():
    return open_slide(DATA / "CMU-1-Small-Region.svs").levels[0][512:1280, 256:1280].compute()


def test_lazy_levels_equal_the_stainer_on_each_whole_level(crop):
    slide = Crop(crop)
    norm = make_stainer("macenko", TARGET, slide=crop, **FAST)
    switch = detect_tissue(slide)
    with ResultPyramid(SlideJob.create(slide, stainer=norm, tile=192)) as pyr:
        assert len(pyr.arrays) == len(slide.levels) == 3
        for level, arr in zip(slide.levels, pyr.arrays, strict=True):
            img = level.compute()
            mask = switch.region(img.shape[:2], 0, img.shape[0], 0, img.shape[1])
            truth = np.where(mask[..., None], norm.transform(img), img)
            got = arr.compute()
            assert got.dtype == np.uint8 and got.shape == img.shape
            np.testing.assert_array_equal(got, truth)


def test_request_returns_at_once_and_tiles_land_in_the_store(crop):
    norm = Counting(make_stainer("reinhard", TARGET, slide=crop, **FAST))
    plan = TilePlan(crop, norm.spec, tile=256)
    store = ResultStore()
    with Engine(norm) as engine:
        level = StainedLevel(plan, engine, store)
        futs = level.request(0, 300, 0, 300, VISIBLE)
        assert len(futs) == 4
        for f in futs:
            f.result(30)
        assert len(store) == 4 and norm.tiles == 4
        assert level.ready(0, 0) is not None and level.ready(2, 2) is None
        # Already computed: nothing reaches the stainer again.
        level.region(0, 256, 0, 256)
        assert norm.tiles == 4
        np.testing.assert_array_equal(
            level.region(10, 20, 30, 40), norm.inner.transform(crop)[10:20, 30:40]
        )


class Gated:
    """A stainer that holds its first call until the test opens the gate, and
    records the tiles it stains in the order it stains them."""

    def __init__(self, inner):
        self.inner, self.spec = inner, inner.spec
        self.entered, self.gate, self.seen = threading.Event(), threading.Event(), []

    def stain(self, tiles, noise=None):
        self.entered.set()
        assert self.gate.wait(30)
        self.seen.extend(np.asarray(t).copy() for t in tiles)
        return self.inner.stain(tiles, noise=noise)


def test_a_ring_asked_for_after_the_view_does_not_demote_the_view(crop):
    # A live layer asks for the visible box at VISIBLE, then a ring around it
    # (which contains the box) at NEARBY: the box's tiles must stay first.
    norm = Gated(make_stainer("reinhard", TARGET, slide=crop, **FAST))
    plan = TilePlan(crop, norm.spec, tile=256)
    assert plan.grid.n_rows == 3 and plan.grid.n_cols == 4
    with Engine(norm, batch_size=1) as engine:
        level = StainedLevel(plan, engine, ResultStore(), batch_size=1)
        hold = level.tile_future(2, 3, BACKGROUND)
        assert norm.entered.wait(30)
        view = level.request(256, 512, 256, 768, VISIBLE)
        ring = level.request(0, 768, 0, 1024, NEARBY)
        norm.gate.set()
        for f in [hold, *view, *ring]:
            f.result(30)
    order = [
        next(
            rc
            for rc in np.ndindex(3, 4)
            if np.array_equal(t, plan.tile_input(*rc).transpose(2, 0, 1))
        )
        for t in norm.seen
    ]
    assert order[0] == (2, 3)
    assert sorted(order[1:3]) == [(1, 1), (1, 2)], order


def test_the_disk_cache_serves_a_second_session_without_the_stainer(crop, tmp_path):
    slide = Crop(crop, path="cmu-crop")
    first = Counting(make_stainer("ruifrok", TARGET, slide=crop, **FAST))
    job = SlideJob.create(slide, stainer=first, tile=256)
    with ResultPyramid(job, cache_dir=tmp_path) as pyr:
        a = pyr.arrays[0][:512, :512].compute()
        tissue_tiles = len(pyr.levels[0].plan.tiles_for(0, 512, 0, 512))
    assert first.tiles == tissue_tiles > 0  # glass never reaches the stainer
    second = Counting(make_stainer("ruifrok", TARGET, slide=crop, **FAST))
    with ResultPyramid(job.with_options(stainer=second), cache_dir=tmp_path) as pyr:
        b = pyr.arrays[0][:512, :512].compute()
    assert second.tiles == 0
    np.testing.assert_array_equal(a, b)
    # A cache is refused for a different plan under the same name.
    cache_file = next(tmp_path.glob("*.zarr"))
    with pytest.raises(Exception, match="another run"):
        TileCache.open(cache_file, 3, 4, 256, {"other": 1})


def test_lru_store_stays_within_its_budget():
    store = ResultStore(max_bytes=3 * 1000)
    for i in range(10):
        store.put(i, np.zeros(1000, np.uint8))
    assert len(store) == 3 and store.nbytes == 3000
    assert store.get(0) is None and store.get(9) is not None
    store.discard(9)
    store.discard(42)  # not kept: nothing happens
    assert len(store) == 2 and store.nbytes == 2000 and 9 not in store


def test_overlapping_diffusion_tiles_get_the_same_noise():
    spec = StainerSpec(tile_size=128, overlap=32, per_pixel=False, multiple_of=8,
                       latent_channels=4, latent_factor=8)  # fmt: skip
    image = np.zeros((300, 400, 3), np.uint8)
    plan = TilePlan(image, spec, seed=4)
    a, b, c = plan.tile_noise(0, 0), plan.tile_noise(0, 1), plan.tile_noise(1, 0)
    assert a.shape == (4, 16, 16)
    np.testing.assert_array_equal(a[:, :, 12:], b[:, :, :4])  # 32 px overlap = 4 latents
    np.testing.assert_array_equal(a[:, 12:, :], c[:, :4, :])
    other = TilePlan(image, spec, seed=4, noise="per_tile")
    assert not np.array_equal(other.tile_noise(0, 0)[:, :, 12:], other.tile_noise(0, 1)[:, :, :4])
    # Another tiling of the same slide cuts the same field.
    plan96 = TilePlan(image, spec, seed=4, tile=96, overlap=32)
    np.testing.assert_array_equal(plan96.tile_noise(1, 1), plan.field.region(8, 8, 12, 12))
