"""Shared by the diffusion benchmarks: the official inference loop, re-implemented.

The anchor is a plain re-implementation of the official inference loop, written
from the description in tests/data/stainfuser-reference/README.md: for every
batch the target is repeated B times and VAE-encoded (posterior sample), the
latents are flattened to tokens, and each PNDM step runs the ControlNet and
then the UNet, each applying its projector to the tokens, with diffusers'
stock attention processors.
"""

import copy
from pathlib import Path

import torch
from diffusers import PNDMScheduler
from diffusers.models.attention_processor import AttnProcessor2_0

from napari_stainfuser.diffusion import StainFuserNetworks, make_sampler

REF_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "stainfuser-reference"


def stock_networks(networks: StainFuserNetworks, copy_first: bool = True) -> StainFuserNetworks:
    """``networks`` (or a copy) with diffusers' default attention everywhere.

    The source embedding keeps our subclass: given RGB it runs the stock code.
    """
    twin = copy.deepcopy(networks) if copy_first else networks
    twin.conditioner.set_attn_processor(AttnProcessor2_0())
    twin.noise_predictor.set_attn_processor(AttnProcessor2_0())
    return twin


@torch.no_grad()
def official_stain(
    networks: StainFuserNetworks,
    scheduler_config: dict,
    tiles: torch.Tensor,
    target: torch.Tensor,
    steps: int,
    init_noise: torch.Tensor,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The official per-batch inference: uint8 tiles B×3×H×W, target 3×H×W in [0, 1]."""
    device = init_noise.device
    vae, controlnet, unet = networks.encoder, networks.conditioner, networks.noise_predictor
    amp = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else torch.autocast(device_type=device.type, enabled=False)
    )
    with amp:
        source = tiles.to(device).float() / 255.0
        batch = source.shape[0]
        scheduler = PNDMScheduler.from_config(scheduler_config)
        scheduler.set_timesteps(steps, device=device)
        targets = target.unsqueeze(0).repeat(batch, 1, 1, 1).to(device)
        target_latents = vae.encode(targets).latent_dist.sample() * vae.config.scaling_factor
        channels = target_latents.shape[1]
        tokens = target_latents.reshape(batch, channels, -1).permute(0, 2, 1)
        latents = init_noise * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(latents, t)
            down, mid = controlnet(
                model_input,
                t,
                encoder_hidden_states=controlnet.encoder_projector(tokens),
                controlnet_cond=source,
                return_dict=False,
            )
            eps = unet(
                model_input,
                t,
                encoder_hidden_states=unet.encoder_projector(tokens),
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
                return_dict=False,
            )[0]
            latents = scheduler.step(eps, t, latents, return_dict=False)[0]
        images = vae.decode(latents / vae.config.scaling_factor).sample
    return ((images.float().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)


def evaluations(scheduler_config: dict, steps: int, scheduler: str = "pndm") -> int:
    """Network evaluations in one sampling run (PLMS evaluates its warm-up step twice)."""
    s = make_sampler(scheduler, scheduler_config)
    s.set_timesteps(steps)
    return len(s.timesteps)
