"""Virtual IHC of whole slides: the IHC, the labels and the uncertainty, resumable and
the same on a cluster, through the same runner as normalization."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
import zarr
from batch_cases import read_level0

from napari_stainfuser.batch import stain_slide, work_dir
from napari_stainfuser.diffusion.ihc_networks import build, preset
from napari_stainfuser.diffusion.virtual_ihc import VirtualIHC, save_checkpoint
from napari_stainfuser.errors import ParameterError
from napari_stainfuser.slide import open_slide
from napari_stainfuser.slide.synthetic import SyntheticTissue


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ihc") / "ckpt"
    net = build(preset("tiny", ["CD3", "CK8/18"], tile=64, mpp=1.0), seed=4)
    return save_checkpoint(net, folder, {"training": {"steps": 0}})


@pytest.fixture(scope="module")
def image():
    return np.asarray(SyntheticTissue(3, 1.0).render_he((320, 352)))


KW = dict(marker="CD3", samples=2, steps=2, tile=128, overlap=32, seed=7, mpp=1.0, batch_size=2)


def _zarr(path):
    g = zarr.open_group(str(path), mode="r")
    return {
        "mask": np.asarray(g["labels/mask/0"]),
        "uncertainty": np.asarray(g["extras/uncertainty/0"]),
        "mask_uncertainty": np.asarray(g["extras/mask_uncertainty/0"]),
    }


def test_one_tile_slide_is_exactly_the_model_on_that_tile_and_noise(weights, tmp_path):
    from napari_stainfuser.tiling.noise import NoiseField

    he = np.asarray(SyntheticTissue(3, 1.0).render_he((128, 128)))
    kw = {**KW, "tile": 128, "overlap": 0}
    out = stain_slide(he, tmp_path / "one.ome.zarr", weights=weights, tissue=False, **kw)
    model = VirtualIHC.load(weights, marker="CD3", samples=2, steps=2, seed=7)
    noise = torch.from_numpy(NoiseField(7, model.spec.latent_channels).region(0, 0, 128, 128))
    direct = model.stain(torch.from_numpy(he).permute(2, 0, 1)[None].contiguous(), noise[None])
    # The run computes with its own torch thread count, which reorders float
    # sums: a value on a rounding boundary may land one grey level apart.
    diff = np.abs(read_level0(out).astype(int) - direct.tiles[0].permute(1, 2, 0).numpy())
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    extras = _zarr(out)
    prob = direct.extras["mask"][0, 0].numpy()
    clear = np.abs(prob - 0.5) > 1e-3
    np.testing.assert_array_equal(extras["mask"][clear], (prob >= 0.5)[clear])
    np.testing.assert_allclose(
        extras["uncertainty"], direct.extras["uncertainty"][0, 0].numpy(), atol=1e-4
    )


def test_ome_zarr_holds_the_ihc_the_labels_and_the_uncertainty(weights, image, tmp_path):
    out = stain_slide(image, tmp_path / "v.ome.zarr", weights=weights, **KW)
    slide = open_slide(out)
    assert slide.levels[0].shape == (*image.shape[:2], 3)
    assert slide.provenance["method"] == "virtual-ihc"
    extras = _zarr(out)
    assert extras["mask"].shape[:2] == image.shape[:2] and extras["mask"].dtype == np.uint8
    assert set(np.unique(extras["mask"])) <= {0, 1}
    assert extras["uncertainty"].dtype == np.float32
    # Two samples from different noise disagree somewhere on tissue.
    assert float(extras["uncertainty"].max()) > 0
    g = zarr.open_group(str(out), mode="r")
    assert g["labels"].attrs["ome"]["labels"] == ["mask"]  # NGFF 0.5
    # The output is itself a slide napari-stainfuser (and napari) reads.
    assert open_slide(out).levels[0].dtype == np.uint8


def test_ome_tiff_output_puts_the_mask_beside_it(weights, image, tmp_path):
    out = stain_slide(image, tmp_path / "v.ome.tif", weights=weights, compression="zstd", **KW)
    for name in ("mask", "uncertainty", "mask_uncertainty"):
        side = tmp_path / f"v.{name}.ome.tif"
        assert side.is_file(), name
        assert tifffile.imread(side).shape[:2] == image.shape[:2]
    np.testing.assert_array_equal(
        read_level0(out),
        read_level0(stain_slide(image, tmp_path / "z.ome.zarr", weights=weights, **KW)),
    )


def test_a_marker_the_checkpoint_does_not_know(weights, image, tmp_path):
    with pytest.raises(
        ParameterError, match="PD-L1: this checkpoint does not know it; known markers: CD3, CK8/18"
    ):
        stain_slide(image, tmp_path / "x.ome.zarr", weights=weights, marker="PD-L1")
    with pytest.raises(ParameterError, match="choose one of CD3, CK8/18"):
        stain_slide(image, tmp_path / "x.ome.zarr", weights=weights)
    with pytest.raises(ParameterError, match="sampler.*valid: ddim, dpm\\+\\+"):
        stain_slide(image, tmp_path / "x.ome.zarr", weights=weights, marker="CD3", sampler="pndm")
    assert not (tmp_path / "x.ome.zarr").exists()


KILLED = """
import os, signal, sys
import numpy as np
from napari_stainfuser.batch import stain_slide

def report(p):
    if p.phase == "stain" and p.done >= 4:
        os.kill(os.getpid(), signal.SIGKILL)

stain_slide(np.load(sys.argv[2]), sys.argv[1], weights=sys.argv[3], progress=report,
            marker="CD3", samples=2, steps=2, tile=128, overlap=32, seed=7, mpp=1.0, batch_size=2)
"""


@pytest.mark.slow
def test_kill_and_resume_and_a_cluster_give_the_same_slide(weights, image, tmp_path):
    distributed = pytest.importorskip("distributed")

    ref = stain_slide(image, tmp_path / "ref.ome.zarr", weights=weights, **KW)
    np.save(tmp_path / "image.npy", image)
    out = tmp_path / "killed.ome.zarr"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED, str(out), str(tmp_path / "image.npy"), str(weights)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert work_dir(out).is_dir() and not out.exists()
    stain_slide(image, out, weights=weights, resume=True, **KW)
    np.testing.assert_array_equal(read_level0(out), read_level0(ref))
    for name, a in _zarr(out).items():
        np.testing.assert_array_equal(a, _zarr(ref)[name], err_msg=name)

    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=50
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        on_cluster = stain_slide(
            image, tmp_path / "c.ome.zarr", weights=weights, scheduler=client, **KW
        )
    np.testing.assert_array_equal(read_level0(on_cluster), read_level0(ref))
    for name, a in _zarr(on_cluster).items():
        np.testing.assert_array_equal(a, _zarr(ref)[name], err_msg=name)
    assert os.path.isdir(on_cluster)
