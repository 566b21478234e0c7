"""Sampling behaviour: determinism, supplied noise, schedulers, and encoding the target once."""

import pytest
import torch
from diffusion_cases import REF_DIR

from napari_stainfuser.diffusion import StainFuser, make_sampler
from napari_stainfuser.stainer import Stainer


@pytest.fixture
def model():
    return StainFuser.load(REF_DIR / "checkpoint.safetensors", steps=4, batch_size=2)


def count_calls(monkeypatch, obj, name):
    """Wrap the real ``obj.name`` so that its calls are counted; behaviour is unchanged."""
    calls = []
    real = getattr(obj, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, counted)
    return calls


def test_same_seed_same_output(model, ref):
    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return model.sample(ref["source"], ref["target_latents"], steps=4, generator=gen)

    first, again, other = run(7), run(7), run(8)
    assert torch.equal(first, again)
    assert float((first - other).abs().max()) > 1e-3


def test_init_noise_is_honoured(model, ref):
    noise = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    given = model.sample(ref["source"], ref["target_latents"], steps=4, init_noise=noise)
    seeded = model.sample(
        ref["source"], ref["target_latents"], steps=4, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(given, seeded)
    # Each tile depends only on its own slice of the noise: what the tiler relies on.
    alone = model.sample(
        ref["source"][1:], ref["target_latents"][1:], steps=4, init_noise=noise[1:]
    )
    torch.testing.assert_close(alone, given[1:], rtol=0, atol=1e-4)
    other = model.sample(ref["source"], ref["target_latents"], steps=4, init_noise=-noise)
    assert float((other - given).abs().max()) > 1e-3


@pytest.mark.parametrize("name", ["pndm", "ddim", "dpm++", "euler"])
def test_schedulers_run_their_steps(monkeypatch, model, ref, name):
    calls = count_calls(monkeypatch, model.networks, "predict_noise")
    out = model.sample(
        ref["source"], ref["target_latents"], steps=5, sampler=name, init_noise=ref["init_noise"]
    )
    assert out.shape == ref["source"].shape
    assert torch.isfinite(out).all()
    # One network evaluation per scheduler timestep (PLMS repeats its warm-up step).
    scheduler = make_sampler(name, model.configs.scheduler)
    scheduler.set_timesteps(5)
    assert len(calls) == len(scheduler.timesteps)


def test_schedulers_differ(model, ref):
    outs = {
        name: model.sample(
            ref["source"],
            ref["target_latents"],
            steps=5,
            sampler=name,
            init_noise=ref["init_noise"],
        )
        for name in ("ddim", "dpm++")
    }
    assert float((outs["ddim"] - outs["dpm++"]).abs().max()) > 1e-4


def test_target_is_encoded_once(monkeypatch, model, ref):
    calls = count_calls(monkeypatch, model.networks.encoder, "encode")
    target = (ref["target"][0] * 255).to(torch.uint8)  # 3×H×W
    model.set_target(target)
    tiles = (ref["source"].repeat(2, 1, 1, 1)[:3] * 255).to(torch.uint8)
    first = model.stain(tiles)  # 3 tiles in batches of 2
    second = model.stain(tiles)
    assert len(calls) == 1
    assert torch.equal(first.tiles, second.tiles)  # no noise given: seeded, deterministic


def test_stainer_protocol_and_spec(model):
    assert isinstance(model, Stainer)
    spec = model.spec
    assert spec.per_pixel is False and spec.deterministic is True
    assert spec.multiple_of == 8 and spec.latent_channels == 4 and spec.latent_factor == 8
    assert spec.tile_size == 64  # the tiny config's latent grid (8) × 8
    assert spec.mpp == 0.5 and spec.overlap == 16 and spec.device == "cpu"


def test_large_target_is_centre_cropped(model, ref):
    big = torch.rand((3, 80, 96), generator=torch.Generator().manual_seed(0))
    latents = model.set_target(big)
    crop = big[:, 8:72, 16:80].unsqueeze(0)
    torch.testing.assert_close(latents, model.encode_target(crop), rtol=0, atol=1e-6)


def test_sampled_posterior_is_reproducible(model, ref):
    a = model.encode_target(ref["target"], sample=True, generator=torch.Generator().manual_seed(1))
    b = model.encode_target(ref["target"], sample=True, generator=torch.Generator().manual_seed(1))
    mean = model.encode_target(ref["target"])
    assert torch.equal(a, b)
    assert float((a - mean).abs().max()) > 0


def test_vae_tiling_for_large_tiles(monkeypatch, model, ref):
    # The tiny VAE's sample size is 64 px, so 128² tiles are decoded in overlapping pieces.
    source = torch.rand((1, 3, 128, 128), generator=torch.Generator().manual_seed(2))
    noise = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(2))
    whole = model.sample(source, ref["target_latents"][:1], steps=2, init_noise=noise)
    model.enable_vae_tiling()
    calls = count_calls(monkeypatch, model.networks.encoder, "tiled_decode")
    tiled = model.sample(source, ref["target_latents"][:1], steps=2, init_noise=noise)
    assert len(calls) == 1
    # GroupNorm statistics are per piece, so values differ from a whole-tile decode.
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()


def test_target_between_grid_and_tile_is_used_whole(ref):
    model = StainFuser.load(REF_DIR / "checkpoint.safetensors", tile_size=128)
    target = torch.rand((3, 100, 84), generator=torch.Generator().manual_seed(4))
    latents = model.set_target(target)
    # Cropped only to multiples of 8 (96×80), centred: every latent token of the target.
    crop = target[:, 2:98, 2:82].unsqueeze(0)
    assert latents.shape == (1, 4, 12, 10)
    torch.testing.assert_close(latents, model.encode_target(crop), rtol=0, atol=1e-6)


def test_tile_size_below_the_latent_grid_still_gets_a_full_grid_target(ref):
    # The tiny model's grid is 64 px; 32 px tiles are valid sources, but the
    # target is cropped to the grid, not to the tile.
    model = StainFuser.load(REF_DIR / "checkpoint.safetensors", tile_size=32)
    target = torch.rand((3, 80, 96), generator=torch.Generator().manual_seed(5))
    latents = model.set_target(target)
    assert latents.shape == (1, 4, 8, 8)
    crop = target[:, 8:72, 16:80].unsqueeze(0)
    torch.testing.assert_close(latents, model.encode_target(crop), rtol=0, atol=1e-6)
    tiles = (ref["source"][:, :, :32, :32] * 255).to(torch.uint8)
    out = model.stain(tiles).tiles
    assert out.shape == tiles.shape and out.dtype == torch.uint8


def test_a_target_smaller_than_the_latent_grid_is_scaled_up(tmp_path, ref):
    # A model whose latent grid is 128 px (16² latents): a 64×100 target, once
    # refused, is scaled up bilinearly until its short side fills the grid
    # (128×200), then centre-cropped to the grid as any larger target is.
    import json
    import shutil

    import torch.nn.functional as F

    for name in ("vae_config.json", "scheduler_config.json"):
        shutil.copy(REF_DIR / name, tmp_path / name)
    unet = json.loads((REF_DIR / "unet_config.json").read_text())
    unet["sample_size"] = 16
    (tmp_path / "unet_config.json").write_text(json.dumps(unet))
    model = StainFuser.from_configs(tmp_path, init_seed=0)
    assert model.networks.target_size == 128
    small = (ref["target"][0] * 255).round().to(torch.uint8)[:, :, :64]  # 3×64×64
    small = torch.cat([small, small[:, :, :36]], dim=2)  # 3×64×100
    latents = model.set_target(small.permute(1, 2, 0).numpy())
    assert latents.shape == (1, 4, 16, 16)
    grown = F.interpolate(small[None].float() / 255, size=(128, 200), mode="bilinear")
    crop = grown.clamp(0, 1)[..., :, 36:164]
    torch.testing.assert_close(latents, model.encode_target(crop), rtol=0, atol=1e-5)
