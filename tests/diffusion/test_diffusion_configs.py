"""Built-in SD2.1-base configs and the full-size model on the meta device."""

import json

import torch
from diffusion_cases import REF_DIR

from napari_stainfuser.diffusion import StainFuser, build_networks, load_configs, model_size
from napari_stainfuser.diffusion.configs import DEFAULT_CONFIG_DIR


def test_full_size_model_on_meta_device():
    size = model_size()
    # Published component sizes of Stable Diffusion 2.1-base (diffusers model cards).
    assert size.parameters["unet"] == 865_910_724
    assert size.parameters["vae"] == 83_653_863
    # Two Linear(4 -> 1024) projectors.
    assert size.parameters["projectors"] == 2 * (4 * 1024 + 1024)
    # The published fp32 checkpoint is 5.26 GB; its header adds only kilobytes.
    assert abs(size.weight_bytes(torch.float32) - 5.26e9) / 5.26e9 < 0.005
    nets = build_networks(load_configs(), device="meta")
    assert all(p.is_meta for p in nets.parameters())


def test_builtin_configs_are_sd21_base():
    configs = load_configs()
    assert configs.unet["cross_attention_dim"] == 1024
    assert configs.unet["block_out_channels"] == [320, 640, 1280, 1280]
    assert configs.vae["scaling_factor"] == 0.18215
    assert configs.scheduler["skip_prk_steps"] is True
    assert configs.scheduler["steps_offset"] == 1
    # The fixture's scheduler is the same PNDM setting, only the networks were shrunk.
    fixture = json.loads((REF_DIR / "scheduler_config.json").read_text())
    assert {k: v for k, v in fixture.items() if not k.startswith("_")} == configs.scheduler
    assert sorted(p.name for p in DEFAULT_CONFIG_DIR.glob("*.json")) == [
        "scheduler_config.json",
        "unet_config.json",
        "vae_config.json",
    ]


def test_tiny_config_size():
    size = model_size(REF_DIR)
    nets = build_networks(load_configs(REF_DIR), device="meta")
    assert size.total == sum(p.numel() for p in nets.parameters())
    assert size.parameters["projectors"] == 2 * (4 * 32 + 32)


def test_init_seed_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = StainFuser.from_configs(REF_DIR, init_seed=4)
    after = torch.rand(3)
    assert torch.equal(after, expected)  # the caller's random stream is untouched
    b = StainFuser.from_configs(REF_DIR, init_seed=4)
    c = StainFuser.from_configs(REF_DIR, init_seed=5)
    sa, sb, sc = (m.networks.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
