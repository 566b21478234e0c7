"""The `stainfuser` command: subcommands, one-line errors, info and the demo."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_stainfuser.cli import main

DATA = Path(__file__).parents[1] / "data"
CMU = DATA / "CMU-1-Small-Region.svs"


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "napari_stainfuser.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_help_lists_subcommands():
    r = _run("--help")
    assert r.returncode == 0
    for cmd in ("info", "demo", "normalize", "train", "make-pairs"):
        assert cmd in r.stdout


def test_info_prints_cmu_metadata(capsys):
    assert main(["info", str(CMU)]) == 0
    out = capsys.readouterr().out
    assert "aperio" in out.lower()
    assert "0.499" in out
    assert "20×" in out
    assert "2220 × 2967" in out  # width × height
    with tifffile.TiffFile(CMU) as tif:
        names = [p.description.split("\n")[0] for p in tif.pages]
    assert "thumbnail" in out and "label" in out and "macro" in out, names


@pytest.mark.parametrize(
    "args",
    [
        ["info", "/nonexistent/slide.svs"],
        ["normalize", str(CMU), "--target", str(CMU), "--method", "nope", "-o", "x.ome.zarr"],
    ],
)
def test_errors_are_one_line_without_traceback(args, tmp_path):
    r = _run(*[a.replace("x.ome.zarr", str(tmp_path / "x.ome.zarr")) for a in args])
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert lines[0].startswith("stainfuser ")


def test_demo_normalizes_toward_ground_truth(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "1024", "--no-progress"]) == 0
    for name in ("source.ome.tif", "normalized-macenko.ome.tif", "montage.png", "target.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    before = metrics["before (source vs truth)"]
    after = metrics["after (macenko vs truth)"]
    # The ground truth is the same tissue in the target's stain: normalization must close
    # most of the colour gap (ΔE2000 below a third of the unnormalized one).
    assert after["delta_e2000"] < before["delta_e2000"] / 3
    assert after["psnr"] > before["psnr"]
    with tifffile.TiffFile(out / "normalized-macenko.ome.tif") as tif:
        assert tif.is_ome
        level0 = tif.series[0].levels[0].asarray()
    assert level0.shape == (1024, 1024, 3) and level0.dtype == np.uint8
