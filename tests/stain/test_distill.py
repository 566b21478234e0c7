"""Distillation: a teacher's colours as a per-pixel map through the 256³ lookup table."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import napari_stainfuser as sf
from napari_stainfuser.stain.lab import delta_e_ciede2000, rgb_to_lab
from napari_stainfuser.stain.tissue import tissue_mask

DATA = Path(__file__).parents[1] / "data"
CMU = DATA / "CMU-1-Small-Region.svs"
TARGET = DATA / "he" / "torchstain-target.png"
V2 = DATA / "stainfuser-reference-v2" / "checkpoint.safetensors"


def mean_delta_e(a, b) -> float:
    a, b = torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b))
    return float(delta_e_ciede2000(rgb_to_lab(a), rgb_to_lab(b)).double().mean())


@pytest.fixture(scope="module")
def vahadane():
    """Vahadane fitted to the target and to the CMU slide's tissue, and its distillate."""
    teacher = sf.make_stainer("vahadane", TARGET, slide=CMU)
    return teacher, sf.distill(teacher, CMU, tiles=12, seed=0)


def test_a_per_pixel_teacher_is_reproduced_on_held_out_tissue(vahadane):
    teacher, student = vahadane
    report = student.report
    assert report["tiles"] == {"fit": 12, "held_out": 3}
    assert report["held_out"]["mean"] < 1.0 and report["held_out"]["p95"] < 2.0
    # On a whole region of the slide, tissue only: the distillate against the teacher,
    # and (so that the test can fail) the teacher against the source.
    region = sf.open_slide(CMU).read_region(y=1800, x=200, height=768, width=1024)
    tissue = tissue_mask(region).mask
    assert tissue.mean() > 0.3
    want, got = teacher.transform(region)[tissue], student.transform(region)[tissue]
    assert mean_delta_e(got, want) < 1.0
    assert mean_delta_e(region[tissue], want) > 5.0


def test_the_distillate_is_per_pixel_and_travels_small(vahadane):
    _, student = vahadane
    assert student.spec.per_pixel and student.spec.overlap == 0
    tile = sf.open_slide(CMU).read_region(y=0, x=0, height=256, width=256)
    x = torch.from_numpy(np.stack([tile, tile[::-1]])).permute(0, 3, 1, 2).contiguous()
    out = student.stain(x).tiles
    np.testing.assert_array_equal(out[0].permute(1, 2, 0).numpy(), student.transform(tile))
    blob = pickle.dumps(student)
    assert len(blob) < 1_000_000  # the table, not the 64 MB lookup table
    again = pickle.loads(blob)
    assert torch.equal(again.stain(x).tiles, out)


def test_the_tiny_stainfuser_distils_and_stains_a_slide_from_the_cli(tmp_path):
    from PIL import Image

    image = np.asarray(Image.open(DATA / "he" / "torchstain-source.png").convert("RGB"))[:192, :192]
    slide = tmp_path / "small.png"
    Image.fromarray(image).save(slide)
    out = tmp_path / "d.ome.zarr"
    args = ["normalize", slide, "--target", TARGET, "--method", "stainfuser", "--weights", V2,
            "--steps", "2", "--tile", "64", "--overlap", "16", "--mpp", "0.5", "--distill",
            "--distill-tiles", "4", "--no-progress", "-o", out]  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "napari_stainfuser.cli", *map(str, args)],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "distilled stainfuser on 4 tissue tiles: ΔE2000 to it median" in r.stdout
    result = sf.open_slide(out)
    assert result.provenance["method"] == "distilled"
    assert result.provenance["parameters"]["teacher"]["method"] == "stainfuser"
    assert result.levels[0].shape == (192, 192, 3)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--method", "macenko", "--distill"], "--distill: macenko is already per-pixel"),
        (
            ["--method", "stainfuser", "--weights", str(V2), "--distill", "--distill-tiles", "0"],
            "--distill-tiles: must be in 1..4096, got 0",
        ),
    ],
)
def test_distill_mistakes_are_one_line(flags, named, tmp_path):
    args = ["normalize", str(CMU), "--target", str(TARGET), "-o", str(tmp_path / "o.ome.zarr")]
    r = subprocess.run([sys.executable, "-m", "napari_stainfuser.cli", *args, *flags],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], r.stderr
