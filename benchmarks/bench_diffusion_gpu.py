"""StainFuser on a GPU, full SD2.1-base size, random weights, 512² tiles.

Anchor: the official setting, re-implemented in _diffusion_common.py
(`official_stain`): batch 8, 20 PNDM steps, the target VAE-encoded for every
batch, stock diffusers attention; in fp32 (the official default) and with the
official ``--fp16`` option (fp32 weights under fp16 autocast), against which
our speed-up is stated.

Ours, on the same weights: fp16 weights, channels-last, the target encoded
once per slide, the source embedding and the target's cross-attention
keys/values computed once per batch instead of once per step,
cuDNN autotuning and torch.compile. Then ours with DPM-Solver++ at 10 and 5 steps.

For every row: tiles/s over timed batches (after warm-up and compilation) and
peak GPU memory (weights included) while that setting ran.

    python benchmarks/bench_diffusion_gpu.py                      # needs CUDA
    python benchmarks/bench_diffusion_gpu.py --device cpu --tiny  # smoke test of the script
"""

import argparse
import copy
import functools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _diffusion_common import REF_DIR, evaluations, official_stain, stock_networks  # noqa: E402
from napari_stainfuser.diffusion import StainFuser, build_networks, load_configs  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name, run, device, batch, repeats, evaluations):
    """Warm up (compiles, autotunes), then time ``repeats`` batches."""
    start = time.perf_counter()
    run()
    synchronize(device)
    warmup = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    synchronize(device)
    elapsed = (time.perf_counter() - start) / repeats
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "name": name,
        "tiles_per_s": batch / elapsed,
        "ms_per_eval": elapsed / evaluations * 1e3,
        "peak_gib": peak,
        "warmup_s": warmup,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny test config, 64² tiles")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "bench_diffusion_gpu: no CUDA GPU on this machine (torch "
            f"{torch.__version__}); run it on a GPU, or smoke-test with --device cpu --tiny",
            file=sys.stderr,
        )
        return 2
    on_gpu = device.type == "cuda"
    config_dir = REF_DIR if args.tiny else None
    configs = load_configs(config_dir)
    tile = 64 if args.tiny else 512
    compile_ours = not args.no_compile and on_gpu

    torch.manual_seed(0)
    networks = build_networks(configs, device=device, controlnet_from_unet=True).eval()
    networks.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    tiles = torch.randint(0, 256, (args.batch, 3, tile, tile), generator=gen).to(torch.uint8)
    target = torch.rand((3, tile, tile), generator=gen)
    noise = torch.randn((args.batch, 4, tile // 8, tile // 8), generator=gen)
    tiles_dev, target_dev, noise_dev = tiles.to(device), target.to(device), noise.to(device)

    # Ours gets an fp16 copy, parked on the CPU while the official setting runs.
    ours_networks = copy.deepcopy(networks).to("cpu")
    if on_gpu:
        ours_networks.half()
    official = stock_networks(networks, copy_first=False)
    del networks
    amp = torch.float16 if on_gpu else None
    rows = []
    n_pndm = evaluations(configs.scheduler, args.steps, "pndm")

    # The official default (fp32), and on a GPU also its --fp16 option (fp16 autocast).
    settings = (
        [("fp32 (its default)", None), ("fp16 autocast (its --fp16)", amp)]
        if amp
        else [("fp32", None)]
    )
    for precision, autocast in settings:
        rows.append(
            measure(
                f"official: PNDM {args.steps}, {precision}",
                functools.partial(
                    official_stain,
                    official,
                    configs.scheduler,
                    tiles_dev,
                    target_dev,
                    args.steps,
                    noise_dev,
                    autocast,
                ),
                device,
                args.batch,
                args.repeats,
                n_pndm,
            )  # fmt: skip
        )
    del official
    if on_gpu:
        torch.cuda.empty_cache()
        torch.backends.cudnn.benchmark = True

    model = StainFuser(
        ours_networks,
        device=device,
        precision="fp16" if on_gpu else "fp32",
        batch_size=args.batch,
        steps=args.steps,
        tile_size=tile,
        channels_last=on_gpu,
    )
    model.set_target(target_dev)

    def ours(scheduler, steps):
        model.sampler, model.steps = scheduler, steps
        return model.stain(tiles_dev, noise=noise_dev).tiles

    rows.append(
        measure(
            f"ours: PNDM {args.steps}, no compile",
            lambda: ours("pndm", args.steps),
            device,
            args.batch,
            args.repeats,
            n_pndm,
        )
    )
    if compile_ours:
        model.compile()
        rows.append(
            measure(
                f"ours: PNDM {args.steps}, compiled",
                lambda: ours("pndm", args.steps),
                device,
                args.batch,
                args.repeats,
                n_pndm,
            )
        )
    for steps in (10, 5):
        rows.append(
            measure(
                f"ours: DPM-Solver++ {steps}",
                lambda steps=steps: ours("dpm++", steps),
                device,
                args.batch,
                args.repeats,
                evaluations(configs.scheduler, steps, "dpm++"),
            )
        )

    name = torch.cuda.get_device_name(device) if on_gpu else "CPU"
    size = "tiny test config" if args.tiny else "SD2.1-base, random weights"
    print(
        f"StainFuser {size}, {tile}² tiles, batch {args.batch}, {name}, "
        f"torch {torch.__version__}, {args.repeats} timed batches per row"
    )
    print(f"{'setting':34} {'tiles/s':>8} {'ms/eval':>8} {'peak GiB':>9} {'warm-up s':>10}")
    # Ratios are to the fastest official setting (with --fp16 on a GPU).
    base = [r for r in rows if r["name"].startswith("official")][-1]["tiles_per_s"]
    for r in rows:
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "n/a"
        print(
            f"{r['name']:34} {r['tiles_per_s']:8.2f} {r['ms_per_eval']:8.1f} {peak:>9} "
            f"{r['warmup_s']:10.1f}   x{r['tiles_per_s'] / base:.2f}"
        )
    same_steps = [r for r in rows if r["name"].startswith("ours: PNDM")]
    best = max(same_steps, key=lambda r: r["tiles_per_s"])
    print(
        f"ours at the official steps vs the fastest official setting: {best['tiles_per_s'] / base:.2f}x "
        "(target >= 2x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
