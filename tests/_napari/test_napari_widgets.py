"""The dock widgets in a real napari viewer (headless, under Xvfb), and their models."""

import json

import numpy as np
import pytest
from napari_cases import CMU, TARGET, engine_threads, pump, screenshot

from napari_stainfuser.errors import ParameterError

# -- the models, without Qt ----------------------------------------------------------------


@pytest.fixture
def model_viewer():
    from napari.components import ViewerModel

    from napari_stainfuser._napari.layers import slide_layer_data
    from napari_stainfuser.slide import open_slide

    viewer = ViewerModel()
    data, kwargs, _ = slide_layer_data(open_slide(CMU))
    viewer.add_image(data, **kwargs)
    return viewer


def test_the_model_checks_choices_and_builds_the_job(model_viewer, tmp_path):
    from napari_stainfuser._napari.normalize_model import NormalizationModel

    m = NormalizationModel(model_viewer)
    assert m.image_layers() == ["CMU-1-Small-Region"]
    with pytest.raises(ParameterError, match="source: choose a layer"):
        m.job()
    m.source = "CMU-1-Small-Region"
    with pytest.raises(ParameterError, match="target: choose a picture"):
        m.job()
    m.target_path = str(TARGET)
    job = m.job()
    assert job.slide == str(CMU.absolute()) and job.method == "macenko"
    assert m.result_name() == "CMU-1-Small-Region · macenko"
    assert not m.diffusion() and m.can_save_preset()
    m.method = "stainfuser"
    assert m.diffusion() and not m.can_save_preset()
    m.weights = str(tmp_path / "missing.safetensors")
    with pytest.raises(Exception, match="missing.safetensors"):
        m.job()


def _library_fit(method, target):
    from napari_stainfuser.targets import fit_target

    return {k: v.numpy() for k, v in fit_target(method, target).target_state.items()}


@pytest.mark.parametrize("kind", ["layer", "region", "preset", "file"])
def test_every_target_kind_fits_the_stain_the_library_fits_on_the_same_pixels(
    kind, model_viewer, tmp_path
):
    from napari_stainfuser._napari.normalize_model import NormalizationModel
    from napari_stainfuser.targets import read_target_image

    target = read_target_image(TARGET)  # 441 × 587
    m = NormalizationModel(model_viewer)
    m.source, m.method, m.target_kind = "CMU-1-Small-Region", "vahadane", kind
    if kind in ("layer", "region"):
        model_viewer.add_image(target, rgb=True, name="lab B", translate=(100.0, 5000.0))
        m.target_layer = "lab B"
    if kind == "region":
        # A rectangle over rows 40-240, columns 100-400 of the target layer.
        model_viewer.add_shapes(
            [np.array([[140.0, 5100.0], [340.0, 5400.0]])], shape_type="rectangle", name="roi"
        )
        m.target_shapes = "roi"
        expected = target[40:240, 100:400]
    elif kind == "preset":
        from napari_stainfuser import make_stainer

        m.target_path = str(make_stainer("vahadane", TARGET).save(tmp_path / "lab-b.json"))
        expected = m.target_path
    else:
        expected = target
        if kind == "file":
            m.target_path = str(TARGET)
    got = m.target()
    if kind in ("layer", "region"):
        np.testing.assert_array_equal(got, expected)
    summary = m.summary(got)
    ref = _library_fit("vahadane", expected)
    job = m.job(got)
    stainer = job.stainer.build()
    for k, v in ref.items():
        np.testing.assert_allclose(stainer.target_state[k].numpy(), v, rtol=0, atol=1e-12)
    assert [name for name, _, _ in summary.stains] == ["hematoxylin", "eosin"]


def test_a_region_needs_a_rectangle(model_viewer):
    from napari_stainfuser._napari.normalize_model import NormalizationModel

    model_viewer.add_shapes(
        [np.array([[0.0, 0.0], [10.0, 10.0], [0.0, 10.0]])], shape_type="polygon", name="roi"
    )
    m = NormalizationModel(model_viewer)
    m.target_kind, m.target_layer, m.target_shapes = "region", "CMU-1-Small-Region", "roi"
    with pytest.raises(ParameterError, match="has no rectangle"):
        m.target()


# -- the widgets in a real viewer --------------------------------------------------------------


@pytest.fixture
def viewer(make_napari_viewer):
    # Shown: napari picks a multiscale level when the canvas draws.
    v = make_napari_viewer(show=True)
    v.window._qt_window.resize(1400, 900)
    return v


def _widget(viewer):
    from napari_stainfuser._napari._qt.normalize_widget import NormalizationWidget

    w = NormalizationWidget(viewer)
    viewer.window.add_dock_widget(w, name="Stain normalization", area="right")
    return w


def _cmu_with_target_file(viewer):
    """The CMU slide open, the widget docked, the target picture chosen as a file."""
    viewer.open(str(CMU), plugin="napari-stainfuser")
    w = _widget(viewer)
    w.kind.setCurrentIndex(3)
    w.target_file.edit.setText(str(TARGET))
    w.target_file.edit.editingFinished.emit()
    return w


def test_the_plugin_contributes_both_widgets_under_its_menu(viewer):
    dock, widget = viewer.window.add_plugin_dock_widget("napari-stainfuser", "Stain normalization")
    assert type(widget).__name__ == "NormalizationWidget"
    dock, widget = viewer.window.add_plugin_dock_widget("napari-stainfuser", "Stain QA")
    assert type(widget).__name__ == "QAWidget"


def test_the_widget_lists_layers_and_follows_additions_and_removals(viewer):
    w = _widget(viewer)
    assert w.source.count() == 0
    viewer.open(str(CMU), plugin="napari-stainfuser")
    assert [w.source.itemText(i) for i in range(w.source.count())] == ["CMU-1-Small-Region"]
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="lab B")
    viewer.add_image(np.zeros((64, 64), np.float32), name="not rgb")
    viewer.add_shapes(name="roi")
    assert [w.source.itemText(i) for i in range(w.source.count())] == [
        "CMU-1-Small-Region",
        "lab B",
    ]
    assert [w.target_layer.itemText(i) for i in range(w.target_layer.count())] == ["lab B"]
    assert w.target_shapes.itemText(0) == "roi"
    viewer.layers.remove("lab B")
    assert w.source.count() == 1 and w.target_layer.count() == 0
    # Options appear only when they apply.
    w.method.setCurrentText("stainfuser")
    assert not w.diffusion.isHidden() and not w.preset_button.isEnabled()
    w.method.setCurrentText("reinhard")
    assert w.diffusion.isHidden() and w.preset_button.isEnabled()
    assert w.device.itemData(0) == "cpu"


def _live(viewer, w, target=TARGET, method="macenko", timeout=60):
    w.kind.setCurrentIndex(3)  # image file
    w.target_file.edit.setText(str(target))
    w.target_file.edit.editingFinished.emit()
    w.method.setCurrentText(method)
    w.live_button.click()
    assert pump(timeout, lambda: w.live is not None), w.status.text()
    return w.live


def _filled(live, timeout=60):
    return pump(timeout, lambda: live.filled_fraction() >= 1.0)


def test_a_live_run_on_cmu_fills_the_view_with_what_normalize_slide_writes(viewer, tmp_path):
    from napari_stainfuser import normalize_slide
    from napari_stainfuser.slide import open_slide

    (source,) = viewer.open(str(CMU), plugin="napari-stainfuser")
    w = _widget(viewer)
    live = _live(viewer, w)
    assert live.layer.name == "CMU-1-Small-Region · macenko"
    assert viewer.layers.index(live.layer) == viewer.layers.index(source) + 1
    np.testing.assert_allclose(live.layer.scale, source.scale)
    assert _filled(live), live.filled_fraction()
    pump(0.5)
    screenshot(viewer, tmp_path, "live-whole-slide.png")

    # Zoom in on a corner: level 0 is shown, and it fills in too.
    viewer.camera.zoom *= 6
    viewer.camera.center = (1400 * 0.499, 1150 * 0.499)
    assert pump(30, lambda: live.displayed_level() == 0 and live.filled_fraction() >= 1.0)
    k, box = live.visible_box()
    y0, y1, x0, x1 = box
    shown = live.levels[0].region(y0, y1, x0, x1)
    # What the batch run writes on the same pixels (glass is left to the source below).
    out = normalize_slide(CMU, tmp_path / "batch.ome.zarr", method="macenko", target=TARGET)
    batch = open_slide(out).levels[0][y0:y1, x0:x1].compute()
    tissue = shown[..., 3] == 255
    assert tissue.mean() > 0.3
    np.testing.assert_array_equal(shown[..., :3][tissue], batch[tissue])
    original = open_slide(CMU).levels[0][y0:y1, x0:x1].compute()
    np.testing.assert_array_equal(batch[~tissue], original[~tissue])

    # A pan: the new region fills in.
    viewer.camera.center = (2400 * 0.499, 1400 * 0.499)
    pump(0.3)
    assert _filled(live)
    screenshot(viewer, tmp_path, "live-zoomed.png")
    w.cancel()


def test_zoomed_all_the_way_out_the_live_layer_and_its_thumbnail_show_the_stain(viewer):
    """napari keeps a copy of the coarsest level (for the thumbnail, and to draw that
    level); the live layer's must follow the tiles landing, not stay transparent."""
    from napari_stainfuser._napari.live import THUMBNAIL_S

    (source,) = viewer.open(str(CMU), plugin="napari-stainfuser")
    w = _widget(viewer)
    live = _live(viewer, w)
    viewer.camera.center = (2967 * 0.499 / 2, 2220 * 0.499 / 2)
    viewer.camera.zoom = 0.4  # about 2 µm per screen pixel: the coarsest level
    last = len(live.levels) - 1
    assert pump(30, lambda: live.displayed_level() == last), live.displayed_level()
    h, w_ = live.levels[last].shape[:2]
    assert pump(60, lambda: live.levels[last].filled_fraction(0, h, 0, w_) >= 1.0)
    pump(THUMBNAIL_S + 0.5)  # the overview is refreshed at most this often, and once after
    stained = live.levels[last].region(0, h, 0, w_)
    assert (stained[..., 3] == 255).mean() > 0.2
    np.testing.assert_array_equal(np.asarray(live.layer.data[last]), stained)
    # What napari draws is that level: the source hidden, the stain is on screen.
    source.visible = False
    pump(0.5)
    assert live.displayed_level() == last
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3]
    assert (shot.max(axis=2) > 40).mean() > 0.1, "the live layer drew nothing"
    thumb = live.layer.thumbnail[..., :3]  # transparent pixels are black
    assert (thumb.max(axis=2) > 40).mean() > 0.1, "the thumbnail is still empty"
    w.cancel()


def test_cancel_and_closing_the_viewer_mid_run_leave_no_thread(make_napari_viewer):
    for close in ("cancel", "viewer"):
        viewer = make_napari_viewer(show=True)
        viewer.open(str(CMU), plugin="napari-stainfuser")
        w = _widget(viewer)
        live = _live(viewer, w, method="vahadane")
        viewer.camera.zoom *= 8
        pump(0.2)
        assert engine_threads()
        if close == "cancel":
            w.cancel_button.click()
            assert live.closed and w.live is None
        else:
            viewer.close()
        assert pump(10, lambda: not engine_threads()), engine_threads()


def test_changing_the_method_mid_run_gives_the_new_methods_pixels_never_a_mix(viewer):
    from napari_stainfuser.slide import open_slide
    from napari_stainfuser.stainers import make_stainer

    viewer.open(str(CMU), plugin="napari-stainfuser")
    w = _widget(viewer)
    first = _live(viewer, w, method="macenko")
    pump(0.3)
    w.method.setCurrentText("reinhard")  # mid-run
    assert pump(60, lambda: w.live is not None and w.live is not first)
    live = w.live
    assert first.closed and live.layer.name.endswith("reinhard")
    assert _filled(live)
    k, (y0, y1, x0, x1) = live.visible_box()
    shown = live.levels[k].region(y0, y1, x0, x1)
    level = np.asarray(open_slide(CMU).levels[k][y0:y1, x0:x1])
    reinhard = make_stainer("reinhard", TARGET, slide=str(CMU)).transform(level)
    tissue = shown[..., 3] == 255
    np.testing.assert_array_equal(shown[..., :3][tissue], reinhard[tissue])
    assert [la.name for la in viewer.layers].count("CMU-1-Small-Region · macenko") == 1


def test_expected_failures_are_notifications_not_exceptions(viewer, tmp_path):
    from napari.utils.notifications import notification_manager
    from PIL import Image

    viewer.open(str(CMU), plugin="napari-stainfuser")
    w = _widget(viewer)
    before = len(notification_manager.records)
    # A missing weights file.
    w.method.setCurrentText("stainfuser")
    w.weights.edit.setText(str(tmp_path / "missing.safetensors"))
    w.kind.setCurrentIndex(3)
    w.target_file.edit.setText(str(TARGET))
    w.live_button.click()
    assert pump(20, lambda: len(notification_manager.records) > before)
    msg = str(notification_manager.records[-1].message)
    assert "missing.safetensors" in msg and "\n" not in msg
    # A white target.
    white = tmp_path / "white.png"
    Image.fromarray(np.full((256, 256, 3), 250, np.uint8)).save(white)
    w.method.setCurrentText("macenko")
    w.target_file.edit.setText(str(white))
    w.target_file.edit.editingFinished.emit()
    n = len(notification_manager.records)
    w.live_button.click()
    assert pump(30, lambda: len(notification_manager.records) > n)
    assert "too little tissue" in str(notification_manager.records[-1].message)
    assert w.live is None


def test_whole_slide_runs_the_batch_job_and_offers_the_result(viewer, tmp_path):
    from napari_stainfuser.slide import open_slide

    w = _cmu_with_target_file(viewer)
    out = tmp_path / "cmu-normalized.ome.zarr"
    w.whole_slide(str(out))
    assert pump(120, lambda: w.open_button.isVisible()), w.status.text()
    assert out.is_dir() and "wrote" in w.status.text()
    w.open_result()
    assert "cmu-normalized" in [la.name for la in viewer.layers]
    assert open_slide(out).levels[0].shape == (2967, 2220, 3)
    # Save preset writes a preset the library loads.
    w.save_preset(str(tmp_path / "lab-b.json"))
    assert json.loads((tmp_path / "lab-b.json").read_text())["method"] == "macenko"


def test_a_whole_slide_run_cancelled_resumes(viewer, tmp_path):
    from napari_stainfuser.batch import work_dir

    w = _cmu_with_target_file(viewer)
    w.method.setCurrentText("vahadane")
    out = tmp_path / "o.ome.zarr"
    w.whole_slide(str(out))
    assert pump(60, lambda: "stain" in w.status.text()), w.status.text()
    w.cancel()
    # Until the cancelled run has stopped, a new one into the same output would race it.
    w.whole_slide(str(out))
    assert "still stopping" in w.status.text()
    assert pump(60, lambda: not w.whole.running)
    assert work_dir(out).is_dir() and not out.exists()
    w.whole_slide(str(out))  # continues the run
    assert pump(120, lambda: out.is_dir() and not w.whole.running), w.status.text()


def test_screenshots_of_the_widgets_and_a_half_filled_live_result(viewer, tmp_path):
    """The sample and its target, one click on Live: the README's screenshots."""
    from napari_stainfuser._napari._qt.qa_widget import QAWidget

    viewer.open_sample("napari-stainfuser", "synthetic_he")
    w = _widget(viewer)
    assert w.target_layer.currentText() == "Synthetic H&E target, lab B"
    assert w.kind.currentData() == "layer"
    # Tissue-rich tissue near the origin, at about 2 µm per screen pixel.
    viewer.camera.center = (900.0, 1100.0)
    viewer.camera.zoom = 0.5
    assert pump(20, lambda: "hematoxylin" in w.stains.text())
    # The sample's own tissue on screen, not the stand-ins it shows while it is made.
    sample = viewer.layers["Synthetic H&E slide"].data[0].pyramid
    assert pump(60, lambda: sample.pending() == 0)
    w.live_button.click()  # the one click after the target is chosen
    assert pump(60, lambda: w.live is not None), w.status.text()
    live = w.live
    assert pump(60, lambda: live.filled_fraction() > 0.0)
    pump(0.15)  # one coalesced refresh
    half = live.filled_fraction()
    screenshot(viewer, tmp_path, "widget-and-half-filled-live-result.png")
    assert half < 1.0
    assert _filled(live, 120)
    pump(0.5)
    screenshot(viewer, tmp_path, "live-result.png")

    qa = QAWidget(viewer)
    viewer.window.add_dock_widget(qa, name="Stain QA", area="right", tabify=True)
    qa._refresh_layers()
    qa.side.setChecked(True)
    pump(1)
    assert _filled(live, 120)
    qa.report = None
    qa.update_measures()
    assert pump(60, lambda: qa.report is not None and qa.report.filled >= 1.0)
    assert qa.report.ssim_hematoxylin > 0.5
    assert qa.report.delta_e_result is not None
    assert qa.report.delta_e_result < qa.report.delta_e_source
    pump(1)
    screenshot(viewer, tmp_path, "qa-widget.png")
    qa.export(str(tmp_path / "before-after.png"))
    assert (tmp_path / "before-after.png").stat().st_size > 1000
    w.cancel()


def test_the_qa_widget_compares_side_by_side_blends_and_flickers(viewer, tmp_path):
    from napari_stainfuser._napari._qt.qa_widget import QAWidget

    viewer.open(str(CMU), plugin="napari-stainfuser")
    w = _widget(viewer)
    live = _live(viewer, w)
    qa = QAWidget(viewer)
    viewer.window.add_dock_widget(qa, name="Stain QA", area="right")
    qa._refresh_layers()
    assert qa.result.currentText() == live.layer.name
    qa.side.setChecked(True)
    assert viewer.canvas.grid.enabled
    qa.side.setChecked(False)
    assert not viewer.canvas.grid.enabled
    qa.slider.setValue(40)
    assert live.layer.opacity == pytest.approx(0.4)
    qa.flicker_button.click()
    assert not live.layer.visible
    qa._flicker_key(viewer)
    assert live.layer.visible
    w.cancel()


def test_fast_distilled_stainfuser_fills_the_live_view_with_the_distilled_map(viewer):
    # The tiny reference StainFuser, distilled on the layer's tissue off the UI
    # thread; the live layer then shows that per-pixel map's colours.
    from napari_stainfuser.distillation import DistilledStainer
    from napari_stainfuser.targets import read_target_image

    weights = CMU.parent / "stainfuser-reference-v2" / "checkpoint.safetensors"
    image = read_target_image(CMU.parent / "he" / "torchstain-source.png")[:256, :256]
    viewer.add_image(image, rgb=True, name="small", scale=(0.5, 0.5), units="µm")
    w = _widget(viewer)
    w.kind.setCurrentIndex(3)
    w.target_file.edit.setText(str(TARGET))
    w.target_file.edit.editingFinished.emit()
    w.method.setCurrentText("stainfuser")
    w.weights.edit.setText(str(weights))
    w.steps.setValue(2)
    w.distilled.setChecked(True)
    w.live_button.click()
    assert pump(300, lambda: w.live is not None), w.status.text()
    live = w.live
    assert isinstance(live.pyramid.stainer, DistilledStainer)
    viewer.reset_view()
    assert pump(60, lambda: live.filled_fraction() >= 1.0)
    shown = live.levels[0].region(0, 256, 0, 256)
    tissue = shown[..., 3] == 255
    assert tissue.mean() > 0.3
    want = live.pyramid.stainer.transform(image)
    np.testing.assert_array_equal(shown[..., :3][tissue], want[tissue])
    assert np.abs(want[tissue].astype(int) - image[tissue]).mean() > 5  # it did change colour
