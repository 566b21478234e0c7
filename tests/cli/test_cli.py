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


def _bad_inputs(tmp: Path) -> dict[str, Path]:
    """One file per bad-input case of the reader, made from real bytes where possible."""
    raw = CMU.read_bytes()
    cases = {
        "missing": tmp / "missing.svs",
        "directory": tmp / "folder.zarr",
        "truncated": tmp / "half.svs",
        "overwritten": tmp / "middle.svs",
        "not-an-image": tmp / "notes.tif",
        "greyscale": tmp / "grey.tif",
        "16-bit": tmp / "deep.tif",
    }
    cases["directory"].mkdir()
    cases["truncated"].write_bytes(raw[: len(raw) // 2])
    mid = bytearray(raw)
    mid[len(raw) // 2 : len(raw) // 2 + 65536] = b"\xff" * 65536
    cases["overwritten"].write_bytes(bytes(mid))
    cases["not-an-image"].write_text("just some text, not a TIFF\n")
    tifffile.imwrite(cases["greyscale"], np.zeros((64, 64), np.uint8))
    tifffile.imwrite(cases["16-bit"], np.zeros((64, 64, 3), np.uint16))
    return cases


CASES = ["missing", "directory", "truncated", "not-an-image", "greyscale", "16-bit"]


@pytest.mark.parametrize("case", CASES)
def test_info_errors_are_one_line_naming_the_file(case, tmp_path):
    path = _bad_inputs(tmp_path)[case]
    r = _run("info", str(path))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert lines[0].startswith("stainfuser info: error: ")
    assert path.name in lines[0]


def test_overwritten_middle_fails_when_the_damaged_tiles_are_read(tmp_path):
    """Bytes overwritten mid-file: the header opens, the damage surfaces as one line."""
    path = _bad_inputs(tmp_path)["overwritten"]
    out = tmp_path / "copy.ome.zarr"
    r = _run(
        "normalize",
        str(path),
        "--target",
        str(CMU),
        "--method",
        "reinhard",
        "-o",
        str(out),
        "--no-progress",
    )
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert path.name in lines[0]
    assert not out.exists()


def test_unknown_method_is_one_line_listing_valid_ones(tmp_path):
    out = tmp_path / "x.ome.zarr"
    r = _run("normalize", str(CMU), "--target", str(CMU), "--method", "nope", "-o", str(out))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1, r.stderr
    assert "macenko" in lines[0] and "'nope'" in lines[0]


def test_demo_normalizes_toward_ground_truth(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "1024", "--no-progress"]) == 0
    names = (
        "source.ome.tif",
        "source-preview.png",
        "normalized-macenko.ome.tif",
        "montage.png",
        "target.png",
    )
    for name in names:
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


def test_demo_refuses_to_replace_outputs_without_overwrite(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "montage.png").write_bytes(b"keep me")
    r = _run("demo", "--out", str(out), "--size", "1024", "--no-progress")
    assert r.returncode == 2
    assert "--overwrite" in r.stderr and "montage.png" in r.stderr
    assert (out / "montage.png").read_bytes() == b"keep me"


@pytest.fixture(scope="module")
def cmu_crop_tif(tmp_path_factory):
    """768 × 1024 of the real CMU slide as a plain tiled TIFF (about 40 % tissue)."""
    from napari_stainfuser.slide import open_slide

    crop = np.ascontiguousarray(open_slide(CMU).levels[0][512:1280, 256:1280].compute())
    path = tmp_path_factory.mktemp("cli") / "crop.tif"
    tifffile.imwrite(path, crop, tile=(256, 256), photometric="rgb")
    return path, crop


@pytest.mark.parametrize(
    ("method", "suffix", "preset"),
    [
        ("reinhard", ".ome.tif", False),
        ("vahadane", ".ome.zarr", False),
        ("macenko", ".ome.zarr", True),
    ],
)
def test_normalize_writes_what_the_library_writes(method, suffix, preset, cmu_crop_tif, tmp_path):
    from napari_stainfuser.batch import normalize_slide
    from napari_stainfuser.slide import open_slide
    from napari_stainfuser.stain import get_normalizer
    from napari_stainfuser.targets import read_target_image

    slide, crop = cmu_crop_tif
    target = DATA / "he" / "torchstain-target.png"
    if preset:  # a saved preset stands in for the picture
        path = tmp_path / "target.json"
        get_normalizer(method).fit(read_target_image(target)).save(path)
        target = path
    out = tmp_path / f"cli{suffix}"
    r = _run("normalize", str(slide), "--target", str(target), "--method", method, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote {out}"
    # tqdm's bar: the stain phase counts the 2 × 2 tiles of 512² (the default).
    assert "stain" in r.stderr and "4/4" in r.stderr, r.stderr
    got = open_slide(out).levels[0].compute()
    ref = normalize_slide(slide, tmp_path / f"lib{suffix}", method=method, target=target)
    np.testing.assert_array_equal(got, open_slide(ref).levels[0].compute())
    assert got.shape == crop.shape and (got != crop).any(-1).mean() > 0.2
