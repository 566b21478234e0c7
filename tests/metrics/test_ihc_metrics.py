"""Virtual-IHC metrics against scikit-image, numpy, brute force and hand counts."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_stainfuser.errors import ParameterError
from napari_stainfuser.metrics.ihc import (
    COLUMNS,
    baseline_metrics,
    dice,
    evaluate_rows,
    format_table,
    hd95,
    iou,
    mask_metrics,
    tile_metrics,
    write_metrics_csv,
)
from napari_stainfuser.training.coarse_mask import CoarseMaskParams, coarse_mask, dab_density
from napari_stainfuser.training.tileio import read_rgb

FHL2 = Path(__file__).parents[1] / "data" / "ihc" / "skimage-ihc-fhl2.png"


@pytest.fixture(scope="module")
def pair():
    """A real IHC crop and a 'virtual' one: blurred, noisy and slightly shifted in colour."""
    real = read_rgb(FHL2)[96:224, 160:288]
    rng = np.random.default_rng(0)
    virtual = ndimage.gaussian_filter(real.astype(np.float64), (1.0, 1.0, 0))
    virtual = virtual * [1.0, 0.97, 0.95] + rng.normal(0, 6, real.shape)
    return real, np.clip(np.round(virtual), 0, 255).astype(np.uint8)


def blobs(shape, seed, level=0.0) -> np.ndarray:
    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 3)
    return field > level * field.std()


def brute_hd95(a, b) -> float:
    """Boundary by explicit 4-neighbour test (outside the image is background), all-pairs distances."""

    def edge(m):
        p = np.pad(m, 1, constant_values=False)
        inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        return np.argwhere(m & ~inner)

    d = cdist(edge(a), edge(b))
    return float(np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95))


def test_psnr_ssim_are_skimages(pair):
    real, virtual = pair
    m = tile_metrics(real, virtual)
    assert list(m) == list(COLUMNS[1:])
    assert m["psnr"] == peak_signal_noise_ratio(real, virtual, data_range=255)
    assert m["ssim"] == structural_similarity(real, virtual, channel_axis=-1, data_range=255)
    same = tile_metrics(real, real)
    assert same["psnr"] == math.inf and same["ssim"] == pytest.approx(1.0)


def test_dice_iou_by_hand():
    a = np.array([[1, 1, 0, 0], [0, 1, 1, 0]], bool)  # 4 pixels
    b = np.array([[1, 0, 0, 0], [0, 1, 1, 1]], bool)  # 4 pixels, 3 shared, union 5
    assert dice(a, b) == pytest.approx(2 * 3 / (4 + 4))
    assert iou(a, b) == pytest.approx(3 / 5)
    assert mask_metrics(a, b)["dice"] == dice(a, b)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hd95_matches_brute_force(seed):
    a, b = blobs((48, 56), seed, 0.3), blobs((48, 56), seed + 10, 0.3)
    assert a.any() and b.any()
    assert hd95(a, b) == pytest.approx(brute_hd95(a, b), abs=1e-9)
    assert hd95(a, b) == pytest.approx(hd95(b, a), abs=1e-12)


def test_dab_metrics_are_those_of_the_coarse_masks(pair):
    real, virtual = pair
    params = CoarseMaskParams(dab_threshold=0.05, closing_radius=1, min_size=20)
    m = tile_metrics(real, virtual, mask_params=params)
    kw = {k: v for k, v in params.describe().items() if k != "density"}
    mr, mv = coarse_mask(real, **kw), coarse_mask(virtual, **kw)
    assert m["dab_dice"] == pytest.approx(2 * np.sum(mr & mv) / (mr.sum() + mv.sum()))
    assert m["dab_iou"] == pytest.approx(np.sum(mr & mv) / np.sum(mr | mv))
    assert m["dab_hd95"] == pytest.approx(brute_hd95(mv, mr), abs=1e-9)
    assert tile_metrics(real, virtual)["dab_dice"] != m["dab_dice"]  # the parameters are used


def test_pearson_matches_numpy_over_tissue(pair):
    real, virtual = pair
    dr, dv = dab_density(real).astype(np.float64), dab_density(virtual).astype(np.float64)
    tissue = ~np.all(real >= 220, axis=-1)  # glass: every channel at least 220
    assert 0 < tissue.mean() < 1  # the crop has glass, so the rule matters
    expected = np.corrcoef(dr[tissue], dv[tissue])[0, 1]
    assert tile_metrics(real, virtual)["dab_pearson"] == pytest.approx(expected, abs=1e-9)
    given = np.zeros(real.shape[:2], bool)
    given[:64] = True
    expected = np.corrcoef(dr[given], dv[given])[0, 1]
    m = tile_metrics(real, virtual, tissue=given)
    assert m["dab_pearson"] == pytest.approx(expected, abs=1e-9)


def test_cell_masks(pair):
    real, virtual = pair
    true, pred = blobs(real.shape[:2], 5), blobs(real.shape[:2], 6)
    m = tile_metrics(real, virtual, predicted_mask=pred, true_mask=true.astype(np.uint8) * 255)
    assert m["mask_dice"] == pytest.approx(2 * np.sum(pred & true) / (pred.sum() + true.sum()))
    assert m["mask_iou"] == pytest.approx(np.sum(pred & true) / np.sum(pred | true))
    only_one = tile_metrics(real, virtual, predicted_mask=pred)
    assert math.isnan(only_one["mask_dice"]) and math.isnan(only_one["mask_iou"])


def test_edge_cases():
    empty, full = np.zeros((20, 20), bool), np.ones((20, 20), bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert hd95(empty, empty) == 0.0
    assert math.isnan(hd95(empty, full)) and math.isnan(hd95(full, empty))
    assert dice(empty, full) == 0.0
    # A white virtual tile has no DAB at all: constant density, so no correlation.
    rng = np.random.default_rng(1)
    real = rng.integers(0, 200, (32, 32, 3), dtype=np.uint8)
    white = np.full_like(real, 255)
    m = tile_metrics(real, white)
    assert math.isnan(m["dab_pearson"])
    assert m["dab_dice"] == dice(coarse_mask(real), np.zeros((32, 32), bool))
    both_white = tile_metrics(white, white)
    assert both_white["dab_dice"] == 1.0 and both_white["dab_hd95"] == 0.0
    assert math.isnan(both_white["dab_pearson"])  # no tissue pixels


def test_mean_row_is_nanmean():
    rng = np.random.default_rng(2)
    rows = [{"name": f"t{i}", **{k: float(rng.random()) for k in COLUMNS[1:]}} for i in range(4)]
    rows[1]["dab_hd95"] = math.nan
    for r in rows:
        r["mask_dice"] = math.nan
    out = evaluate_rows(rows)
    assert out[:-1] == rows and out[-1]["name"] == "mean"
    for k in COLUMNS[1:]:
        col = np.array([r[k] for r in rows])
        if np.isnan(col).all():
            assert math.isnan(out[-1][k])
        else:
            assert out[-1][k] == pytest.approx(np.nanmean(col))


def test_csv_round_trip(tmp_path, pair):
    real, virtual = pair
    rows = evaluate_rows(
        [{"name": "a", **tile_metrics(real, virtual)}, {"name": "b", **tile_metrics(real, real)}]
    )
    path = tmp_path / "sub" / "metrics.csv"
    write_metrics_csv(path, rows)
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        body = list(reader)
    expected = "name psnr ssim dab_dice dab_iou dab_hd95 dab_pearson mask_dice mask_iou"
    assert header == expected.split()
    assert [line[0] for line in body] == ["a", "b", "mean"]
    for line, row in zip(body, rows, strict=True):
        for k, text in zip(header[1:], line[1:], strict=True):
            v = float(text)
            assert (math.isnan(v) and math.isnan(row[k])) or v == row[k]


def test_baselines():
    true = blobs((64, 64), 7, 0.5)
    p = true.mean()
    assert 0 < p < 1
    b = baseline_metrics(true)
    assert b["all-negative"]["mask_dice"] == 0.0 and b["all-negative"]["mask_iou"] == 0.0
    assert math.isnan(b["all-negative"]["mask_hd95"])
    assert b["all-positive"]["mask_dice"] == pytest.approx(2 * p / (1 + p))
    assert b["all-positive"]["mask_iou"] == pytest.approx(p)
    full = np.ones_like(true)
    assert b["all-positive"]["mask_hd95"] == pytest.approx(brute_hd95(full, true), abs=1e-9)
    assert set(baseline_metrics(true, prefix="dab")["all-positive"]) == {
        "dab_dice",
        "dab_iou",
        "dab_hd95",
    }


def test_format_table_shows_mean_and_baselines(pair):
    real, virtual = pair
    rows = [{"name": "a", **tile_metrics(real, virtual)}]
    b = baseline_metrics(coarse_mask(real), prefix="dab")
    text = format_table(evaluate_rows(rows), b)
    lines = text.splitlines()
    assert len(lines) == 4
    assert all(k in lines[0] for k in COLUMNS[1:])
    assert lines[1].startswith("mean of 1") and f"{rows[0]['ssim']:.4f}" in lines[1]
    assert lines[2].startswith("all-negative") and lines[3].startswith("all-positive")
    assert f"{b['all-positive']['dab_dice']:.4f}" in lines[3]
    alone = format_table(rows).splitlines()  # no mean row given: it is computed
    assert [line.split() for line in alone] == [line.split() for line in lines[:2]]


def test_bad_inputs_name_the_parameter(pair):
    real, virtual = pair
    cases = [
        (lambda: tile_metrics(real, virtual[:-1]), "virtual_ihc"),
        (lambda: tile_metrics(real.astype(np.float32), virtual), "real_ihc"),
        (lambda: tile_metrics(real[:5, :5], virtual[:5, :5]), "real_ihc"),
        (lambda: tile_metrics(real, virtual, tissue=np.ones((3, 3), bool)), "tissue"),
        (lambda: tile_metrics(real, virtual, mask_params={"dab_threshold": 0.1}), "mask_params"),
        (lambda: mask_metrics(np.ones((4, 4), bool), np.ones((4, 5), bool)), "predicted_mask"),
        (lambda: mask_metrics(np.ones((4, 4)), np.ones((4, 4), bool)), "predicted_mask"),
    ]
    for call, name in cases:
        with pytest.raises(ParameterError, match=name) as info:
            call()
        assert "\n" not in str(info.value)
