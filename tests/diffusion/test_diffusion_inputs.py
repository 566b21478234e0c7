"""Bad inputs give a one-line ParameterError naming the parameter, and no output."""

import contextlib

import numpy as np
import pytest
import torch
from diffusion_cases import REF_DIR

from napari_stainfuser.diffusion import StainFuser
from napari_stainfuser.errors import ParameterError


@pytest.fixture(scope="module")
def model():
    return StainFuser.load(REF_DIR / "checkpoint.safetensors", steps=2)


@contextlib.contextmanager
def raises_one_line(match):
    with pytest.raises(ParameterError, match=match) as info:
        yield info
    assert "\n" not in str(info.value)


def target_u8(ref):
    return (ref["target"][0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_tile_size_not_divisible_by_8(model, ref):
    model.set_target(target_u8(ref))
    with raises_one_line("tiles size 60×64 is not divisible by 8"):
        model.stain(torch.zeros((1, 3, 60, 64), dtype=torch.uint8))
    with raises_one_line("source size 64×36 is not divisible by 8"):
        model.sample(torch.rand(1, 3, 64, 36), model.target_latents)
    with raises_one_line("tile_size 60 is not divisible by 8"):
        StainFuser.load(REF_DIR / "checkpoint.safetensors", tile_size=60)


def test_target_smaller_than_64_px_or_without_tissue(model, ref):
    with raises_one_line("target: 32×64 px is smaller than 64 px a side"):
        model.set_target(target_u8(ref)[:32])
    # The low-level API takes tensors as given: they must fill the latent grid.
    with raises_one_line("smaller than the model's latent grid"):
        model.encode_target(torch.rand(1, 3, 56, 64))
    with raises_one_line("target: no tissue in the"):
        model.set_target(np.full((64, 64, 3), 200, np.uint8))
    with raises_one_line("target: no tissue in the"):
        model.set_target(np.full((80, 80, 3), 255, np.uint8))


def test_a_mostly_glass_target_is_used_with_a_warning(model, ref, caplog):
    glass = np.full((64, 128, 3), 245, np.uint8)
    glass[:, :40] = target_u8(ref)[:, :40]
    with caplog.at_level("WARNING"):
        model.set_target(glass)
    assert any("is tissue; the rest is glass" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda(tmp_path):
    # Refused before the (here nonexistent) weights are even looked at.
    with raises_one_line("'cuda' requested but CUDA is not available"):
        StainFuser.load(tmp_path / "missing.safetensors", device="cuda")
    with raises_one_line("'cuda:1' requested but CUDA is not available"):
        StainFuser.from_configs(REF_DIR, device="cuda:1")


def test_other_bad_parameters(model):
    with raises_one_line("sampler: 'heun' is unknown"):
        model.sample(torch.rand(1, 3, 64, 64), model.target_latents, sampler="heun")
    with raises_one_line(r"source must be in \[0, 1\]"):
        model.sample(torch.rand(1, 3, 64, 64) * 255, model.target_latents)
    with raises_one_line("tiles must be a uint8 torch tensor"):
        model.stain(torch.rand(1, 3, 64, 64))
    with raises_one_line("noise must have shape"):
        model.stain(torch.zeros((1, 3, 64, 64), dtype=torch.uint8), noise=torch.zeros(1, 4, 4, 4))
    with raises_one_line("precision 'fp16' needs CUDA"):
        StainFuser.load(REF_DIR / "checkpoint.safetensors", precision="fp16")
    fresh = StainFuser.load(REF_DIR / "checkpoint.safetensors")
    with raises_one_line("no target set"):
        fresh.stain(torch.zeros((1, 3, 64, 64), dtype=torch.uint8))


def test_x_t_must_match_the_sources_latent_grid(model):
    source = torch.rand(2, 3, 64, 64)
    latents = torch.zeros(1, 4, 8, 8)
    with raises_one_line(r"x_t must have shape \(2, 4, 8, 8\) .*64×64 source.*\(2, 4, 16, 16\)"):
        model.predict_noise(torch.zeros(2, 4, 16, 16), 10, source, latents)
    with raises_one_line(r"x_t must have shape \(2, 4, 8, 8\)"):
        model.predict_noise(torch.zeros(1, 4, 8, 8), 10, source, latents)
    with raises_one_line(r"x_t must have shape"):
        model.predict_noise(torch.zeros(2, 3, 8, 8), 10, source, latents)
    with raises_one_line("t must be a scalar or one timestep per tile"):
        model.predict_noise(torch.zeros(2, 4, 8, 8), torch.tensor([1, 2, 3]), source, latents)
    eps = model.predict_noise(torch.zeros(2, 4, 8, 8), torch.tensor([1, 2]), source, latents)
    assert eps.shape == (2, 4, 8, 8)
