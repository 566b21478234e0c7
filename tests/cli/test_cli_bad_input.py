"""Bad input never costs the user work, never escapes as a traceback, never passes
as success with garbage output, and never spins without bound.

Each test is one case a user met: the exit status, a one-line message naming the
flag or file, the time to the error where the case is about time, and that
nothing the user owns was changed or deleted. (Flag values that are simply out
of range are in test_cli_normalize.py.)
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from bad_input_cases import digest, sparse_tiff

DATA = Path(__file__).parents[1] / "data"
CMU = DATA / "CMU-1-Small-Region.svs"
TARGET = DATA / "he" / "torchstain-target.png"
REF = DATA / "stainfuser-reference"


def _run(*args, timeout=600):
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "napari_stainfuser.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    r.seconds = time.monotonic() - t0
    return r


def _one_line_error(r, *named):
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("stainfuser ") and ": error: " in lines[0]
    assert "Traceback" not in r.stderr
    for n in named:
        assert n in lines[0], lines[0]
    return lines[0]


# -- 1. options are checked before the work is done -----------------------------------


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--quality", "500"], "--quality"), (["--compression", "bogus"], "--compression")],
)
def test_a_bad_output_option_is_refused_before_any_work_and_a_corrected_run_works(
    flags, named, tmp_path
):
    out = tmp_path / "out.ome.tif"
    r = _run("normalize", CMU, "--target", TARGET, "-o", out, *flags)
    _one_line_error(r, named)
    assert r.seconds < 15
    assert list(tmp_path.iterdir()) == []  # no work folder, nothing to block a rerun
    r = _run("normalize", CMU, "--target", TARGET, "-o", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert out.is_file()


def test_overwrite_never_replaces_a_folder_that_is_not_a_zarr_store(tmp_path):
    mine = tmp_path / "results.ome.zarr"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (mine / "sub").mkdir()
    (mine / "sub" / "data.csv").write_text("1,2,3")
    before = digest(mine)
    r = _run("normalize", CMU, "--target", TARGET, "-o", mine, "--overwrite")
    _one_line_error(r, str(mine), "not a zarr store")
    assert r.seconds < 15  # refused at once, not after staining
    assert digest(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.ome.zarr"]


def test_an_output_that_is_the_input_is_refused_even_with_overwrite(tmp_path):
    from napari_stainfuser.slide import open_slide, write_pyramid

    slide = write_pyramid(
        np.asarray(open_slide(CMU).levels[1]), tmp_path / "slide.ome.tif", mpp=1.0
    )
    link = tmp_path / "same.ome.tif"
    link.symlink_to(slide)
    before = digest(slide)
    for out in (slide, link):
        r = _run("normalize", slide, "--target", TARGET, "-o", out, "--overwrite")
        _one_line_error(r, "is the input")
    assert digest(slide) == before


def test_a_killed_run_resumes_with_other_output_options_and_never_blocks_a_rerun(tmp_path):
    import zarr

    killed = """
import os, signal, sys
from napari_stainfuser.batch import normalize_slide
def report(p):
    if p.phase == "stain" and p.done >= 16:
        os.kill(os.getpid(), signal.SIGKILL)
normalize_slide(sys.argv[1], sys.argv[2], method="macenko", target=sys.argv[3], tile=256,
                progress=report)
"""
    ref = tmp_path / "ref.ome.zarr"
    assert _run("normalize", CMU, "--target", TARGET, "-o", ref, "--tile", "256").returncode == 0
    for out, flags in (
        (tmp_path / "o.ome.zarr", ["--compression", "gzip"]),
        (tmp_path / "o.ome.tif", ["--quality", "70"]),
    ):
        p = subprocess.run([sys.executable, "-c", killed, str(CMU), str(out), str(TARGET)])
        assert p.returncode == -signal.SIGKILL
        # A plain rerun is told what to do, in the command's own words.
        line = _one_line_error(_run("normalize", CMU, "--target", TARGET, "-o", out))
        assert "--resume" in line and "--overwrite" in line and "=True" not in line
        r = _run(
            "normalize", CMU, "--target", TARGET, "-o", out, "--tile", "256", "--resume", *flags
        )
        assert r.returncode == 0, r.stderr
    got = zarr.open_group(str(tmp_path / "o.ome.zarr"), mode="r")
    assert "gzip" in json.dumps(got["0"].metadata.to_dict()["codecs"])
    np.testing.assert_array_equal(got["0"][:], zarr.open_group(str(ref), mode="r")["0"][:])
    assert (tmp_path / "o.ome.tif").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# -- 2. mistakes are one line, exit status 2 ---------------------------------------------


@pytest.fixture
def read_only_folder(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only tmpfs (chmod does not stop root)")
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)]
    ).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_a_read_only_output_folder_is_one_line(read_only_folder):
    r = _run("normalize", CMU, "--target", TARGET, "-o", read_only_folder / "out.ome.tif")
    _one_line_error(r, str(read_only_folder), "Read-only file system")
    assert r.seconds < 15


def test_a_preset_nested_100000_levels_deep_is_one_line(tmp_path):
    preset = tmp_path / "deep.json"
    preset.write_text("[" * 100_000 + "]" * 100_000)
    r = _run("normalize", CMU, "--target", preset, "-o", tmp_path / "o.ome.zarr")
    _one_line_error(r, str(preset), "nested too deeply")


def _weights_folder(tmp_path, name="weights") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for f in (
        "checkpoint.safetensors",
        "unet_config.json",
        "vae_config.json",
        "scheduler_config.json",
    ):
        shutil.copy(REF / f, folder / f)
    return folder


def test_a_config_with_negative_channels_is_a_checkpoint_error_naming_the_file(tmp_path):
    folder = _weights_folder(tmp_path)
    cfg = json.loads((folder / "unet_config.json").read_text())
    cfg["block_out_channels"] = [-32, 64]
    (folder / "unet_config.json").write_text(json.dumps(cfg))
    r = _run("normalize", CMU, "--target", TARGET, "--method", "stainfuser", "--weights", folder,
             "--level", "2", "-o", tmp_path / "o.ome.zarr")  # fmt: skip
    _one_line_error(r, "unet_config.json", "block_out_channels")
    assert r.seconds < 15  # refused with the options, before torch or the slide


def test_an_unexpected_error_is_one_line_exit_1_and_debug_shows_the_traceback(
    tmp_path, monkeypatch, capsys
):
    import napari_stainfuser.batch.run as run
    from napari_stainfuser.cli import main

    def broken(*a, **k):
        raise RuntimeError("something we did not foresee\nacross two lines")

    monkeypatch.setattr(run, "run_job", broken)
    args = ["normalize", str(CMU), "--target", str(TARGET), "-o", str(tmp_path / "o.ome.zarr")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "RuntimeError" in err and "--debug" in err
    with pytest.raises(RuntimeError, match="did not foresee"):
        main(["--debug", *args])


# -- 3. garbage is never reported as success ---------------------------------------------


@pytest.mark.parametrize("damage", ["nan", "int8", "bool"])
def test_weights_with_nan_or_integer_tensors_are_refused(damage, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    folder = _weights_folder(tmp_path)
    state = load_file(folder / "checkpoint.safetensors")
    key = next(k for k in state if k.startswith("noise_predictor.") and state[k].ndim == 4)
    if damage == "nan":
        state[key] = state[key].clone()
        state[key].view(-1)[7] = float("nan")
    else:
        state[key] = state[key].to(getattr(torch, damage))
    save_file(state, folder / "checkpoint.safetensors")
    r = _run("normalize", CMU, "--target", TARGET, "--method", "stainfuser", "--weights", folder,
             "--level", "2", "-o", tmp_path / "o.ome.zarr", "--no-progress")  # fmt: skip
    line = _one_line_error(r, "checkpoint.safetensors", key)
    assert ("non-finite" in line) if damage == "nan" else (damage in line)
    assert not (tmp_path / "o.ome.zarr").exists()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_weights_in_other_float_types_load_and_are_cast(dtype, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from napari_stainfuser.diffusion import StainFuser

    folder = _weights_folder(tmp_path)
    state = load_file(folder / "checkpoint.safetensors")
    save_file(
        {k: v.to(getattr(torch, dtype)) for k, v in state.items()},
        folder / "checkpoint.safetensors",
    )
    model = StainFuser.load(folder)
    assert model.dtype == torch.float32


@pytest.fixture(scope="module")
def macenko_preset(tmp_path_factory):
    from napari_stainfuser import make_stainer

    return json.loads(
        make_stainer("macenko", TARGET).save(tmp_path_factory.mktemp("p") / "m.json").read_text()
    )


@pytest.mark.parametrize(
    ("matrix", "why"),
    [
        ([[0, 0, 0], [0, 0, 0]], "unit vectors"),
        ([[float("nan"), 0.7, 0.3], [0.1, 0.9, 0.4]], "non-finite"),
        ("negated", "negative optical density"),
        ("twice", "one stain twice"),
    ],
)
def test_a_preset_with_a_broken_stain_matrix_is_refused_naming_the_field(
    matrix, why, macenko_preset, tmp_path
):
    data = json.loads(json.dumps(macenko_preset))
    m = data["target"]["stain_matrix"]
    data["target"]["stain_matrix"] = {
        "negated": [[-v for v in row] for row in m], "twice": [m[0], m[0]]
    }.get(matrix, matrix) if isinstance(matrix, str) else matrix  # fmt: skip
    preset = tmp_path / "broken.json"
    preset.write_text(json.dumps(data).replace("NaN", "NaN"))
    r = _run("normalize", CMU, "--target", preset, "-o", tmp_path / "o.ome.zarr")
    _one_line_error(r, str(preset), "target.stain_matrix", why)


@pytest.mark.parametrize("colour", [(0, 0, 0), (160, 60, 150)])
def test_ruifrok_refuses_a_target_without_tissue(colour, tmp_path):
    from PIL import Image

    target = tmp_path / "flat.png"
    Image.fromarray(np.full((256, 256, 3), colour, np.uint8)).save(target)
    r = _run(
        "normalize", CMU, "--target", target, "--method", "ruifrok", "-o", tmp_path / "o.ome.zarr",
        "--no-progress",
    )  # fmt: skip
    _one_line_error(r, str(target), "single colour")


def test_ruifrok_refuses_a_source_without_tissue():
    from napari_stainfuser.errors import StainEstimationError
    from napari_stainfuser.stain import get_normalizer
    from napari_stainfuser.targets import read_target_image

    norm = get_normalizer("ruifrok").fit(read_target_image(TARGET))
    with pytest.raises(StainEstimationError, match="single colour"):
        norm.fit_source(np.zeros((300, 300, 3), np.uint8), name="black frame")


def test_a_damaged_ome_zarr_is_described_in_the_users_terms(tmp_path):
    out = tmp_path / "o.ome.zarr"
    assert _run("normalize", CMU, "--target", TARGET, "-o", out, "--level", "2").returncode == 0
    meta = json.loads((out / "0" / "zarr.json").read_text())
    del meta["data_type"]
    (out / "0" / "zarr.json").write_text(json.dumps(meta))
    line = _one_line_error(_run("info", out), str(out), "damaged zarr metadata")
    assert "KeyError" not in line and "data_type" not in line


# -- 4. small inputs never make unbounded work -------------------------------------------


def test_a_service_that_is_not_a_dask_scheduler_fails_within_the_connect_timeout(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        r = _run("normalize", CMU, "--target", TARGET, "-o", tmp_path / "o.ome.zarr",
                 "--scheduler", f"tcp://127.0.0.1:{port}", timeout=120)  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    _one_line_error(r, "--scheduler", f"127.0.0.1:{port}", "no dask handshake")
    assert r.seconds < 20  # the 5 s connect timeout plus start-up, not minutes
    assert list(tmp_path.iterdir()) == []


OVERVIEW = """
import sys, time, json

def peak_mb():  # VmHWM: this process's own peak (ru_maxrss keeps the parent's across exec)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024

from napari_stainfuser.job import open_source
t0 = time.perf_counter()
src = open_source(sys.argv[1])
opened = time.perf_counter() - t0
seen = []
image, level = src.overview(2048, seen.append)
print(json.dumps({"open_s": opened, "overview_s": time.perf_counter() - t0 - opened,
                  "rss_mb": peak_mb(),
                  "reports": len(seen), "last": [seen[-1].done, seen[-1].total],
                  "shape": image.shape, "white": bool((image == 255).all())}))
"""


def test_a_200000_px_tiff_of_empty_tiles_opens_and_overviews_quickly_in_bounded_memory(tmp_path):
    path = sparse_tiff(tmp_path / "empty.tif", 200_000, 200_000)
    assert path.stat().st_size < 6 * 2**20
    r = subprocess.run([sys.executable, "-c", OVERVIEW, str(path)], capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["open_s"] < 10
    assert got["overview_s"] < 60  # empty tiles are background without reading or decoding
    assert got["rss_mb"] < 1500
    assert got["white"] and max(got["shape"][:2]) <= 2048
    assert got["reports"] > 10 and got["last"][0] == got["last"][1] == 200_000  # progress shown


def test_a_200_mb_preset_is_refused_unread(tmp_path):
    preset = tmp_path / "huge.json"
    with open(preset, "wb") as f:
        f.truncate(200 * 2**20)
    r = _run("normalize", CMU, "--target", preset, "-o", tmp_path / "o.ome.zarr")
    _one_line_error(r, str(preset), "too large for a stain preset")
    assert r.seconds < 10
