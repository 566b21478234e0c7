"""Every output records how it was made, and reading it back never costs the pixels."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_stainfuser import normalize_slide, open_slide
from napari_stainfuser.fingerprint import file_digest
from napari_stainfuser.slide import write_pyramid
from napari_stainfuser.slide.provenance import ATTRS_KEY, NAMESPACE

DATA = Path(__file__).parents[1] / "data"
CMU = DATA / "CMU-1-Small-Region.svs"
TARGET = DATA / "he" / "torchstain-target.png"
V2 = DATA / "stainfuser-reference-v2" / "checkpoint.safetensors"


@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    """A 512 × 768 crop of the CMU slide with its µm/px, as a tiled TIFF."""
    image = open_slide(CMU).levels[0][1000:1512, 600:1368].compute()
    path = tmp_path_factory.mktemp("crop") / "crop.tif"
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb",
                     resolution=(1e4 / 0.499, 1e4 / 0.499), resolutionunit="CENTIMETER")  # fmt: skip
    return path


@pytest.mark.parametrize("ext", [".ome.tif", ".ome.zarr"])
def test_a_classical_run_records_method_target_input_and_version(ext, tmp_path):
    from importlib.metadata import version

    out = normalize_slide(CMU, tmp_path / f"out{ext}", method="macenko", target=TARGET,
                          progress=False)  # fmt: skip
    slide = open_slide(out)
    prov = slide.provenance
    assert prov["software"] == {
        "name": "napari-stainfuser",
        "version": version("napari-stainfuser"),
    }
    assert prov["method"] == "macenko" and prov["seed"] == 0
    assert prov["parameters"]["percentile"] == 99.0
    assert prov["target"] == {"kind": "picture", "name": TARGET.name, "digest": file_digest(TARGET)}
    assert prov["weights"] is None and prov["sampler"] is None
    assert prov["input"]["path"] == str(CMU) and prov["input"]["digest"] == file_digest(CMU)
    # The input's µm/px and magnification are kept in the output.
    assert slide.mpp == pytest.approx(0.499) and slide.magnification == 20.0
    assert json.loads(json.dumps(prov)) == prov


def test_a_stainfuser_run_records_weights_sampler_steps_and_preprocessing(crop, tmp_path):
    out = normalize_slide(
        crop, tmp_path / "sf.ome.zarr", method="stainfuser", target=TARGET, weights=V2,
        sampler="ddim", steps=2, tile=64, overlap=16, seed=3, preprocess="official",
        progress=False,
    )  # fmt: skip
    prov = open_slide(out).provenance
    assert prov["method"] == "stainfuser"
    assert prov["weights"] == {"name": V2.name, "digest": file_digest(V2)}
    assert (prov["sampler"], prov["steps"], prov["seed"]) == ("ddim", 2, 3)
    assert prov["preprocess"] == "official"
    assert (prov["tile"], prov["overlap"]) == (64, 16)


def test_write_pyramid_records_the_software_and_what_it_is_given(tmp_path):
    image = np.full((300, 200, 3), 180, np.uint8)
    for ext in (".ome.tif", ".ome.zarr"):
        out = write_pyramid(image, tmp_path / f"w{ext}", provenance={"note": "a test"})
        prov = open_slide(out).provenance
        assert prov["note"] == "a test" and prov["software"]["name"] == "napari-stainfuser"


def test_a_corrupt_record_is_ignored_with_a_warning_and_the_pixels_are_read(tmp_path, caplog):
    image = (np.arange(64 * 96 * 3) % 251).astype(np.uint8).reshape(64, 96, 3)
    out = write_pyramid(image, tmp_path / "z.ome.zarr")
    zarr.open_group(out, mode="r+").attrs[ATTRS_KEY] = "{not json"
    tif = tmp_path / "t.ome.tif"
    tifffile.imwrite(tif, image, photometric="rgb", metadata={
        "axes": "YXS", "MapAnnotation": {"Namespace": NAMESPACE, "provenance": "[1, 2"},
    })  # fmt: skip
    for path in (out, tif):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            slide = open_slide(path)
        assert slide.provenance is None
        assert any("provenance" in r.getMessage() for r in caplog.records), path
        np.testing.assert_array_equal(slide.levels[0].compute(), image)


def test_files_of_other_software_have_none(tmp_path):
    assert open_slide(CMU).provenance is None
