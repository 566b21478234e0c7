"""Our StainFuser against the official implementation's v2 vector (source-sensitive).

tests/data/stainfuser-reference-v2/README.md says how each tensor was made and
states the tolerances used here. Two sections: patch mode (the v1 tensors, with
weights under which every input path matters) and the official WSI mode.
"""

import numpy as np
import pytest
import torch
from diffusion_cases import REF_V2_DIR
from safetensors.torch import load_file

from napari_stainfuser.diffusion import StainFuser
from napari_stainfuser.diffusion import model as model_module
from napari_stainfuser.diffusion.model import to_uint8
from napari_stainfuser.diffusion.official import posterior_noise, resize_target, scale_batch


@pytest.fixture(scope="module")
def v2():
    return load_file(REF_V2_DIR / "reference_io.safetensors")


@pytest.fixture(scope="module")
def model():
    return StainFuser.load(REF_V2_DIR / "checkpoint.safetensors")


def rel_l2(a, b):
    return float((a - b).norm() / b.norm())


def max_abs(a, b):
    return float((a - b).abs().max())


@pytest.mark.parametrize("weights", ["checkpoint.safetensors", "checkpoint.pth"])
def test_patch_mode(weights, v2):
    model = StainFuser.load(REF_V2_DIR / weights)
    assert max_abs(model.encode_target(v2["target"]), v2["target_latents"]) < 1e-4
    eps = model.predict_noise(v2["x_t"], v2["timesteps"], v2["source"], v2["target_latents"])
    assert rel_l2(eps, v2["eps"]) < 1e-4
    out = model.sample(
        v2["source"], v2["target_latents"], steps=20, sampler="pndm", init_noise=v2["init_noise"]
    )
    assert max_abs(out, v2["output"]) < 1e-3


def test_the_source_reaches_the_output(model, v2):
    # What v1 could not check: a zero source must move eps far beyond the tolerance.
    eps = model.predict_noise(
        v2["x_t"], v2["timesteps"], torch.zeros_like(v2["source"]), v2["target_latents"]
    )
    assert rel_l2(eps, v2["eps"]) > 0.1


def test_official_batch_scaling_and_target_resize_are_exact(v2):
    scaled = scale_batch(v2["wsi_source_uint8"])
    assert scaled.dtype == torch.float32
    assert max_abs(scaled, v2["wsi_source_scaled"]) < 1e-6
    # Not per tile and not /255: the batch's own min and max (26 and 255 here).
    assert max_abs(v2["wsi_source_uint8"].float() / 255, v2["wsi_source_scaled"]) > 0.05
    target = v2["target_raw_uint8"].permute(1, 2, 0).numpy()  # 80×100×3
    resized = resize_target(target, 64)
    assert resized.shape == (1, 3, 64, 64)
    assert max_abs(resized[0], v2["target_resized"]) < 1e-6


def test_official_sampled_latents_given_the_posterior_noise(model, v2):
    target = v2["target_resized"][None].repeat(2, 1, 1, 1)
    latents = model.encode_target(target, sample=True, noise=v2["posterior_noise"])
    assert max_abs(latents, v2["target_latents_sample"]) < 1e-4
    assert max_abs(model.encode_target(target), v2["target_latents_sample"]) > 0.1


def test_official_wsi_loop(model, v2):
    out = model.sample(
        v2["wsi_source_scaled"],
        v2["target_latents_sample"],
        steps=20,
        sampler="pndm",
        init_noise=v2["wsi_init_noise"],
    )
    assert max_abs(out, v2["wsi_output"]) < 1e-3
    got = to_uint8(out).int()
    apart = (got - v2["wsi_output_uint8"].int()).abs()
    assert int(apart.max()) <= 1 and float((apart > 0).float().mean()) < 1e-3


def test_the_official_stainer_end_to_end(monkeypatch, v2):
    # preprocess="official" from the raw uint8 tiles and target to the uint8 tiles,
    # with the recorded posterior draw in place of the seeded one.
    model = StainFuser.load(REF_V2_DIR / "checkpoint.safetensors", preprocess="official")
    assert model.precision == "fp32"
    model.set_target(v2["target_raw_uint8"].permute(1, 2, 0).numpy())
    monkeypatch.setattr(model_module, "posterior_noise", lambda seed, n: v2["posterior_noise"])
    got = model.stain(v2["wsi_source_uint8"], noise=v2["wsi_init_noise"]).tiles.int()
    apart = (got - v2["wsi_output_uint8"].int()).abs()
    assert int(apart.max()) <= 1 and float((apart > 0).float().mean()) < 1e-3
    # Our default pipeline on the same input is visibly another one.
    ours = StainFuser.load(REF_V2_DIR / "checkpoint.safetensors")
    ours.set_target(v2["target_raw_uint8"].permute(1, 2, 0).numpy())
    mine = ours.stain(v2["wsi_source_uint8"], noise=v2["wsi_init_noise"]).tiles.int()
    assert float((mine - v2["wsi_output_uint8"].int()).abs().float().mean()) > 1.0


def test_posterior_draw_is_per_tile_whatever_the_batch():
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    whole = posterior_noise(7, noise)
    for i in range(3):
        assert torch.equal(posterior_noise(7, noise[i : i + 1])[0], whole[i])
    assert not torch.equal(posterior_noise(8, noise), whole)


def test_official_mode_refuses_other_precisions():
    from napari_stainfuser.errors import ParameterError

    with pytest.raises(ParameterError, match="preprocess 'official' runs in fp32"):
        StainFuser.load(REF_V2_DIR / "checkpoint.safetensors", preprocess="official",
                        precision="bf16")  # fmt: skip
    with pytest.raises(ParameterError, match="preprocess must be one of ours, official"):
        StainFuser.load(REF_V2_DIR / "checkpoint.safetensors", preprocess="paper")


def test_scale_batch_of_one_colour_is_zeros_not_nan():
    flat = torch.full((2, 3, 8, 8), 200, dtype=torch.uint8)
    assert torch.equal(scale_batch(flat), torch.zeros(2, 3, 8, 8))
    assert np.isfinite(scale_batch(flat).numpy()).all()


def test_the_official_option_travels_in_the_recipe(v2):
    # A dask worker rebuilds the stainer from its recipe: the option must go with it.
    from napari_stainfuser import make_stainer
    from napari_stainfuser.stainers import portable

    target = v2["target_raw_uint8"].permute(1, 2, 0).numpy()
    sf = make_stainer(
        "stainfuser", target, weights=REF_V2_DIR / "checkpoint.safetensors",
        preprocess="official", steps=2,
    )  # fmt: skip
    assert sf.preprocess == "official"
    again = portable(sf)()
    assert again.preprocess == "official"
    tiles = v2["wsi_source_uint8"]
    assert torch.equal(
        sf.stain(tiles, noise=v2["wsi_init_noise"]).tiles,
        again.stain(tiles, noise=v2["wsi_init_noise"]).tiles,
    )
