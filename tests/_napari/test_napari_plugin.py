"""The npe2 contributions in a real napari viewer: reader, writer and sample data."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from napari_cases import pump

from napari_stainfuser._napari.background import pixels_of
from napari_stainfuser.errors import SlideReadError

DATA = Path(__file__).parents[1] / "data"
CMU = DATA / "CMU-1-Small-Region.svs"


def test_reader_opens_cmu_as_multiscale_layer_in_um(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open(str(CMU), plugin="napari-stainfuser")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.name == "CMU-1-Small-Region"
    assert layer.rgb
    np.testing.assert_allclose(layer.scale, [0.499, 0.499])
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    data = layer.data[0] if layer.multiscale else layer.data
    assert data.shape == (2967, 2220, 3)
    # The pixels napari shows are the file's pixels.
    with tifffile.TiffFile(CMU) as tif:
        expected = tif.pages[0].asarray()[1000:1100, 2000:2100]
    np.testing.assert_array_equal(np.asarray(data[1000:1100, 2000:2100]), expected)
    assert layer.multiscale
    assert len(layer.data) >= 2


def test_reader_declines_unrelated_files(tmp_path):
    from napari_stainfuser._napari.reader import get_reader

    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([str(CMU), str(CMU)]) is None
    assert callable(get_reader(str(CMU)))


def test_reader_declines_fluorescence_tiffs_for_napari_builtins(tmp_path):
    from napari_stainfuser._napari.reader import get_reader

    path = tmp_path / "dapi.tif"
    tifffile.imwrite(path, np.zeros((4, 64, 64), np.uint16))
    assert get_reader(str(path)) is None


def test_reader_reports_corrupt_file_as_slide_read_error(tmp_path):
    from napari_stainfuser._napari.reader import get_reader

    bad = tmp_path / "broken.svs"
    bad.write_bytes(CMU.read_bytes()[: CMU.stat().st_size // 2])
    with pytest.raises(SlideReadError, match="broken.svs"):
        get_reader(str(bad))(str(bad))


@pytest.mark.parametrize("suffix", [".ome.tif", ".ome.zarr"])
def test_writer_saves_layer_as_pyramid(make_napari_viewer, tmp_path, suffix):
    from napari_stainfuser.slide import open_slide

    viewer = make_napari_viewer()
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(1500, 1300, 3), dtype=np.uint8)
    viewer.add_image(img, rgb=True, name="noise", scale=(0.25, 0.25), units=("um", "um"))
    out = tmp_path / f"noise{suffix}"
    viewer.layers.save(str(out), selected=False, plugin="napari-stainfuser")
    assert out.exists()
    # What the writer wrote opens again in napari as a multiscale layer in µm.
    (reopened,) = viewer.open(str(out), plugin="napari-stainfuser")
    assert reopened.multiscale and len(reopened.data) == 2
    np.testing.assert_allclose(reopened.scale, [0.25, 0.25])
    if suffix == ".ome.zarr":
        np.testing.assert_array_equal(np.asarray(reopened.data[0]), img)
    slide = open_slide(out)
    assert slide.mpp == pytest.approx(0.25)
    assert len(slide.levels) == 2
    if suffix == ".ome.zarr":  # lossless by default
        np.testing.assert_array_equal(slide.levels[0].compute(), img)


def test_sample_data_is_lazy_multiscale_synthetic_slide(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-stainfuser", "synthetic_he")
    layer = layers[0]
    assert layer.multiscale
    h, w = layer.data[0].shape[:2]
    assert min(h, w) >= 20000
    assert layer.data[0].dtype == np.uint8
    # Lazy: dask arrays behind levels made in the background, and the smallest
    # level renders quickly.
    assert hasattr(pixels_of(layer.data[0]), "dask")
    small = np.asarray(pixels_of(layer.data[-1]))
    assert small.std() > 5  # tissue, not a blank canvas


def test_the_sample_is_drawn_from_the_background_and_jobs_read_its_real_pixels(
    make_napari_viewer,
):
    from napari_stainfuser._napari.sources import layer_slide

    viewer = make_napari_viewer(show=True)
    layer = viewer.open_sample("napari-stainfuser", "synthetic_he")[0]
    pyramid = layer.data[0].pyramid
    # What napari shows now may be stand-ins; a job reads the tissue itself.
    slide = layer_slide(layer)
    assert all(a is b.array for a, b in zip(slide.levels, layer.data, strict=True))
    viewer.reset_view()
    assert pump(120, lambda: pyramid.pending() == 0)
    pump(0.5)  # the coalesced refresh
    real = np.asarray(pixels_of(layer.data[-1]))
    np.testing.assert_array_equal(np.asarray(layer.data[-1]), real)
    # The thumbnail and the canvas show the tissue, not the glass shown before it landed.
    assert layer.thumbnail[..., :3].std() > 5
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    tissue = shot.mean(axis=2) < 225  # pink and purple, against glass at 240 and a black canvas
    assert (tissue & (shot.max(axis=2) > 60)).mean() > 0.05


def test_a_removed_sample_stops_rendering_what_it_was_asked_for(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = viewer.open_sample("napari-stainfuser", "synthetic_he")[0]
    pyramid = layer.data[0].pyramid
    viewer.layers.remove(layer)
    # 256 blocks of level 0 (minutes of rendering here) asked for after the removal:
    # the first block to land finds nobody showing them, and the rest are dropped.
    pyramid.levels[0][:8192, :8192]
    assert pyramid.pending() > 100
    assert pump(60, lambda: pyramid.pending() == 0)
    made = sum(
        pyramid.is_made(0, y, y + 512, x, x + 512)
        for y in range(0, 8192, 512)
        for x in range(0, 8192, 512)
    )
    assert made < 64, made  # all of them, without the drop


def test_writer_saves_the_real_multiscale_slide_opened_by_the_reader(make_napari_viewer, tmp_path):
    # napari hands a multiscale layer's data to writers as its MultiScaleData.
    from napari_stainfuser.slide import open_slide

    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(CMU), plugin="napari-stainfuser")
    assert layer.multiscale and type(layer.data).__name__ == "MultiScaleData"
    out = tmp_path / "cmu-copy.ome.zarr"
    viewer.layers.save(str(out), selected=False, plugin="napari-stainfuser")
    copy = open_slide(out)
    np.testing.assert_array_equal(copy.levels[0].compute(), open_slide(CMU).levels[0].compute())
    assert copy.mpp == pytest.approx(0.499)
