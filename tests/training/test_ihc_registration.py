"""Registration of serial H&E/IHC sections and ``make-ihc-pairs``, on a real pair.

``tests/data/he-ihc-serial``: a rat kidney, consecutive sections stained H&E
(1164×787) and pan-cytokeratin IHC (1123×724), downscaled to 5 %, not
aligned: the IHC section is smaller and unevenly so (about 0.97 across and
0.91 down) and turned by about 1°.

Numbers measured when these tests were written (quoted in the docs):

- hematoxylin NCC over the tissue: 0.723 registered (affine), 0.498 centred;
- nine hand-picked landmarks: mean error 2.89 px (max 6.3) registered,
  21.5 px (max 33.9) centred; the best affine fit to the landmarks
  themselves leaves 2.89 px, the best similarity 7.8 px;
- the same pair with the IHC turned a further 123°: 2.9 px;
- the H&E warped by a known 37° rotation and shift: recovered to 0.1 px;
- H&E against noise: 0.08, against a blank image: 0.00, against an unrelated
  H&E image (torchstain-source.png): 0.33 (all refused, below 0.5);
- 64 px tiles: median tile NCC 0.18 registered, 0.05 centred.
"""

import argparse
import csv
import json
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from skimage.transform import AffineTransform, SimilarityTransform, warp

from napari_stainfuser.errors import ParameterError
from napari_stainfuser.training.ihc_pairs import (
    IHC_PAIRS_LAYOUT,
    MANIFEST_FIELDS,
    MIN_LOCAL_SCORE,
    make_ihc_pairs,
)
from napari_stainfuser.training.register import register_sections, register_slides, tissue
from napari_stainfuser.training.tileio import read_rgb

DATA = Path(__file__).parents[1] / "data"
HE_PATH = DATA / "he-ihc-serial" / "rat-kidney-HE.jpg"
IHC_PATH = DATA / "he-ihc-serial" / "rat-kidney-PanCK.jpg"

# Landmarks picked by eye on 4× crops of the two images, (x, y) pixels:
# centres of vessel lumens and of small holes in the parenchyma.
LANDMARKS = [
    # (H&E x, y), (IHC x, y)
    ((791.0, 197.0), (776.0, 196.0)),  # round hole upper right of the cortex
    ((241.0, 278.0), (243.0, 260.0)),  # lumen of the hilar artery (upper)
    ((125.0, 333.5), (123.0, 314.0)),  # lumen of the hilar vessel (left)
    ((441.0, 188.0), (435.0, 180.0)),  # forked hole, upper cortex
    ((964.0, 375.0), (937.0, 366.0)),  # small white spot, right cortex
    ((586.0, 154.0), (575.0, 155.0)),  # round hole, top cortex
    ((944.5, 478.0), (915.0, 455.0)),  # slit, lower right cortex
    ((694.0, 576.0), (673.0, 537.0)),  # round hole, lower cortex
    ((690.0, 605.0), (668.0, 564.0)),  # hole below it
]
LM_HE = np.array([he for he, _ in LANDMARKS])
LM_IHC = np.array([ihc for _, ihc in LANDMARKS])


@pytest.fixture(scope="module")
def he():
    return read_rgb(HE_PATH)


@pytest.fixture(scope="module")
def ihc():
    return read_rgb(IHC_PATH)


@pytest.fixture(scope="module")
def registration(he, ihc):
    return register_sections(he, ihc)


def landmark_error(transform, he_points=LM_HE, ihc_points=LM_IHC) -> np.ndarray:
    """Distance (px) from where ``transform`` sends each H&E landmark to its IHC match."""
    return np.hypot(*(transform(he_points) - ihc_points).T)


def test_real_pair_is_registered_far_better_than_centred(registration):
    reg = registration
    after = landmark_error(reg.transform)
    before = landmark_error(reg.unregistered().transform)
    print(
        f"\nNCC registered {reg.score:.3f}, centred {reg.unregistered_score:.3f}; landmark error "
        f"registered {after.mean():.2f} px (max {after.max():.2f}), "
        f"centred {before.mean():.2f} px (max {before.max():.2f}); "
        f"rotation {reg.rotation_deg:.2f}°, scale {reg.transform.scale}"
    )
    # Measured: NCC 0.723 against 0.498; landmarks 2.89 px (max 6.3) against 21.5 (max 33.9).
    assert reg.score > reg.unregistered_score + 0.1
    # Hand-picked landmarks are good to a pixel or two, so the fit may not do better than
    # the best affine map through them (2.9 px) by much, but it must come close.
    assert after.mean() < 5.0
    assert after.max() < 10.0
    assert before.mean() > 3 * after.mean()


def test_landmarks_need_an_affine_map():
    # The module docstring's reason for the affine default: the sections shrank unevenly.
    affine = AffineTransform.from_estimate(LM_HE, LM_IHC)
    similarity = SimilarityTransform.from_estimate(LM_HE, LM_IHC)
    a, s = landmark_error(affine).mean(), landmark_error(similarity).mean()
    print(f"\nleast-squares residual: affine {a:.2f} px, similarity {s:.2f} px")
    assert a < s / 2


def test_real_pair_is_registered_at_any_rotation(he, ihc):
    # The IHC turned by a further 123° on a larger canvas: the fit must find the turn
    # from the full-circle search and land on the same landmarks.
    h, w = ihc.shape[:2]
    side = int(np.hypot(h, w)) + 10
    turn = (
        SimilarityTransform(translation=(-w / 2, -h / 2))
        + SimilarityTransform(rotation=np.radians(123))
        + SimilarityTransform(translation=(side / 2, side / 2))
    )
    turned = warp(ihc, turn.inverse, output_shape=(side, side), cval=1.0)
    turned = np.rint(turned * 255).astype(np.uint8)
    reg = register_sections(he, turned)
    err = landmark_error(reg.transform, LM_HE, turn(LM_IHC))
    print(f"\nturned 123°: rotation {reg.rotation_deg:.2f}°, landmark error {err.mean():.2f} px")
    assert err.mean() < 5.0
    assert abs(reg.rotation_deg - 124.0) < 3.0  # 123° plus the pair's own ~1°


def test_known_rigid_motion_is_recovered(he):
    # A fake "IHC": the H&E itself turned 37° about its centre and shifted (60, -35) px
    # on a larger canvas, so the true map is known exactly.
    h, w = he.shape[:2]
    truth = (
        SimilarityTransform(translation=(-w / 2, -h / 2))
        + SimilarityTransform(rotation=np.radians(37.0))
        + SimilarityTransform(translation=(w / 2 + 160, h / 2 + 115))
    )
    fake = warp(he, truth.inverse, output_shape=(h + 300, w + 200), cval=1.0)
    fake = np.rint(fake * 255).astype(np.uint8)
    reg = register_sections(he, fake)
    ys, xs = np.nonzero(tissue(he)[::16, ::16])
    points = np.column_stack([xs, ys]) * 16.0
    err = np.hypot(*(reg.transform(points) - truth(points)).T)
    print(f"\nrecovered rotation {reg.rotation_deg:.3f}° (true 37), error max {err.max():.3f} px")
    assert abs(reg.rotation_deg - 37.0) < 0.5
    assert err.max() < 1.0
    assert reg.score > 0.95


@pytest.mark.parametrize("kind", ["noise", "blank"])
def test_unrelated_images_cannot_be_registered(he, kind):
    rng = np.random.default_rng(0)
    other = (
        rng.integers(0, 256, (724, 1123, 3), dtype=np.uint8)
        if kind == "noise"
        else np.full((724, 1123, 3), 245, np.uint8)
    )
    with pytest.raises(
        ParameterError, match=r"cannot be registered: hematoxylin correlation -?\d\.\d\d"
    ) as e:
        register_sections(he, other, names=("HE.jpg", f"{kind}.png"))
    assert str(e.value).startswith(f"HE.jpg and {kind}.png cannot be registered")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("section", [HE_PATH, IHC_PATH])
def test_unrelated_tissue_cannot_be_registered(section):
    # A real H&E image of other tissue: it has hematoxylin everywhere, so an affine fit
    # finds some place where it correlates a little (measured 0.33 and 0.26).
    other = DATA / "he" / "torchstain-source.png"
    with pytest.raises(ParameterError, match="torchstain-source.png cannot be registered"):
        register_slides(section, other)


def test_register_slides_names_both_files(tmp_path):
    blank = tmp_path / "IHC-blank.png"
    blank.write_bytes(imagecodecs.png_encode(np.full((300, 400, 3), 240, np.uint8)))
    with pytest.raises(ParameterError, match=r"rat-kidney-HE\.jpg and IHC-blank\.png cannot be"):
        register_slides(HE_PATH, blank)


def _manifest(out):
    with open(out / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _names(folder):
    return {p.stem for p in folder.glob("*.png")}


def test_make_ihc_pairs_on_the_real_pair(tmp_path, registration):
    out = tmp_path / "pairs"
    result = make_ihc_pairs(
        HE_PATH, IHC_PATH, out, marker="PanCK", tile=128, registration=registration
    )
    rows = _manifest(out)
    h, w = 787, 1164
    assert len(rows) == (h // 128) * (w // 128)  # every grid tile, kept or skipped
    assert list(rows[0]) == list(MANIFEST_FIELDS)
    kept = [r for r in rows if r["status"] == "kept"]
    names = {r["name"] for r in kept}
    assert result.kept == len(kept) > 0
    for sub in ("he", "ihc", "mask"):
        assert _names(out / sub) == names  # the files are exactly the kept rows
    background = [r for r in rows if r["reason"] == "background"]
    assert background and all(float(r["tissue"]) < 0.5 for r in background)
    assert all(float(r["tissue"]) >= 0.5 for r in kept)
    assert all(float(r["local_score"]) >= MIN_LOCAL_SCORE for r in kept)

    name = sorted(names)[0]
    he_tile, ihc_tile = read_rgb(out / "he" / f"{name}.png"), read_rgb(out / "ihc" / f"{name}.png")
    assert he_tile.shape == ihc_tile.shape == (128, 128, 3)
    masks = [imagecodecs.imread(p) for p in sorted((out / "mask").glob("*.png"))]
    assert all(m.shape == (128, 128) and m.dtype == np.uint8 for m in masks)
    assert set(np.unique(np.concatenate([m.ravel() for m in masks]))) <= {0, 255}
    assert any(m.any() for m in masks)  # PanCK stains the collecting ducts brown

    # Registration helps tile by tile: on every tissue tile (unselected, so unbiased)
    # and on the kept ones, the registered IHC correlates better than the centred one.
    tissue_rows = [r for r in rows if r["reason"] != "background"]
    local = np.array([float(r["local_score"]) for r in tissue_rows])
    centred = np.array([float(r["unregistered_score"]) for r in tissue_rows])
    print(
        f"\n{len(tissue_rows)} tissue tiles: median NCC registered {np.median(local):.3f}, "
        f"centred {np.median(centred):.3f}; better on {np.mean(local > centred):.0%}"
    )
    assert np.median(local) > np.median(centred) + 0.1
    assert np.mean(local > centred) > 0.75
    kept_local = np.array([float(r["local_score"]) for r in kept])
    kept_centred = np.array([float(r["unregistered_score"]) for r in kept])
    assert kept_local.mean() > kept_centred.mean()

    record = json.loads((out / "registration.json").read_text())
    assert record["marker"] == "PanCK"
    assert record["registration"]["score"] == pytest.approx(registration.score)
    assert record["registration"]["unregistered_score"] < record["registration"]["score"]
    assert record["inputs"]["he"]["path"].endswith("rat-kidney-HE.jpg")
    assert record["parameters"]["tile"] == 128
    assert record["tiles"]["kept"] == len(kept)

    # Viewed when written: tissue white-grey where the two hematoxylins agree, with
    # crisp black lumens; the unregistered one has a magenta rim and doubled lumens.
    overlay = read_rgb(out / "overlay.png")
    assert overlay.shape[1] == 768
    assert (overlay == (0, 255, 0)).all(axis=-1).any()  # kept outlines
    assert read_rgb(out / "overlay-unregistered.png").shape == overlay.shape


def test_rerun_needs_overwrite_and_leaves_no_stale_tiles(tmp_path, registration):
    # Level 1 (built by open_slide, 582×393) also checks the level bookkeeping.
    out = tmp_path / "pairs"
    kw = {"marker": "PanCK", "tile": 64, "level": 1, "registration": registration}
    first = make_ihc_pairs(HE_PATH, IHC_PATH, out, **kw)
    assert {r["level"] for r in _manifest(out)} == {"1"}
    assert len(_manifest(out)) == (393 // 64) * (582 // 64)
    with pytest.raises(ParameterError, match="already holds IHC pairs.*overwrite=True"):
        make_ihc_pairs(HE_PATH, IHC_PATH, out, **kw)
    # A stricter score keeps fewer tiles; the dropped ones' files must go too.
    second = make_ihc_pairs(HE_PATH, IHC_PATH, out, **kw, min_score=0.5, overwrite=True)
    assert 0 < second.kept < first.kept
    kept = {r["name"] for r in _manifest(out) if r["status"] == "kept"}
    for sub in ("he", "ihc", "mask"):
        assert _names(out / sub) == kept


@pytest.mark.parametrize(
    ("marker", "match"),
    [("", "marker must name"), ("CD3/../x", "path separators"), (None, "marker must name")],
)
def test_marker_is_validated(tmp_path, marker, match):
    with pytest.raises(ParameterError, match=match):
        make_ihc_pairs(HE_PATH, IHC_PATH, tmp_path, marker=marker)


def test_mask_params_are_validated(tmp_path):
    with pytest.raises(ParameterError, match="mask_params.*unknown key"):
        make_ihc_pairs(HE_PATH, IHC_PATH, tmp_path, marker="CD3", mask_params={"radius": 2})


def test_layout_text_names_every_file():
    for part in ("he/NAME.png", "ihc/NAME.png", "mask/NAME.png", "manifest.csv", "overlay.png"):
        assert part in IHC_PAIRS_LAYOUT


def test_cli(tmp_path, capsys):
    from napari_stainfuser.cli.make_ihc_pairs import MIN_SCORE_DEFAULT, add_parser

    assert MIN_SCORE_DEFAULT == MIN_LOCAL_SCORE
    parser = argparse.ArgumentParser(prog="stainfuser")
    add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "pairs"
    argv = ["make-ihc-pairs", "--he", str(HE_PATH), "--ihc", str(IHC_PATH), "--marker", "PanCK"]
    args = parser.parse_args([*argv, "--tile", "384", "--no-progress", "-o", str(out)])
    assert (args.level, args.min_tissue, args.min_score) == (0, 0.5, MIN_LOCAL_SCORE)
    assert parser.parse_args([*argv, "-o", str(out)]).tile == 256
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "registration: hematoxylin correlation 0.7" in printed
    assert "(unregistered 0.4" in printed
    kept = sum(r["status"] == "kept" for r in _manifest(out))
    assert f"{kept} tile pairs kept in {out}" in printed
    with pytest.raises(SystemExit):
        parser.parse_args(["make-ihc-pairs", "--he", str(HE_PATH), "-o", str(out)])
