"""The "Virtual IHC" dock widget in a real napari viewer (headless, under Xvfb), and its model.

The checkpoint is the tiny architecture with random weights: its pictures mean
nothing, but it is a real checkpoint folder, and what the widget shows must be
exactly what the library computes with it.
"""

import numpy as np
import pytest
from napari_cases import DATA, engine_threads, pump, screenshot

from napari_stainfuser.errors import CheckpointError, ParameterError

MARKERS = ["CD3", "CK8/18"]
# Small on purpose: a 128-px tile with 2 steps costs seconds on a 2-core CPU.
# 192² at tile 128, overlap 64: 2 × 2 overlapping tiles, one group of 4.
SIDE = 192
FAST = {"steps": 2, "tile": 128, "seed": 7}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from napari_stainfuser.diffusion.ihc_networks import build, preset
    from napari_stainfuser.diffusion.virtual_ihc import save_checkpoint

    folder = tmp_path_factory.mktemp("virtual-ihc") / "ckpt"
    net = build(preset("tiny", MARKERS, tile=64, mpp=None), seed=0)
    return save_checkpoint(net, folder, {"training": {"steps": 0}})


@pytest.fixture(scope="module")
def he():
    from napari_stainfuser.targets import read_target_image

    return read_target_image(DATA / "he" / "torchstain-source.png")  # 438 × 584


@pytest.fixture
def remembered():
    """The remembered weights folder, put back as it was after the test."""
    from qtpy.QtCore import QSettings

    from napari_stainfuser._napari._qt.normalize_widget import SETTINGS
    from napari_stainfuser._napari.virtual_ihc_model import WEIGHTS_KEY

    settings = QSettings(*SETTINGS)
    before = settings.value(WEIGHTS_KEY)
    settings.remove(WEIGHTS_KEY)
    yield settings
    if before is None:
        settings.remove(WEIGHTS_KEY)
    else:
        settings.setValue(WEIGHTS_KEY, before)


# -- the model, without Qt -------------------------------------------------------------------


def test_the_model_lists_markers_checks_choices_and_builds_one_job(checkpoint, he, tmp_path):
    from napari.components import ViewerModel

    from napari_stainfuser._napari.virtual_ihc_model import VirtualIHCModel

    viewer = ViewerModel()
    viewer.add_image(he[:SIDE, :SIDE], rgb=True, name="he", scale=(0.5, 0.5), units="µm")
    m = VirtualIHCModel(viewer)
    assert m.image_layers() == ["he"]
    with pytest.raises(ParameterError, match="weights: choose"):
        m.markers()
    m.weights = str(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="nowhere: no such file"):
        m.job()
    m.weights = str(checkpoint)
    assert m.markers() == tuple(MARKERS)
    with pytest.raises(ParameterError, match="marker: choose one of CD3, CK8/18"):
        m.job()
    m.marker = "ck8/18"
    with pytest.raises(ParameterError, match="source: choose an H&E layer"):
        m.job()
    m.source, m.samples, m.steps, m.sampler = "he", 3, 2, "dpm++"
    job = m.job()
    assert job.method == "virtual-ihc" and job.seed == 0 and job.mpp == 0.5
    assert dict(job.stainer.options) == {
        "marker": "CK8/18", "samples": 3, "sampler": "dpm++", "steps": 2,
    }  # fmt: skip
    assert m.result_name() == "he · virtual IHC (ck8/18)"
    assert list(m.extra_names()) == ["mask", "uncertainty"]
    m.samples = 1
    assert list(m.extra_names()) == ["mask"]  # one sample has no spread
    m.samples = 0
    with pytest.raises(ParameterError, match="samples"):
        m.job()


# -- the widget in a real viewer -----------------------------------------------------------------


@pytest.fixture
def viewer(make_napari_viewer):
    v = make_napari_viewer(show=True)
    v.window._qt_window.resize(1400, 900)
    return v


def _widget(viewer, checkpoint=None):
    from napari_stainfuser._napari._qt.virtual_ihc_widget import VirtualIHCWidget

    w = VirtualIHCWidget(viewer)
    viewer.window.add_dock_widget(w, name="Virtual IHC", area="right")
    if checkpoint is not None:
        w.weights.edit.setText(str(checkpoint))
        w.weights.edit.editingFinished.emit()
    return w


def _choose(w, samples, steps=FAST["steps"], tile=FAST["tile"], seed=FAST["seed"]):
    w.samples.setValue(samples)
    w.steps.setValue(steps)
    w.seed.setValue(seed)
    w.tile.setCurrentIndex(w.tile.findData(tile))


def _started(w, timeout=60):
    """The live result Live started, once the model has loaded."""
    assert pump(timeout, lambda: w.live is not None), w.status.text()
    return w.live


def _markers(w) -> list[str]:
    return [w.marker.item(i).text() for i in range(w.marker.count())]


def test_the_plugin_menu_opens_it_and_it_lists_the_checkpoints_markers(
    viewer, checkpoint, remembered
):
    dock, widget = viewer.window.add_plugin_dock_widget("napari-stainfuser", "Virtual IHC")
    assert type(widget).__name__ == "VirtualIHCWidget"
    assert _markers(widget) == []
    widget.weights.edit.setText(str(checkpoint))
    widget.weights.edit.editingFinished.emit()
    assert _markers(widget) == MARKERS
    assert widget.marker.currentItem().text() == "CD3"
    assert widget.device.itemData(0) == "cpu"
    assert [widget.sampler.itemText(i) for i in range(widget.sampler.count())] == ["ddim", "dpm++"]
    # The folder is remembered: the next session's widget starts with it and its markers.
    assert remembered.value("virtual-ihc/weights") == str(checkpoint)
    again = _widget(viewer)
    assert again.weights.edit.text() == str(checkpoint)
    assert _markers(again) == MARKERS


@pytest.mark.slow
def test_live_shows_the_ihc_its_mask_and_its_uncertainty_as_stain_slide_writes_them(
    viewer, checkpoint, he, tmp_path
):
    """Live (K = 2) adds the three layers; once filled they hold exactly the pixels a
    whole-slide run writes for the same image, marker, seed, steps and tiling; the
    widget's own whole-slide run writes them too, continued after a cancel."""
    from napari_stainfuser.batch import work_dir
    from napari_stainfuser.batch.schedulers import torch_threads
    from napari_stainfuser.batch.stain import stain_slide
    from napari_stainfuser.slide.writer import ZarrPyramid

    image = np.ascontiguousarray(he[:SIDE, :SIDE])
    source = viewer.add_image(
        image, rgb=True, name="he", scale=(0.5, 0.5), translate=(100.0, 200.0), units="µm"
    )
    w = _widget(viewer, checkpoint)
    _choose(w, samples=2)
    viewer.reset_view()
    # A whole-slide run stains with one torch thread per worker (TORCH_THREADS, so
    # that runs reproduce bit for bit anywhere); the live engine uses torch's own
    # thread count. The sums inside a convolution then differ in order, which moves
    # a few IHC pixels by 1/255 and the uncertainty by ~1e-5. With the batch's
    # thread count the live tiles are the batch's tiles, bit for bit.
    with torch_threads():
        w.live_button.click()
        live = _started(w)
        ihc, mask, unc = live.layers
        assert [type(la).__name__ for la in live.layers] == ["Image", "Labels", "Image"]
        assert [la.name for la in live.layers] == [
            "he · virtual IHC (CD3)", "he · CD3 mask", "he · CD3 uncertainty",
        ]  # fmt: skip
        assert [viewer.layers.index(la) for la in (source, ihc, mask, unc)] == [0, 1, 2, 3]
        assert ihc.rgb and ihc.data.shape == (SIDE, SIDE, 4)
        assert mask.data.shape == (SIDE, SIDE) and mask.data.dtype == np.uint8
        assert unc.data.shape == (SIDE, SIDE) and unc.data.dtype == np.float32
        assert unc.colormap.name == "magma" and not unc.visible  # shown on request
        assert viewer.layers.selection.active is ihc
        for la in live.layers:
            np.testing.assert_allclose(la.scale, (0.5, 0.5))
            np.testing.assert_allclose(la.translate, (100.0, 200.0))
        # Before any tile lands: transparent, no label, no spread, at once.
        assert not ihc.data[:, :][..., 3].any() and not mask.data[:, :].any()
        assert pump(180, lambda: live.filled_fraction() >= 1.0), w.status.text()
    pump(0.3)  # the coalesced refresh
    assert unc.contrast_limits[1] > 0  # fitted to the first tiles

    expected = tmp_path / "expected.ome.zarr"
    stain_slide(
        image, expected, marker="CD3", weights=checkpoint, samples=2, sampler="ddim",
        mpp=0.5, **FAST,
    )  # fmt: skip
    want = ZarrPyramid.open(expected)
    shown = ihc.data.region(0, SIDE, 0, SIDE)
    tissue = shown[..., 3] == 255
    assert tissue.mean() > 0.5
    np.testing.assert_array_equal(shown[..., :3][tissue], want.level(0).compute()[tissue])
    live_mask = mask.data[:, :]
    np.testing.assert_array_equal(live_mask, want.extra_level("mask", 0).compute())
    assert 0 < live_mask.mean() < 1
    np.testing.assert_array_equal(unc.data[:, :], want.extra_level("uncertainty", 0).compute())
    w.cancel()
    assert live.closed and w.live is None
    assert ihc.data[:10, :10].shape == (10, 10, 4)  # still answers, asks a stopped engine nothing

    # Whole slide…: cancelled while its one group of tiles is on the device (it stops
    # at the next report, with the group committed), then continued on the same output.
    out = tmp_path / "widget.ome.zarr"
    w.whole_slide(str(out))
    assert pump(60, lambda: "stain" in w.status.text()), w.status.text()
    w.cancel()
    assert pump(120, lambda: not w.whole.running)
    assert "cancelled" in w.status.text() and work_dir(out).is_dir() and not out.exists()
    w.whole_slide(str(out))
    assert "resumed" in w.status.text()
    assert pump(180, lambda: w.open_button.isVisible()), w.status.text()
    got = ZarrPyramid.open(out)
    np.testing.assert_array_equal(got.level(0).compute(), want.level(0).compute())
    for name in ("mask", "uncertainty", "mask_uncertainty"):
        np.testing.assert_array_equal(
            got.extra_level(name, 0).compute(), want.extra_level(name, 0).compute()
        )
    w.open_result()
    opened = {la.name: type(la).__name__ for la in viewer.layers}
    assert opened["widget"] == "Image"
    assert opened["widget mask"] == "Labels"
    assert opened["widget uncertainty"] == "Image"


def test_removing_the_source_or_closing_the_widget_stops_the_work(
    make_napari_viewer, checkpoint, he
):
    # A fresh viewer each time: napari 0.9.2 with vispy 0.17 (software GL under Xvfb)
    # crashes in glDrawArrays when an image and a Labels layer are removed in one go,
    # an image is added and drawn, and then a Labels layer is added (plain numpy
    # layers do it too; napari#8471 looks alike). That is also why a restart
    # refills its layers instead of replacing them.
    for stop in ("remove source", "close widget"):
        viewer = make_napari_viewer(show=True)
        source = viewer.add_image(np.ascontiguousarray(he[:SIDE, :SIDE]), rgb=True, name="he")
        w = _widget(viewer, checkpoint)
        _choose(w, samples=1)
        w.live_button.click()
        live = _started(w)
        assert [type(la).__name__ for la in live.layers] == ["Image", "Labels"]
        if stop == "remove source":
            # Live again with the same choices refills the same layers, rather than
            # adding "name [1]" beside them.
            first = live.layers
            w.live_button.click()
            assert live.closed
            live = _started(w)
            assert all(a is b for a, b in zip(live.layers, first, strict=True))
            assert len(viewer.layers) == 3 and live.layers[1].data.name == "mask"
        assert pump(10, lambda: bool(engine_threads()))
        if stop == "remove source":
            viewer.layers.remove(source)
            assert live.closed and w.live is None
            assert "stopped" in w.status.text()
        else:
            w.close()
            assert live.closed
        # The batch on the device finishes, then the engines' threads end.
        assert pump(120, lambda: not engine_threads()), engine_threads()
        assert live.pyramid.engine.pending() == 0


def test_expected_failures_are_notifications_not_crashes(
    viewer, checkpoint, he, tmp_path, remembered, monkeypatch
):
    from napari.utils.notifications import notification_manager

    viewer.add_image(np.ascontiguousarray(he[:SIDE, :SIDE]), rgb=True, name="he")
    w = _widget(viewer)
    before = len(notification_manager.records)
    (tmp_path / "empty").mkdir()
    w.weights.edit.setText(str(tmp_path / "empty"))
    w.weights.edit.editingFinished.emit()
    assert pump(5, lambda: len(notification_manager.records) > before)
    msg = str(notification_manager.records[-1].message)
    assert "not a virtual-IHC checkpoint" in msg and "\n" not in msg
    assert _markers(w) == [] and remembered.value("virtual-ihc/weights") is None
    n = len(notification_manager.records)
    w.live_button.click()
    assert pump(5, lambda: len(notification_manager.records) > n)
    assert "empty" in str(notification_manager.records[-1].message)
    assert w.live is None and [la.name for la in viewer.layers] == ["he"]
    # A good folder afterwards works.
    w.weights.edit.setText(str(checkpoint))
    w.weights.edit.editingFinished.emit()
    assert _markers(w) == MARKERS
    # A device that fails (out of memory, say) is one notification, however many
    # batches fail, not a silent hole in the layers.
    from napari_stainfuser.diffusion.virtual_ihc import VirtualIHC

    def out_of_memory(self, tiles, noise=None):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(VirtualIHC, "stain", out_of_memory)
    _choose(w, samples=1)
    n = len(notification_manager.records)
    w.live_button.click()
    assert pump(60, lambda: len(notification_manager.records) > n), w.status.text()
    assert "out of memory (simulated)" in str(notification_manager.records[-1].message)
    pump(1)
    assert len(notification_manager.records) == n + 1
    w.cancel()


def test_screenshot_of_the_widget_and_a_filling_live_ihc(viewer, checkpoint, he, tmp_path):
    """The dock with the marker list, the IHC filling in over the H&E: the README's picture."""
    image = np.ascontiguousarray(he[:256, :384])
    viewer.add_image(image, rgb=True, name="H&E", scale=(0.5, 0.5), units="µm")
    w = _widget(viewer, checkpoint)
    _choose(w, samples=2)
    viewer.reset_view()
    w.live_button.click()
    live = _started(w)
    # Tiles land a group of four at a time, in raster order: the top rows first.
    assert pump(180, lambda: live.filled_fraction() > 0.0), w.status.text()
    pump(0.3)
    assert live.filled_fraction() < 1.0
    screenshot(viewer, tmp_path, "virtual-ihc-widget.png")
    w.cancel()
