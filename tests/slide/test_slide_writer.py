"""write_pyramid / ZarrPyramid: round trips through tifffile, zarr and our reader.

References are independent of the writer: pixels come back through tifffile's
and zarr's own decoders, lower levels are compared with a float64 numpy area
average written here, µm/px is parsed from the OME-XML and NGFF attributes.
"""

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_stainfuser import ParameterError, SlideWriteError, open_slide, write_pyramid
from napari_stainfuser.slide.writer import ZarrPyramid, zarr_to_ome_tiff

TILE = 256  # small tiles keep 2k images multi-tile and multi-level
TIFF_CODES = {
    "zlib": tifffile.COMPRESSION.ADOBE_DEFLATE,
    "zstd": tifffile.COMPRESSION.ZSTD,
    "lzw": tifffile.COMPRESSION.LZW,
    None: tifffile.COMPRESSION.NONE,
}


def area_average(x: np.ndarray) -> np.ndarray:
    """2×2 mean rounded half up, odd edge dropped: float64 reference for one pyramid step."""
    h, w = x.shape[0] // 2, x.shape[1] // 2
    m = x[: 2 * h, : 2 * w].astype(np.float64).reshape(h, 2, w, 2, 3).mean(axis=(1, 3))
    return np.floor(m + 0.5).astype(np.uint8)


def reference_pyramid(x: np.ndarray) -> list[np.ndarray]:
    """Halve until the longest side is at most 1024 px (the documented level rule)."""
    levels = [x]
    while max(levels[-1].shape[:2]) > 1024 and min(levels[-1].shape[:2]) >= 2:
        levels.append(area_average(levels[-1]))
    return levels


def make_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    # Full-range noise exercises every rounding case of the 2×2 average; the
    # gradient makes misplaced tiles visible.
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    grad = ((yy * 7 + xx * 3) % 256).astype(np.uint8)[..., None]
    return (grad + rng.integers(0, 64, (h, w, 3), dtype=np.uint8)).astype(np.uint8)


def ome_pixels(tif: Path) -> ET.Element:
    with tifffile.TiffFile(tif) as tf:
        root = ET.fromstring(tf.ome_metadata)
    return root.find(".//{*}Pixels")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    # Odd sizes on two levels: 2101 -> 1050 -> 525 and 1103 -> 551 -> 275.
    return make_image(2101, 1103)


# -- OME-TIFF -----------------------------------------------------------------


@pytest.mark.parametrize("compression", ["zlib", "zstd", "lzw", None])
def test_lossless_ome_tiff_round_trip(tmp_path, image, compression):
    out = write_pyramid(image, tmp_path / "s.ome.tif", mpp=0.25, tile=TILE, compression=compression)
    assert out == tmp_path / "s.ome.tif"
    ref = reference_pyramid(image)
    assert len(ref) == 3
    with tifffile.TiffFile(out) as tf:
        assert tf.is_ome and tf.is_bigtiff
        series = tf.series[0]
        assert len(series.levels) == len(ref)
        # Lower levels live in SubIFDs of the level-0 page, not as top-level pages.
        assert len(tf.pages) == 1 and len(tf.pages[0].subifds) == len(ref) - 1
        for k, (level, want) in enumerate(zip(series.levels, ref, strict=True)):
            page = level.keyframe
            assert page.is_tiled and (page.tilelength, page.tilewidth) == (TILE, TILE)
            assert page.compression == TIFF_CODES[compression]
            np.testing.assert_array_equal(level.asarray(), want, err_msg=f"level {k}")
            # TIFF resolution tags agree with the level's pixel size.
            assert page.get_resolution(tifffile.RESUNIT.MICROMETER) == pytest.approx(
                (1 / (0.25 * 2**k), 1 / (0.25 * 2**k))
            )
    px = ome_pixels(out)
    assert float(px.get("PhysicalSizeX")) == 0.25
    assert float(px.get("PhysicalSizeY")) == 0.25
    assert px.get("PhysicalSizeXUnit") == "µm"
    assert (int(px.get("SizeY")), int(px.get("SizeX")), int(px.get("SizeC"))) == image.shape


def test_default_ome_tiff_is_jpeg_ycbcr_and_quality_matters(tmp_path, image):
    lo = write_pyramid(image, tmp_path / "lo.ome.tif", mpp=0.5, tile=TILE, quality=50)
    hi = write_pyramid(image, tmp_path / "hi.ome.tif", mpp=0.5, tile=TILE, quality=95)
    errors = {}
    for path in (lo, hi):
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            assert page.compression == tifffile.COMPRESSION.JPEG
            assert page.photometric == tifffile.PHOTOMETRIC.YCBCR
            assert len(tf.series[0].levels) == 3
            decoded = tf.series[0].levels[0].asarray()
        errors[path] = np.abs(decoded.astype(int) - image).mean()
    assert errors[hi] < errors[lo]
    assert hi.stat().st_size > lo.stat().st_size


def test_tiff_without_mpp_has_no_physical_size(tmp_path):
    img = make_image(300, 200)
    out = write_pyramid(img, tmp_path / "n.ome.tiff", tile=64, compression="zlib")
    px = ome_pixels(out)
    assert px.get("PhysicalSizeX") is None
    assert open_slide(out).mpp is None
    np.testing.assert_array_equal(tifffile.imread(out), img)


# -- OME-Zarr -----------------------------------------------------------------


def test_ome_zarr_round_trip_from_unaligned_dask(tmp_path, image):
    # 700-px chunks do not line up with the 256-px tiles: the writer must realign.
    lazy = da.from_array(image, chunks=(700, 700, 3))
    out = write_pyramid(lazy, tmp_path / "s.ome.zarr", mpp=0.5, tile=TILE)
    ref = reference_pyramid(image)
    group = zarr.open_group(out, mode="r")
    assert group.metadata.zarr_format == 3
    ome = group.attrs["ome"]
    assert ome["version"] == "0.5"
    (ms,) = ome["multiscales"]
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert [a.get("unit") for a in ms["axes"]] == [None, "micrometer", "micrometer"]
    assert len(ms["datasets"]) == len(ref)
    for k, (ds, want) in enumerate(zip(ms["datasets"], ref, strict=True)):
        (scale,) = ds["coordinateTransformations"]
        assert scale == {"type": "scale", "scale": [1.0, 0.5 * 2**k, 0.5 * 2**k]}
        arr = group[ds["path"]]
        assert arr.shape == (3, *want.shape[:2])
        assert arr.chunks == (3, TILE, TILE)
        assert arr.metadata.dimension_names == ("c", "y", "x")
        np.testing.assert_array_equal(arr[:].transpose(1, 2, 0), want, err_msg=f"level {k}")
    assert [c["color"] for c in ome["omero"]["channels"]] == ["FF0000", "00FF00", "0000FF"]


def test_zarr_without_mpp_scales_in_pixels(tmp_path):
    out = write_pyramid(make_image(2000, 300), tmp_path / "n.ome.zarr", tile=64)
    ms = zarr.open_group(out, mode="r").attrs["ome"]["multiscales"][0]
    assert all("unit" not in a for a in ms["axes"])
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales == [[1.0, 1.0, 1.0], [1.0, 2.0, 2.0]]
    assert open_slide(out).mpp is None


def test_image_smaller_than_a_tile_is_one_level(tmp_path):
    img = make_image(37, 101)
    out = write_pyramid(img, tmp_path / "t.ome.zarr", tile=512, compression=None)
    group = zarr.open_group(out, mode="r")
    assert len(group.attrs["ome"]["multiscales"][0]["datasets"]) == 1
    np.testing.assert_array_equal(group["0"][:].transpose(1, 2, 0), img)


# -- our reader ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "compression"), [("r.ome.tif", "zstd"), ("r.ome.zarr", "zstd")])
def test_open_slide_reads_back_what_was_written(tmp_path, image, name, compression):
    out = write_pyramid(image, tmp_path / name, mpp=0.25, tile=TILE, compression=compression)
    slide = open_slide(out)
    ref = reference_pyramid(image)
    assert slide.mpp == pytest.approx(0.25)
    assert len(slide.levels) == len(ref)
    for k, (level, want) in enumerate(zip(slide.levels, ref, strict=True)):
        assert level.dtype == np.uint8
        np.testing.assert_array_equal(level.compute(), want, err_msg=f"level {k}")


CMU = Path(__file__).parents[1] / "data" / "CMU-1-Small-Region.svs"


@pytest.mark.parametrize("name", ["cmu.ome.tif", "cmu.ome.zarr"])
def test_real_slide_rewritten_losslessly(tmp_path, name):
    # The CMU slide's 240-px JPEG tiles do not line up with 512-px output tiles.
    slide = open_slide(CMU)
    out = write_pyramid(slide.levels[0], tmp_path / name, mpp=slide.mpp, compression="zstd")
    original = tifffile.imread(CMU)  # tifffile's own decode of the SVS baseline
    ref = reference_pyramid(original)
    back = open_slide(out)
    assert back.mpp == pytest.approx(0.499)
    assert len(back.levels) == len(ref) == 3
    for k, (level, want) in enumerate(zip(back.levels, ref, strict=True)):
        np.testing.assert_array_equal(level.compute(), want, err_msg=f"level {k}")
    if name.endswith(".tif"):
        np.testing.assert_array_equal(tifffile.imread(out), original)


# -- the incremental API the resumable tiler builds on -----------------------


def test_zarr_pyramid_tile_by_tile_with_reopen_matches_write_pyramid(tmp_path, image):
    h, w = image.shape[:2]
    pyr = ZarrPyramid.create(tmp_path / "p.ome.zarr", (h, w), mpp=0.5, tile=TILE)
    tiles = [(y, x) for y in range(0, h, TILE) for x in range(0, w, TILE)]
    order = np.random.default_rng(1).permutation(len(tiles))
    half = len(order) // 2
    for i in order[:half]:
        y, x = tiles[i]
        pyr.write_region(image[y : y + TILE, x : x + TILE], y, x)
    # A resumed run reopens the store; nothing marks it as a finished image yet.
    pyr = ZarrPyramid.open(tmp_path / "p.ome.zarr")
    assert not pyr.complete and "ome" not in pyr.group.attrs
    written = {(tiles[i][0] // TILE, tiles[i][1] // TILE) for i in order[:half]}
    assert pyr.written_tiles() == written
    for i in order[half:]:
        y, x = tiles[i]
        pyr.write_region(image[y : y + TILE, x : x + TILE], y, x)
    pyr.finalize()
    assert ZarrPyramid.open(tmp_path / "p.ome.zarr").complete
    assert len(pyr.written_tiles()) == len(tiles)

    direct = write_pyramid(image, tmp_path / "d.ome.zarr", mpp=0.5, tile=TILE)
    a, b = zarr.open_group(pyr.path, mode="r"), zarr.open_group(direct, mode="r")
    ms_a, ms_b = a.attrs["ome"]["multiscales"][0], b.attrs["ome"]["multiscales"][0]
    assert (ms_a["axes"], ms_a["datasets"]) == (ms_b["axes"], ms_b["datasets"])
    for k in range(3):
        np.testing.assert_array_equal(a[str(k)][:], b[str(k)][:])

    tif = zarr_to_ome_tiff(pyr.path, tmp_path / "p.ome.tif", compression="zlib")
    with tifffile.TiffFile(tif) as tf:
        for k, level in enumerate(tf.series[0].levels):
            np.testing.assert_array_equal(level.asarray(), b[str(k)][:].transpose(1, 2, 0))
    assert float(ome_pixels(tif).get("PhysicalSizeX")) == 0.5


def test_write_region_outside_level0_is_refused(tmp_path):
    pyr = ZarrPyramid.create(tmp_path / "p.ome.zarr", (100, 100), tile=64)
    with pytest.raises(ParameterError, match="outside"):
        pyr.write_region(np.zeros((64, 64, 3), np.uint8), 64, 0)


# -- atomicity ----------------------------------------------------------------


def _failing_after(image: np.ndarray, n_ok: int) -> da.Array:
    """A dask view of `image` whose chunks raise once `n_ok` of them were computed."""
    count = {"n": 0}

    def block(x):
        count["n"] += 1
        if count["n"] > n_ok:
            raise RuntimeError("tile source failed")
        return x

    return da.from_array(image, chunks=(TILE, TILE, 3)).map_blocks(block, dtype=np.uint8)


@pytest.mark.parametrize("name", ["f.ome.tif", "f.ome.zarr"])
def test_failed_write_leaves_no_target_and_no_temporaries(tmp_path, image, name):
    with pytest.raises(RuntimeError, match="tile source failed"):
        write_pyramid(_failing_after(image, 20), tmp_path / name, tile=TILE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["o.ome.tif", "o.ome.zarr"])
def test_failed_overwrite_keeps_the_old_output(tmp_path, name):
    old = make_image(300, 300, seed=1)
    target = write_pyramid(old, tmp_path / name, tile=64, compression="zstd")
    with pytest.raises(RuntimeError):
        write_pyramid(_failing_after(make_image(300, 300, seed=2), 0), target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    np.testing.assert_array_equal(open_slide(target).levels[0].compute(), old)


@pytest.mark.parametrize("name", ["w.ome.tif", "w.ome.zarr"])
def test_overwrite_replaces_existing_output(tmp_path, name):
    target = write_pyramid(make_image(200, 200, seed=1), tmp_path / name, tile=64)
    with pytest.raises(SlideWriteError, match="already exists"):
        write_pyramid(make_image(200, 200, seed=2), target, tile=64)
    new = make_image(150, 120, seed=3)
    write_pyramid(new, target, tile=64, compression="zstd", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    np.testing.assert_array_equal(open_slide(target).levels[0].compute(), new)


_SLOW_WRITER = """
import sys, time
import dask.array as da, numpy as np
from napari_stainfuser import write_pyramid

def slow(x):
    time.sleep(0.05)
    return x

img = da.zeros((4096, 4096, 3), dtype=np.uint8, chunks=(256, 256, 3)).map_blocks(slow)
write_pyramid(img, sys.argv[1], tile=256)
"""


@pytest.mark.parametrize("name", ["k.ome.tif", "k.ome.zarr"])
def test_killed_write_never_leaves_a_complete_looking_output(tmp_path, name):
    target = tmp_path / name
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target)])
    try:
        deadline = time.monotonic() + 60
        while not any(tmp_path.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # let it write some tiles
        assert proc.poll() is None, "the writer finished before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not target.exists()
    left = list(tmp_path.iterdir())
    assert left, "the temporary output should exist while writing"
    for p in left:
        # What a killed run leaves is hidden and carries no slide extension.
        assert p.name.startswith(".") and not p.name.endswith((".ome.tif", ".ome.zarr"))


# -- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (np.zeros((64, 64, 3), np.uint16), "uint8"),
        (np.zeros((64, 64), np.uint8), "Y×X×3"),
        (np.zeros((64, 64, 4), np.uint8), "Y×X×3"),
        (da.zeros((64, 64, 1), dtype=np.uint8), "Y×X×3"),
        ([[[0, 0, 0]]], "numpy or dask"),
        (np.zeros((0, 64, 3), np.uint8), "empty"),
    ],
)
def test_bad_image_names_the_parameter(tmp_path, bad, problem):
    with pytest.raises(ParameterError, match=f"^image: .*{problem}"):
        write_pyramid(bad, tmp_path / "x.ome.tif")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "x.tif"}, "^path: .*x.tif.*unknown output format"),
        ({"path": "x.zarr"}, "^path: .*unknown output format"),
        ({"compression": "jpeg", "path": "x.ome.zarr"}, "^compression: 'jpeg'"),
        ({"compression": "webp"}, "^compression: 'webp'"),
        ({"tile": 100}, "^tile: .*multiple of 16"),
        ({"tile": 0}, "^tile: "),
        ({"mpp": -0.5}, "^mpp: "),
        ({"mpp": float("nan")}, "^mpp: "),
        ({"quality": 0}, "^quality: "),
    ],
)
def test_bad_options_name_the_parameter(tmp_path, kwargs, message):
    path = tmp_path / kwargs.pop("path", "x.ome.tif")
    with pytest.raises(ParameterError, match=message):
        write_pyramid(np.zeros((64, 64, 3), np.uint8), path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_missing_target_directory_names_it(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(SlideWriteError, match=f"directory {missing} does not exist"):
        write_pyramid(np.zeros((64, 64, 3), np.uint8), missing / "x.ome.tif")


def test_existing_non_zarr_directory_is_never_replaced(tmp_path):
    precious = tmp_path / "data.ome.zarr"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(SlideWriteError, match="not a zarr store"):
        write_pyramid(np.zeros((64, 64, 3), np.uint8), precious, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.ome.zarr"]


# -- memory -------------------------------------------------------------------

_MEASURE = """
import resource, sys
import dask.array as da, numpy as np
from napari_stainfuser import write_pyramid

def block(block_info=None):
    (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
    rng = np.random.default_rng([y0, x0])
    return rng.integers(0, 256, (y1 - y0, x1 - x0, 3), dtype=np.uint8)

h, w = int(sys.argv[2]), int(sys.argv[3])
chunks = da.core.normalize_chunks((512, 512, 3), (h, w, 3))
write_pyramid(da.map_blocks(block, dtype=np.uint8, chunks=chunks), sys.argv[1], compression=None)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


def _peak_rss_mb(path: Path, h: int, w: int) -> float:
    # glibc gives each thread its own malloc arena that keeps freed blocks;
    # the longer a run, the more arenas reach their high-water mark, so RSS
    # creeps up with run time rather than with what the writer holds. Two
    # arenas keep the measurement about the writer.
    env = dict(os.environ, MALLOC_ARENA_MAX="2")
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), str(h), str(w)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[-1]) / 1024


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units and malloc arenas")
def test_peak_memory_does_not_grow_with_image_size(tmp_path):
    # Same width, 16× the rows: a streaming writer holds a few chunk rows and
    # a block of tiles, which depend on the width and the tile size only.
    # Holding any whole level of the large image except the small ones costs
    # at least its level 1 minus the small image's: (16384 - 1024) × 4096 × 3
    # / 4 bytes = 47 MB (level 0 alone would be 201 MB). So the growth must
    # stay below that.
    w = 4096
    small = _peak_rss_mb(tmp_path / "small.ome.tif", 1024, w)
    large = _peak_rss_mb(tmp_path / "large.ome.tif", 16384, w)
    level1_growth = (16384 - 1024) * w * 3 / 4 / 2**20
    print(f"peak RSS {small:.0f} MB -> {large:.0f} MB, bound {level1_growth:.0f} MB")
    assert large - small < level1_growth, (small, large)
    with tifffile.TiffFile(tmp_path / "large.ome.tif") as tf:
        assert len(tf.series[0].levels) == 5
