"""Half precision: the VAE stays in float32 when its config asks for ``force_upcast``.

SD2.1's VAE overflows in float16, so its config carries ``force_upcast``
(training honours it too). CPU float16 weights run here, which exercises the
weight path; float16 autocast needs CUDA, so its decision is checked directly.
"""

import json
import shutil

import torch
from diffusion_cases import REF_DIR

from napari_stainfuser.diffusion import StainFuser
from napari_stainfuser.diffusion.model import vae_runs_fp32

WEIGHTS = REF_DIR / "checkpoint.safetensors"


def test_fp16_weights_keep_a_force_upcast_vae_in_fp32(ref):
    assert json.loads((REF_DIR / "vae_config.json").read_text())["force_upcast"] is True
    half = StainFuser.load(WEIGHTS, dtype=torch.float16)
    full = StainFuser.load(WEIGHTS)
    assert half.networks.noise_predictor.dtype == torch.float16
    assert half.networks.conditioner.dtype == torch.float16
    assert half.networks.encoder.dtype == torch.float32
    # The VAE weights were read in float32, never rounded through float16: the
    # encoder and decoder give the float32 model's results exactly.
    assert torch.equal(half.encode_target(ref["target"]), full.encode_target(ref["target"]))
    latents = ref["final_latents"]
    assert torch.equal(half.decode(latents), full.decode(latents))
    # The half-precision networks still sample end to end.
    out = half.sample(ref["source"], ref["target_latents"], steps=2, init_noise=ref["init_noise"])
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_random_fp16_model_upcasts_its_vae_too():
    model = StainFuser.from_configs(REF_DIR, dtype=torch.float16, init_seed=0)
    assert model.networks.encoder.dtype == torch.float32
    assert model.networks.noise_predictor.dtype == torch.float16


def test_without_force_upcast_the_vae_follows_the_weights(tmp_path):
    for name in ("unet_config.json", "scheduler_config.json"):
        shutil.copy(REF_DIR / name, tmp_path / name)
    vae = json.loads((REF_DIR / "vae_config.json").read_text())
    vae["force_upcast"] = False
    (tmp_path / "vae_config.json").write_text(json.dumps(vae))
    model = StainFuser.load(WEIGHTS, config_dir=tmp_path, dtype=torch.float16)
    assert model.networks.encoder.dtype == torch.float16


def test_upcast_decision():
    # fp16 (weights, or CUDA autocast) overflows; bf16 has float32's exponent range.
    assert vae_runs_fp32({"force_upcast": True}, torch.float16)
    assert not vae_runs_fp32({"force_upcast": True}, torch.bfloat16)
    assert not vae_runs_fp32({"force_upcast": True}, torch.float32)
    assert not vae_runs_fp32({"force_upcast": False}, torch.float16)
    assert not vae_runs_fp32({}, torch.float16)
