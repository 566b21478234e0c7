"""StainFuser sampling on the CPU, tiny config: our stainer vs the official loop, same weights.

The anchor is a plain re-implementation of the official inference loop
(``_diffusion_common.official_stain``): the target VAE-encoded for every batch,
its tokens projected at every step, diffusers' stock attention. Ours encodes the target once per slide, projects
the tokens once per batch and caches the cross-attention keys/values.

Both run interleaved in one process on the same weights and the same noise.

    python benchmarks/bench_diffusion_cpu.py [--tile 64] [--batch 8] [--steps 20]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _diffusion_common import REF_DIR, evaluations, official_stain, stock_networks  # noqa: E402
from napari_stainfuser.diffusion import StainFuser  # noqa: E402


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
