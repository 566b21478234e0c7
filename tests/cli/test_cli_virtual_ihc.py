"""The virtual-IHC commands as a user meets them: stain, train virtual-ihc, evaluate,
make-ihc-pairs; their help, their one-line errors, their outputs."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_cases import run_reporting_imports
from PIL import Image

from napari_stainfuser.diffusion.ihc_networks import build, preset
from napari_stainfuser.diffusion.virtual_ihc import save_checkpoint
from napari_stainfuser.metrics.ihc import COLUMNS
from napari_stainfuser.training.ihc_data import write_synthetic_pairs
from napari_stainfuser.training.tileio import write_png

DATA = Path(__file__).parents[1] / "data"


def _run(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "napari_stainfuser.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _one_line_error(r, *needles):
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-ihc") / "ckpt"
    return save_checkpoint(build(preset("tiny", ["CD3", "CK8/18"], tile=64)), folder)


def test_stain_help_lists_the_samplers_and_outputs():
    r = _run("stain", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "ddim, dpm++" in text and "--samples" in text and "OUT.mask.ome.tif" in text


def test_stain_with_a_marker_the_checkpoint_does_not_know(weights, tmp_path):
    slide = tmp_path / "he.png"
    write_png(slide, np.full((128, 128, 3), 200, np.uint8))
    r = _run(
        "stain", slide, "--weights", weights, "--marker", "PD-L1", "-o", tmp_path / "o.ome.zarr"
    )
    _one_line_error(r, "--marker PD-L1", "known markers: CD3, CK8/18")
    r = _run("stain", slide, "--weights", weights, "--marker", "CD3", "--sampler", "pndm",
             "-o", tmp_path / "o.ome.zarr")  # fmt: skip
    _one_line_error(r, "--sampler", "ddim, dpm++")
    r = _run(
        "stain", slide, "--weights", tmp_path, "--marker", "CD3", "-o", tmp_path / "o.ome.zarr"
    )
    _one_line_error(r, "--weights", "not a virtual-IHC checkpoint")
    assert not (tmp_path / "o.ome.zarr").exists()


def test_a_slide_without_its_resolution_gets_a_one_line_warning(tmp_path):
    # The checkpoint works at 1 µm/px; a PNG does not say its own, so without
    # --mpp it is stained at its pixel size, which the user must hear about.
    weights = save_checkpoint(build(preset("tiny", ["CD3"], tile=64, mpp=1.0)), tmp_path / "ck")
    slide = tmp_path / "he.png"
    write_png(
        slide,
        np.asarray(Image.open(DATA / "he" / "torchstain-source.png").convert("RGB"))[:128, :128],
    )
    common = ["stain", slide, "--weights", weights, "--marker", "CD3", "--steps", "1"]
    r = _run(*common, "-o", tmp_path / "a.ome.zarr")
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "warning" in line]
    assert warned == [
        "stainfuser stain: warning: he.png does not record its µm/px, so it is stained at its "
        "own pixel size, but the method works at 1 µm/px; give the slide's µm/px with --mpp "
        "if they differ"
    ], r.stderr
    r = _run(*common, "--mpp", "1", "-o", tmp_path / "b.ome.zarr")
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--samples", "0"], "--samples: must be in 1..64, got 0"),
        (["--steps", "0"], "--steps: must be in 1..1000, got 0"),
        (["--sampler", "pndm"], "valid: ddim, dpm++"),
        (["--marker", "PD-L1"], "known markers: CD3, CK8/18"),
    ],
)
def test_a_stain_argument_error_comes_before_heavy_imports(weights, flags, named, tmp_path):
    args = ["stain", DATA / "he" / "torchstain-source.png", "--weights", weights,
            "-o", tmp_path / "o.ome.zarr", *flags]  # fmt: skip
    r = run_reporting_imports(args)
    assert named in _one_line_error(r)
    assert r.stdout.strip() == "loaded:", r.stdout  # the checkpoint's JSON, not torch


@pytest.mark.parametrize("command", ["stain", "normalize"])
def test_an_existing_output_is_refused_before_heavy_imports(weights, command, tmp_path):
    out = tmp_path / "o.ome.zarr"
    out.mkdir()
    (out / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    slide = DATA / "he" / "torchstain-source.png"
    method = (
        ["--weights", weights, "--marker", "CD3"]
        if command == "stain"
        else ["--method", "macenko", "--target", DATA / "he" / "torchstain-target.png"]
    )
    r = run_reporting_imports([command, slide, *method, "-o", out])
    assert "already exists (pass --overwrite to replace it)" in _one_line_error(r)
    assert r.stdout.strip() == "loaded:", r.stdout
    assert (out / "zarr.json").is_file()


def test_a_train_argument_error_comes_before_heavy_imports(tmp_path):
    args = ["train", "virtual-ihc", "--pairs", tmp_path, "--marker", "CD3", "--tile", "50",
            "-o", tmp_path / "run"]  # fmt: skip
    r = run_reporting_imports(args)
    assert "--tile 50: must be at least 64" in _one_line_error(r)
    assert r.stdout.strip() == "loaded:", r.stdout


def test_train_with_unmatched_names_lists_them(tmp_path):
    img = np.full((64, 64, 3), 200, np.uint8)
    write_png(tmp_path / "p" / "he" / "a.png", img)
    write_png(tmp_path / "p" / "he" / "b.png", img)
    write_png(tmp_path / "p" / "ihc" / "a.png", img)
    r = _run(
        "train", "virtual-ihc", "--pairs", tmp_path / "p", "--marker", "CD3", "-o", tmp_path / "run"
    )
    _one_line_error(r, "--pairs", "unmatched names", "he/ without ihc/: b")
    assert not (tmp_path / "run").exists()


def test_train_then_evaluate_writes_the_metrics_csv(tmp_path):
    write_synthetic_pairs(tmp_path / "pairs", 4, tile=64, marker="CD3", seed=2)
    r = _run("train", "virtual-ihc", "--pairs", tmp_path / "pairs", "--marker", "CD3", "--steps", 2,
             "--batch-size", 2, "--no-progress", "-o", tmp_path / "run")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "final checkpoint" in r.stdout
    r = _run("evaluate", "--pairs", tmp_path / "pairs", "--weights", tmp_path / "run", "--steps", 2,
             "-o", tmp_path / "m.csv")  # fmt: skip
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "m.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == 5 and rows[-1]["name"] == "mean"
    assert "all-negative" in r.stdout and "all-positive" in r.stdout


def test_two_sections_that_cannot_be_registered(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (400, 500, 3), dtype=np.uint8)
    write_png(tmp_path / "noise.png", noise)
    r = _run("make-ihc-pairs", "--he", DATA / "he-ihc-serial" / "rat-kidney-HE.jpg", "--ihc",
             tmp_path / "noise.png", "--marker", "PanCK", "-o", tmp_path / "pairs")  # fmt: skip
    _one_line_error(r, "cannot be registered", "correlation")
