"""Seam score: definition checked against a direct loop, and its two limits."""

import numpy as np
import pytest

from napari_stainfuser.errors import ParameterError
from napari_stainfuser.metrics.seams import grid_seams, seam_score


def _loop_score(img, sy, sx):
    """The definition written out pixel by pixel."""
    img = img.astype(float)
    h, w = img.shape[:2]
    b_y = [abs(img[y, x] - img[y - 1, x]).mean() for y in sy for x in range(w)]
    b_x = [abs(img[y, x] - img[y, x - 1]).mean() for x in sx for y in range(h)]
    i_y = [
        abs(img[y, x] - img[y - 1, x]).mean() for y in range(1, h) if y not in sy for x in range(w)
    ]
    i_x = [
        abs(img[y, x] - img[y, x - 1]).mean() for x in range(1, w) if x not in sx for y in range(h)
    ]
    border = (sum(b_y) + sum(b_x)) / (len(b_y) + len(b_x))
    inside = (np.mean(i_y) * len(b_y) + np.mean(i_x) * len(b_x)) / (len(b_y) + len(b_x))
    return border / inside


def test_matches_the_definition_written_as_a_loop():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    img[:, 10:] = np.clip(img[:, 10:].astype(int) + 40, 0, 255)  # a seam at column 10
    for sy, sx in [((7,), (10, 20)), ((), (10,)), ((5, 12, 19), ())]:
        assert seam_score(img, sy, sx) == pytest.approx(_loop_score(img, sy, sx), rel=1e-12)


def test_invisible_borders_score_one_and_visible_ones_more():
    rng = np.random.default_rng(1)
    img = rng.normal(128, 20, (600, 600, 3))
    sy = sx = grid_seams(600, 128, 32)
    # Stationary texture: 1.0 up to sampling error (about 1/sqrt(n) ≈ 0.5 % here).
    assert seam_score(np.clip(img, 0, 255).astype(np.uint8), sy, sx) == pytest.approx(1.0, abs=0.03)
    # Each tile gets its own colour offset: the borders show.
    tiled = img.copy()
    edges = [0, *sy, 600]
    for i in range(len(edges) - 1):
        for j in range(len(edges) - 1):
            tiled[edges[i] : edges[i + 1], edges[j] : edges[j + 1]] += rng.normal(0, 15)
    assert seam_score(np.clip(tiled, 0, 255).astype(np.uint8), sy, sx) > 1.2


def test_mask_restricts_the_measurement():
    rng = np.random.default_rng(2)
    img = rng.integers(100, 140, (64, 64, 3), dtype=np.uint8)
    img[:, 32:, :] = np.clip(img[:, 32:].astype(int) + 60, 0, 255)
    mask = np.zeros((64, 64), bool)
    mask[:, 40:] = True  # the seam at 32 lies outside: nothing to measure
    with pytest.raises(ParameterError, match="mask"):
        seam_score(img, (), (32,), mask=mask)
    mask[:, 20:] = True
    assert seam_score(img, (), (32,), mask=mask) > 2


def test_grid_seams_lie_in_the_middle_of_overlap_bands():
    # Tiles start at 0, 448 and 896 (three tiles reach 1000).
    assert grid_seams(1000, 512, 64) == [448 + 32, 896 + 32]
    assert grid_seams(1000, 256, 0) == [256, 512, 768]
    # Tiles cut at half resolution: the first border at working px 192 + 32 -> output px 448.
    assert grid_seams(1024, 256, 64, factor=0.5)[0] == 448


def test_bad_input():
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ParameterError, match="seams"):
        seam_score(img, (10,), ())
    with pytest.raises(ParameterError, match="seams"):
        seam_score(img, (), ())
    with pytest.raises(ParameterError, match="flat"):
        seam_score(img, (5,), ())


# -- the score of real tiled runs ------------------------------------------------------

DATA = __import__("pathlib").Path(__file__).parents[1] / "data"
TARGET = DATA / "he" / "torchstain-target.png"
WEIGHTS = DATA / "stainfuser-reference" / "checkpoint.safetensors"


@pytest.fixture(scope="module")
def inputs():
    from napari_stainfuser.slide import open_slide
    from napari_stainfuser.slide.synthetic import synthetic_he

    cmu = open_slide(DATA / "CMU-1-Small-Region.svs").levels[0][1792:2176, 768:1280].compute()
    return {"cmu": cmu, "synthetic": synthetic_he((384, 512), seed=9).compute()}


def _score(image, tile, overlap, mask=None):
    from napari_stainfuser.metrics.seams import grid_lines

    (sy, ry), (sx, rx) = (
        grid_lines(image.shape[0], tile, overlap),
        grid_lines(image.shape[1], tile, overlap),
    )
    return seam_score(image, sy, sx, mask=mask, inside_y=ry, inside_x=rx)


def _run(image, tmp_path, name, **kw):
    import zarr

    from napari_stainfuser.batch import normalize_slide

    out = normalize_slide(image, tmp_path / f"{name}.ome.zarr", mpp=0.5, **kw)
    return np.asarray(zarr.open_group(str(out), mode="r")["0"][:]).transpose(1, 2, 0)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["macenko", "reinhard", "ruifrok", "vahadane"])
def test_classical_stainers_leave_no_seams_on_the_whole_cmu_slide_and_a_synthetic_one(
    method, tmp_path
):
    # Whole images: with ~10⁵ samples on the border lines the score's own
    # sampling error is about 1 %, well inside the 5 % allowed.
    from napari_stainfuser.slide import open_slide
    from napari_stainfuser.slide.synthetic import synthetic_he
    from napari_stainfuser.tiling.tissue import detect_tissue

    slide_path = DATA / "CMU-1-Small-Region.svs"
    slide = open_slide(slide_path)
    cmu = slide.levels[0].compute()
    mask = detect_tissue(slide).region(cmu.shape[:2], 0, cmu.shape[0], 0, cmu.shape[1])
    syn = synthetic_he((1536, 1536), seed=9).compute()
    opts = dict(method=method, target=TARGET, tile=128, lut=False, max_pixels=20000)
    out_cmu = _run(slide_path, tmp_path, "cmu", **opts)
    out_syn = _run(syn, tmp_path, "syn", **opts)
    assert (out_cmu[mask] != cmu[mask]).any(-1).mean() > 0.5
    s_cmu, s_syn = _score(out_cmu, 128, 0, mask), _score(out_syn, 128, 0)
    print(f"seam score {method}: CMU {s_cmu:.3f} (input {_score(cmu, 128, 0, mask):.3f}), "
          f"synthetic {s_syn:.3f} (input {_score(syn, 128, 0):.3f})")  # fmt: skip
    assert s_cmu <= 1.05 and s_syn <= 1.05


@pytest.mark.slow
@pytest.mark.parametrize("which", ["cmu", "synthetic"])
def test_diffusion_seams_blending_and_the_noise_field(which, inputs, tmp_path):
    from napari_stainfuser.stainers import make_stainer

    image = inputs[which]
    sf = make_stainer("stainfuser", TARGET, weights=WEIGHTS, steps=2)
    kw = dict(stainer=sf, tile=128, overlap=32, seed=0, tissue=False)
    scores = {}
    for window in ("cosine", "none"):
        for noise in ("field", "per_tile"):
            out = _run(image, tmp_path, f"{window}-{noise}", window=window, noise=noise, **kw)
            scores[window, noise] = _score(out, 128, 32)
    print(
        f"seam scores, tiny StainFuser on {which}: "
        + ", ".join(f"{k}={v:.3f}" for k, v in scores.items())
    )
    assert scores["cosine", "field"] <= 1.05
    # Without blending, tiles with their own noise show hard seams; one field
    # removes most of that.
    assert scores["none", "field"] < scores["none", "per_tile"]
    # Blending tiles that disagree averages two textures into a smoother band
    # (score below one): a seam too. One field keeps the band like tissue.
    assert abs(np.log(scores["cosine", "field"])) < abs(np.log(scores["cosine", "per_tile"]))
