"""`stainfuser normalize`: its own flags, checked before anything heavy loads; the
sampler and its steps; one run per output at a time; resume checks."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_cases import run_reporting_imports

from napari_stainfuser.cli import main

DATA = Path(__file__).parents[1] / "data"
CMU = DATA / "CMU-1-Small-Region.svs"
TARGET = DATA / "he" / "torchstain-target.png"
WEIGHTS = DATA / "stainfuser-reference" / "checkpoint.safetensors"


def _run(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "napari_stainfuser.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_help_lists_the_samplers_and_says_what_scheduler_means():
    r = _run("normalize", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "--sampler" in text and "pndm, ddim, dpm++, euler" in text
    assert "--steps" in text and "dask scheduler" in text


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--tile", "1"], "--tile: must be at least 16 px, got 1"),
        (["--tile", "100000"], "--tile: 100000 px is too large"),
        (["--overlap", "600", "--tile", "512"], "--overlap: 600 must be smaller"),
        (["--batch-size", "0"], "--batch-size: must be in 1..256, got 0"),
        (["--quality", "500"], "--quality: expected a JPEG quality 1-100, got 500"),
        (["--compression", "bogus"], "--compression: 'bogus' is not available"),
        (["--sampler", "ddim"], "--sampler: applies to diffusion methods"),
        (["--steps", "10"], "--steps: applies to diffusion methods"),
        (["--method", "stainfuser", "--steps", "0"], "--steps: must be in 1..1000, got 0"),
        (["--method", "stainfuser", "--steps", "-3"], "--steps: must be in 1..1000, got -3"),
        (["--method", "stainfuser", "--sampler", "heun"], "valid: pndm, ddim, dpm++, euler"),
        (["--preprocess", "official"], "--preprocess: applies to diffusion methods"),
        (["--method", "stainfuser", "--preprocess", "paper"], "valid: ours, official"),
        (
            ["--method", "stainfuser", "--preprocess", "official", "--precision", "bf16"],
            "--precision bf16: --preprocess official runs in fp32",
        ),
        (["--method", "fancy"], "--method: 'fancy' is unknown; valid: macenko"),
        (["--device", "gpu"], "--device: 'gpu' is not a device"),
        (["--level", "-1"], "--level: must be at least 0"),
        (["--scheduler", "local:x"], "--scheduler: 'local:x' is not understood"),
    ],
)
def test_an_argument_error_is_one_line_naming_the_flag_before_heavy_imports(flags, named, tmp_path):
    out = tmp_path / "out.ome.zarr"
    args = ["normalize", CMU, "--target", TARGET, "-o", out, *flags]
    if "stainfuser" in flags:
        args += ["--weights", WEIGHTS]
    t0 = time.monotonic()
    r = run_reporting_imports(args)
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], r.stderr
    assert lines[0].startswith("stainfuser normalize: error: ")
    # Nothing heavy was needed to find the mistake (the time bound is in
    # benchmarks/bench_cli.py; this one only catches a hang).
    assert r.stdout.strip() == "loaded:", r.stdout
    assert took < 20
    assert list(tmp_path.iterdir()) == []


SLOW_RUN = """
import sys, time
from napari_stainfuser.batch import normalize_slide

def report(p):
    if p.phase == "stain" and p.done > 0:  # a tile group is committed: then hold still
        print("stain", p.done, flush=True)
        time.sleep(300)

normalize_slide(sys.argv[1], sys.argv[2], method="macenko", target=sys.argv[3], tile=256,
                progress=report)
"""


def test_a_second_run_on_the_same_output_is_refused_and_a_killed_one_resumes(tmp_path):
    out = tmp_path / "o.ome.zarr"
    first = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN, str(CMU), str(out), str(TARGET)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert first.stdout.readline().startswith("stain"), first.stderr.read()
        r = _run("normalize", CMU, "--target", TARGET, "-o", out, "--tile", "256")
        assert r.returncode == 2
        line = r.stderr.strip()
        assert "\n" not in line and f"another run is writing it now (pid {first.pid}" in line
        # --resume or --overwrite do not take over a live run either.
        for flag in ("--resume", "--overwrite"):
            r = _run("normalize", CMU, "--target", TARGET, "-o", out, "--tile", "256", flag)
            assert r.returncode == 2 and "another run is writing it now" in r.stderr
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    # The killed run's lock is gone with it: the resume goes ahead.
    r = _run("normalize", CMU, "--target", TARGET, "-o", out, "--tile", "256", "--resume")
    assert r.returncode == 0, r.stderr
    assert out.is_dir()


class Stop(Exception):
    pass


def _stop(p):
    if p.phase == "stain" and p.done >= 2:
        raise Stop


def test_resume_with_another_sampler_or_step_count_is_refused_naming_them(tmp_path):
    from napari_stainfuser.batch import normalize_slide
    from napari_stainfuser.errors import ParameterError

    image = np.asarray(tifffile.imread(CMU))[1200:1456, 800:1184]
    slide = tmp_path / "crop.tif"
    tifffile.imwrite(slide, image, tile=(128, 128), photometric="rgb")
    kw = dict(method="stainfuser", target=TARGET, weights=WEIGHTS, tile=128, overlap=32,
              work_mpp=None, batch_size=2, tissue=False)  # fmt: skip
    out = tmp_path / "o.ome.zarr"
    with pytest.raises(Stop):
        normalize_slide(slide, out, sampler="ddim", steps=2, progress=_stop, **kw)
    with pytest.raises(ParameterError, match=r"differs in stainer\.params\.steps"):
        normalize_slide(slide, out, sampler="ddim", steps=3, resume=True, **kw)
    with pytest.raises(ParameterError, match=r"differs in stainer\.params\.sampler"):
        normalize_slide(slide, out, sampler="euler", steps=2, resume=True, **kw)
    # The command line names its own flags.
    r = _run("normalize", slide, "--target", TARGET, "--method", "stainfuser", "--weights",
             WEIGHTS, "--tile", "128", "--overlap", "32", "--batch-size", "2", "--no-tissue",
             "--sampler", "dpm++", "--steps", "2", "-o", out, "--resume")  # fmt: skip
    assert r.returncode == 2
    assert "--resume:" in r.stderr and "stainer.params.sampler" in r.stderr
    assert "--overwrite" in r.stderr and "overwrite=True" not in r.stderr
    # The right sampler and steps continue the run.
    normalize_slide(slide, out, sampler="ddim", steps=2, resume=True, **kw)
    assert out.is_dir()


def test_info_gives_level_and_chunk_sizes_width_first(tmp_path, capsys):
    path = tmp_path / "wide-tiles.tif"
    tifffile.imwrite(path, np.zeros((512, 1024, 3), np.uint8), tile=(256, 512), photometric="rgb")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "width × height" in out
    assert "0: 1024 × 512 px" in out and "chunks 512 × 256 px" in out
