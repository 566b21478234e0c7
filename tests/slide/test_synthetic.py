"""Synthetic slides: chunk invariance, Beer–Lambert ground truth, IHC masks, glass.

The physics checks invert the rendering independently (float64 logs and a
least-squares unmixing) and allow exactly the error that rounding to uint8 can
cause, so they fail on any wrong log base, matrix, scale, Io or misplaced chunk.
"""

from io import BytesIO

import dask
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from napari_stainfuser.errors import ParameterError
from napari_stainfuser.slide.synthetic import (
    MACENKO_REFERENCE_HE,
    MARKERS,
    SyntheticTissue,
    concentrations_to_rgb,
    render,
    synthetic_he,
    synthetic_ihc,
    synthetic_pair,
)
from napari_stainfuser.stain.matrices import RUIFROK_HDAB, RUIFROK_HE


def _unmix(rgb, matrix, io):
    """Concentrations by inverting I = io * exp(-C @ M), and their rounding bound.

    Rounding moved each intensity by at most half a level (plus float32 slack),
    so each channel's OD by at most ln(v / (v - 0.5)); least squares maps that
    to at most ``sum |pinv|`` per stain.
    """
    v = rgb.astype(np.float64)
    assert v.min() >= 1, "a black pixel cannot be inverted"
    od = -np.log(v / np.asarray(io, dtype=np.float64))
    pinv = np.linalg.pinv(np.asarray(matrix, dtype=np.float64).T)  # C = pinv @ od
    conc = od @ pinv.T
    dod = np.log(v / (v - 0.5 - 1e-3)).max(axis=-1, keepdims=True)
    return conc, dod * np.abs(pinv).sum(axis=1)


@pytest.mark.parametrize("mpp", [0.5, 4.0])
def test_same_window_whatever_the_chunking(mpp):
    t = SyntheticTissue(seed=3, mpp=mpp)
    origin, shape = (2950, 3020), (600, 700)
    ref = t.concentrations(shape, chunks=512, origin=origin).compute()
    assert (ref[..., 0] > 0).mean() > 0.2  # the window holds tissue
    for chunks in [(97, 333), 1000, 64]:
        np.testing.assert_array_equal(t.concentrations(shape, chunks, origin).compute(), ref)
    # The same window cut out of a bigger one, chunked differently again.
    big = t.concentrations((900, 1000), chunks=256, origin=(2800, 2900)).compute()
    np.testing.assert_array_equal(big[150:750, 120:820], ref)
    # The rendering (with coordinate-hashed noise) too, and through `render`.
    rgb = t.render_he(shape, noise=2.0, chunks=512, origin=origin).compute()
    np.testing.assert_array_equal(
        t.render_he(shape, noise=2.0, chunks=(61, 128), origin=origin), rgb
    )
    conc = t.concentrations(shape, chunks=(200, 100), origin=origin)
    np.testing.assert_array_equal(render(conc, RUIFROK_HE, noise=2.0, seed=3, origin=origin), rgb)


def test_slide_shape_only_selects_a_window():
    np.testing.assert_array_equal(
        synthetic_he((300, 400), seed=1).compute(), synthetic_he((1000, 1000), seed=1)[:300, :400]
    )


@pytest.mark.parametrize("marker", MARKERS)
def test_ihc_same_whatever_the_chunking(marker):
    t = SyntheticTissue(seed=0)
    a = dask.compute(*t.render_ihc((400, 500), marker, chunks=512))
    b = dask.compute(*t.render_ihc((400, 500), marker, chunks=(111, 90)))
    c = dask.compute(*t.render_ihc((600, 600), marker, chunks=256))
    for x, y, z in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z[:400, :500])


def test_pair_is_pixel_aligned_and_inverts_to_the_ground_truth():
    shape, scale_b, io = (256, 384), (1.2, 0.8), 240.0
    a, b = synthetic_pair(shape, seed=5, scale_b=scale_b, chunks=100)
    a, b = a.compute(), b.compute()
    truth = SyntheticTissue(5).concentrations(shape).compute().astype(np.float64)
    assert truth[..., 0].max() > 1.0 and truth[..., 1].std() > 0.05  # nuclei and stroma
    assert np.abs(a.astype(int) - b).max() > 30  # two different stainings
    for rgb, matrix, scale in [(a, RUIFROK_HE, (1.0, 1.0)), (b, MACENKO_REFERENCE_HE, scale_b)]:
        conc, bound = _unmix(rgb, matrix, io)
        err = np.abs(conc / np.asarray(scale) - truth)
        assert np.all(err <= bound / np.asarray(scale))


def test_glass_is_white_and_the_default_slide_has_tissue_and_glass():
    t = SyntheticTissue(seed=0)
    glass, tissue = [], []
    # 8 × 8 small windows spread over the default 20,000² slide.
    for oy in range(500, 20000, 2500):
        for ox in range(500, 20000, 2500):
            c = t.concentrations((16, 16), origin=(oy, ox)).compute()
            (tissue if c.any() else glass).append((oy, ox))
    assert 0.15 <= len(tissue) / 64 <= 0.85
    # The square near the origin always holds tissue.
    assert t.tissue_mask((64, 64)).all().compute()
    oy, ox = glass[0]
    assert not t.tissue_mask((16, 16), origin=(oy, ox)).any().compute()
    for io in [240, (250, 245, 238)]:
        rgb = t.render_he((16, 16), io=io, origin=(oy, ox)).compute()
        np.testing.assert_array_equal(rgb, np.broadcast_to(np.asarray(io, np.uint8), rgb.shape))
    ihc, mask = dask.compute(*t.render_ihc((16, 16), "CD3", io=io, origin=(oy, ox)))
    assert (ihc == np.asarray(io, np.uint8)).all() and not mask.any()


def test_seed_fixes_the_tissue():
    a = SyntheticTissue(7).render_he((128, 128), origin=(100, 100)).compute()
    b = SyntheticTissue(7).render_he((128, 128), origin=(100, 100)).compute()
    c = SyntheticTissue(8).render_he((128, 128), origin=(100, 100)).compute()
    np.testing.assert_array_equal(a, b)
    assert (a != c).any(axis=-1).mean() > 0.5


@pytest.mark.parametrize("marker", MARKERS)
def test_ihc_mask_marks_the_dab_stained_cells(marker):
    rgb, mask = synthetic_ihc((384, 384), seed=0, marker=marker)
    rgb, mask = dask.compute(rgb, mask)
    conc, mask2 = dask.compute(*SyntheticTissue(0).ihc_concentrations((384, 384), marker))
    np.testing.assert_array_equal(mask, mask2)
    assert mask.sum() > 200
    assert np.all(conc[..., 1][mask] > 0)  # every masked pixel carries DAB
    est, bound = _unmix(rgb, RUIFROK_HDAB, 240.0)
    assert np.all(np.abs(est - conc) <= bound)
    # Deconvolution finds DAB in the masked cells and nowhere else: pixels whose
    # DAB exceeds the rounding bound lie in the mask or its 2-pixel rim.
    dab_positive = est[..., 1] > bound[..., 1]
    assert dab_positive[mask].mean() > 0.95
    near_mask = ndimage.binary_dilation(mask, iterations=2)
    assert not (dab_positive & ~near_mask).any()
    # The marker selects a population: hematoxylin-stained nuclei stay unmarked.
    assert ((est[..., 0] > 0.8) & ~near_mask).sum() > 100


@pytest.mark.parametrize("marker", MARKERS)
@pytest.mark.parametrize("mpp", [0.5, 1.0])
def test_the_published_dab_protocol_finds_the_positive_cells(marker, mpp):
    # A DAB threshold made for real scans (rgb2hed DAB > 0.07, Kataria et al.)
    # must find the synthetic positive cells as it finds real ones, or a model
    # trained on these pairs can never pass a DAB-mask test on them.
    from napari_stainfuser.metrics.ihc import mask_metrics
    from napari_stainfuser.training.coarse_mask import reference_mask

    t = SyntheticTissue(3, mpp)
    for origin in [(0, 0), (2048, 2048), (1024, 3072)]:
        rgb, mask = dask.compute(*t.render_ihc((768, 768), marker, origin=origin))
        if mask.sum() > 1000:
            break
    assert mask.sum() > 1000
    dice = mask_metrics(reference_mask(rgb), mask)["dice"]
    print(f"{marker} at {mpp} µm/px: published-protocol DAB mask Dice {dice:.3f}")
    assert dice > 0.8


def _area_average(img, f):
    h, w = img.shape[0] // f, img.shape[1] // f
    return img[: h * f, : w * f].astype(np.float64).reshape(h, f, w, f, -1).mean(axis=(1, 3))


def _jpeg_error(ref, where, quality):
    buf = BytesIO()
    Image.fromarray(np.clip(ref + 0.5, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return np.abs(np.asarray(Image.open(buf)).astype(np.float64) - ref)[where].mean()


@pytest.mark.parametrize("seed, origin", [(0, (0, 0)), (2, (4096, 4096))])
def test_pyramid_levels_agree_with_the_area_averaged_level_0(seed, origin):
    # A scanner's levels are area averages of level 0, stored as JPEG. Each
    # synthetic level must be as close to the area average of its own level 0
    # as a quality-90 JPEG copy of that average is (scanners store 70-80; the
    # CMU slide says Q=30), over the tissue. Seed 0 at the origin has a dense
    # lymphocyte aggregate, seed 2 a gland in fibrous stroma with glass.
    from napari_stainfuser._napari.sample_data import LAB_A

    levels = SyntheticTissue(seed, 0.5).pyramid_he(
        (2048, 2048), min_size=100, origin=origin, **LAB_A
    )
    assert [lv.shape[0] for lv in levels] == [2048, 1024, 512, 256, 128, 64]
    level0 = levels[0].compute()
    for k in range(1, len(levels)):
        ref = _area_average(level0, 2**k)
        tissue = (ref < 235).any(axis=-1)
        assert tissue.mean() > 0.1
        err = np.abs(levels[k].compute() - ref)[tissue].mean()
        anchor = _jpeg_error(ref, tissue, 90)
        print(
            f"seed {seed} level {k}: mean |difference| {err:.2f} grey levels, JPEG Q90 {anchor:.2f}"
        )
        assert err < anchor, f"level {k}"


def test_coarse_levels_compute_only_the_pixels_under_a_chunk():
    levels = SyntheticTissue(0).pyramid_he((8192, 8192), min_size=512, chunks=256)
    assert len(levels) == 5  # 0.5 ... 8 µm/px; levels 3 and 4 are area averages
    block = levels[4].blocks[0, 0]  # 256² px at 8 µm/px: 1024² px of level 2
    keys = block.__dask_graph__().cull(set(dask.core.flatten(block.__dask_keys__()))).keys()
    assert sum(1 for key in keys if key[0] == levels[2].name) == 16
    assert not any(key[0] in (levels[0].name, levels[1].name) for key in keys)
    np.testing.assert_array_equal(block.compute(), levels[4][:256, :256].compute())


def test_coarse_levels_render_the_nuclei_once(monkeypatch):
    # napari and the live engine read the coarse levels separately; both are
    # made from the 2 µm/px level's blocks, which must be rendered only once.
    import napari_stainfuser.slide.synthetic as synthetic

    calls = []
    real = synthetic.he_block

    def counting(model, *window, **kw):
        calls.append((model.mpp, window))
        return real(model, *window, **kw)

    monkeypatch.setattr(synthetic, "he_block", counting)
    levels = SyntheticTissue(0).pyramid_he((4096, 4096), min_size=256, chunks=256)
    first = levels[4].compute()
    assert {mpp for mpp, _ in calls} == {2.0} and len(calls) == 16
    level3 = levels[3].compute(scheduler="sync")
    level3[:] = 0  # a caller's copy: it must not change what the next caller gets
    np.testing.assert_array_equal(levels[4].compute(), first)
    assert len(calls) == 16
    np.testing.assert_array_equal(levels[3].compute(), synthetic.downsample2x(levels[2]).compute())


def test_a_jobs_overview_of_a_synthetic_pyramid_reads_no_finer_level(monkeypatch):
    # Its levels down to 2 µm/px are stored, not built: the overview must come
    # from them, not from rendering level 0 (65 s for the napari sample).
    import napari_stainfuser.slide.synthetic as synthetic
    from napari_stainfuser.job.source import open_source

    calls = []
    real = synthetic.he_block
    monkeypatch.setattr(
        synthetic,
        "he_block",
        lambda model, *w, **kw: calls.append(model.mpp) or real(model, *w, **kw),
    )
    levels = SyntheticTissue(0).pyramid_he((8192, 8192), min_size=512)
    slide = type("Slide", (), {"levels": levels, "mpp": 0.5, "path": None})()
    source = open_source(slide)
    assert source.native_levels == 3
    image, idx = source.overview(600)
    assert idx == 4 and set(calls) == {2.0}
    np.testing.assert_array_equal(image, levels[4].compute())


def test_numpy_beer_lambert_matches_the_formula():
    conc = np.random.default_rng(0).uniform(0, 2, size=(5, 7, 2)).astype(np.float32)
    rgb = concentrations_to_rgb(conc, RUIFROK_HE, scale=(1.5, 0.5), io=230)
    expected = 230 * np.exp(-(conc.astype(np.float64) * [1.5, 0.5]) @ RUIFROK_HE)
    assert np.abs(rgb - expected).max() <= 0.5 + 1e-3


def test_unknown_marker_lists_the_valid_ones():
    with pytest.raises(ParameterError, match="CD20.*CD3, CK8/18, Ki67"):
        synthetic_ihc((64, 64), marker="CD20")
    # Case does not matter.
    assert synthetic_ihc((8, 8), marker="ki67")[0].shape == (8, 8, 3)


@pytest.mark.parametrize(
    "call",
    [
        lambda: synthetic_he((0, 5)),
        lambda: synthetic_he((5,)),
        lambda: synthetic_he((64, 64), chunks=0),
        lambda: synthetic_he((64, 64), io=300),
        lambda: synthetic_he((64, 64), io=(240, 240)),
        lambda: synthetic_he((64, 64), scale=-1),
        lambda: synthetic_he((64, 64), scale=(1, 1, 1)),
        lambda: synthetic_he((64, 64), noise=-1),
        lambda: synthetic_he((64, 64), mpp=0),
        lambda: synthetic_he((64, 64), stain_matrix="hedab"),
        lambda: SyntheticTissue(seed="a"),
        lambda: render(np.zeros((4, 4, 3), np.float32), RUIFROK_HE),
        lambda: synthetic_pair((64, 64), matrix_b="nope"),
    ],
)
def test_bad_parameters_raise_parameter_error(call):
    with pytest.raises(ParameterError):
        call()
