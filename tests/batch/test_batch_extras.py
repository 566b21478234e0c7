"""A stainer's extra outputs (a cell mask, an uncertainty map) in whole-slide runs:
written as an NGFF label image and an extra image in the OME-Zarr, or beside
the OME-TIFF; blended like the image; resumable; the same on a cluster."""

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from batch_cases import MaskingStainer, masking_truth, read_level0

from napari_stainfuser.batch import normalize_slide, work_dir
from napari_stainfuser.tiling.tissue import detect_tissue


def _zarr_extras(path: Path) -> dict:
    g = zarr.open_group(str(path), mode="r")
    return {
        "mask": np.asarray(g["labels/mask/0"]),
        "uncertainty": np.asarray(g["extras/uncertainty/0"]),
    }


@pytest.fixture(scope="module")
def image():
    # 768 × 1280 of the real CMU slide: over 1024 px wide, so the output has a level 1.
    from batch_cases import CMU

    from napari_stainfuser.slide import open_slide

    return np.asarray(open_slide(CMU).levels[0][512:1280, 200:1480])


@pytest.fixture(scope="module")
def truth(image):
    tissue = detect_tissue(image).region(image.shape[:2], 0, image.shape[0], 0, image.shape[1])
    assert 0.2 < tissue.mean() < 0.9
    return masking_truth(image, tissue)


def test_extras_go_into_the_ome_zarr_blended_like_the_image(image, truth, tmp_path):
    out = normalize_slide(image, tmp_path / "o.ome.zarr", stainer=MaskingStainer())
    np.testing.assert_array_equal(read_level0(out), truth["image"])
    got = _zarr_extras(out)
    # Blended over overlapping tiles, then thresholded: the whole-image answer.
    assert got["mask"].dtype == np.uint8 and set(np.unique(got["mask"])) <= {0, 1}
    np.testing.assert_array_equal(got["mask"].astype(bool), truth["mask"])
    assert 0.05 < truth["mask"].mean() < 0.6
    assert got["uncertainty"].dtype == np.float32
    np.testing.assert_allclose(got["uncertainty"], truth["uncertainty"], rtol=0, atol=1e-6)
    # NGFF: a labels group naming the mask, an image-label with its source, the
    # same number of levels as the image, and the float map beside it.
    g = zarr.open_group(str(out), mode="r")
    n = len(g.attrs["ome"]["multiscales"][0]["datasets"])
    assert g["labels"].attrs["ome"]["labels"] == ["mask"]
    label = g["labels/mask"].attrs["ome"]
    assert label["image-label"]["source"] == {"image": "../../"}
    assert len(label["multiscales"][0]["datasets"]) == n
    assert len(g["extras/uncertainty"].attrs["ome"]["multiscales"][0]["datasets"]) == n
    # Lower label levels keep any positive pixel of the four below it.
    m0, m1 = got["mask"], np.asarray(g["labels/mask/1"])
    h, w = m1.shape
    np.testing.assert_array_equal(m1, m0[: 2 * h, : 2 * w].reshape(h, 2, w, 2).max((1, 3)))


def test_extras_of_an_ome_tiff_go_into_files_beside_it(image, truth, tmp_path):
    out = normalize_slide(
        image, tmp_path / "o.ome.tif", stainer=MaskingStainer(), compression="zlib"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "o.mask.ome.tif", "o.ome.tif", "o.uncertainty.ome.tif",
    ]  # fmt: skip
    np.testing.assert_array_equal(tifffile.imread(out), truth["image"])
    mask = tifffile.imread(tmp_path / "o.mask.ome.tif")
    np.testing.assert_array_equal(mask.astype(bool), truth["mask"])
    unc = tifffile.imread(tmp_path / "o.uncertainty.ome.tif")
    assert unc.dtype == np.float32
    np.testing.assert_allclose(unc, truth["uncertainty"], atol=1e-6)
    with tifffile.TiffFile(tmp_path / "o.mask.ome.tif") as tf:
        assert tf.is_ome and len(tf.series[0].levels) == len(
            tifffile.TiffFile(out).series[0].levels
        )


KILLED = """
import os, signal, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from batch_cases import MaskingStainer
from napari_stainfuser.batch import normalize_slide

def report(p):
    if p.phase == "stain" and p.done >= 8:
        os.kill(os.getpid(), signal.SIGKILL)

normalize_slide(np.load(sys.argv[2]), sys.argv[1], stainer=MaskingStainer(batch_size=2),
                progress=report)
"""


@pytest.mark.slow
def test_extras_resume_after_a_kill_and_match_a_cluster_run(image, tmp_path):
    distributed = pytest.importorskip("distributed")
    import batch_cases
    import cloudpickle

    ref = normalize_slide(image, tmp_path / "ref.ome.zarr", stainer=MaskingStainer(batch_size=2))
    np.save(tmp_path / "image.npy", image)
    out = tmp_path / "killed.ome.zarr"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED, str(out), str(tmp_path / "image.npy"),
         str(Path(batch_cases.__file__).parent)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert work_dir(out).is_dir()
    normalize_slide(image, out, stainer=MaskingStainer(batch_size=2), resume=True)
    np.testing.assert_array_equal(read_level0(out), read_level0(ref))
    for name, a in _zarr_extras(out).items():
        np.testing.assert_array_equal(a, _zarr_extras(ref)[name], err_msg=name)

    # Workers unpickle the test's stainer class by value.
    cloudpickle.register_pickle_by_value(batch_cases)
    try:
        with (
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=50
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            on_cluster = normalize_slide(
                image, tmp_path / "cluster.ome.zarr", stainer=MaskingStainer(batch_size=2),
                scheduler=client,
            )  # fmt: skip
    finally:
        cloudpickle.unregister_pickle_by_value(batch_cases)
    np.testing.assert_array_equal(read_level0(on_cluster), read_level0(ref))
    for name, a in _zarr_extras(on_cluster).items():
        np.testing.assert_array_equal(a, _zarr_extras(ref)[name], err_msg=name)
