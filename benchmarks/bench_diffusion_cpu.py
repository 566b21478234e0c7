"""StainFuser sampling on the CPU, tiny config: our stainer vs the official loop, same weights.

The anchor is a plain re-implementation of the official inference loop, written
from the description in tests/data/stainfuser-reference/README.md: for every
batch the target is repeated B times and VAE-encoded (posterior sample), the
latents are flattened to tokens, and each PNDM step runs the ControlNet and
then the UNet, each applying its projector to the tokens, with diffusers'
stock attention processors. Ours encodes the target once per slide, projects
the tokens once per batch and caches the cross-attention keys/values.

Both run interleaved in one process on the same weights and the same noise.

    python benchmarks/bench_diffusion_cpu.py [--tile 64] [--batch 8] [--steps 20]
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import PNDMScheduler
from diffusers.models.attention_processor import AttnProcessor2_0

from napari_stainfuser.diffusion import StainFuser, StainFuserNetworks

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


def evaluations(scheduler_config: dict, steps: int) -> int:
    """Network evaluations in one PNDM run (PLMS evaluates its warm-up step twice)."""
    scheduler = PNDMScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tile", type=int, default=64, help="tile and target edge (px)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = StainFuser.load(
        REF_DIR / "checkpoint.safetensors",
        config_dir=REF_DIR,
        steps=args.steps,
        tile_size=args.tile,  # the whole tile-sized target is used, as officially
        batch_size=args.batch,
    )
    official = stock_networks(model.networks)
    gen = torch.Generator().manual_seed(0)
    tiles = torch.randint(0, 256, (args.batch, 3, args.tile, args.tile), generator=gen).to(
        torch.uint8
    )
    target = torch.rand((3, args.tile, args.tile), generator=gen)
    f = model.multiple_of
    noise = torch.randn((args.batch, 4, args.tile // f, args.tile // f), generator=gen)
    n_eval = evaluations(model.configs.scheduler, args.steps)

    # Encoding the target is once per slide for us: outside the timed loop.
    model.set_target(target)

    def run_official():
        return official_stain(official, model.configs.scheduler, tiles, target, args.steps, noise)

    def run_ours():
        return model.stain(tiles, noise=noise).tiles

    for run in (run_official, run_ours):  # warm-up
        run()
    times = {"official": [], "ours": []}
    for _ in range(args.repeats):
        for name, run in (("official", run_official), ("ours", run_ours)):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)

    print(
        f"StainFuser CPU, tiny config ({REF_DIR.name}), {args.tile}² tiles, batch {args.batch}, "
        f"{args.steps} PNDM steps ({n_eval} network evaluations), "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(f"{'':10} {'s/batch':>9} {'ms/step':>9} {'tiles/s':>9}")
    medians = {}
    for name, ts in times.items():
        med = medians[name] = statistics.median(ts)
        print(f"{name:10} {med:9.3f} {med / n_eval * 1e3:9.2f} {args.batch / med:9.2f}")
    print(f"speed-up ours/official: {medians['official'] / medians['ours']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
