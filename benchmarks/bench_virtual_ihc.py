"""Virtual IHC: inference tiles/s, training steps/s, and quality against sampling steps.

In one run:

- **inference**: tiles/s of the model's ``stain`` at 256² and 512² (10 DDIM
  steps, one sample) next to the anchor, the same model with 1 step (the
  cost of one pass through the encoder and both branches);
- **training**: optimisation steps/s at the given tile and batch;
- **quality against steps**: on held-out synthetic CD3 pairs, the mask
  branch's Dice, the Dice of the virtual IHC's thresholded DAB (both against
  the true positive-cell mask) and the virtual IHC's PSNR at 5, 10, 20 and 50
  steps (DDIM and DPM-Solver++), beside the all-negative and all-positive
  baselines.

Quality needs a trained model: ``--weights RUN/`` (from ``stainfuser train
virtual-ihc`` or ``stainfuser demo --ihc``), else one is trained here on
synthetic pairs for ``--budget`` seconds. ``--config base --device cuda``
measures the GPU configuration.

    python benchmarks/bench_virtual_ihc.py
    python benchmarks/bench_virtual_ihc.py --weights stainfuser-demo-ihc/run --skip-train
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _rate(fn, n_items: int, repeat: int) -> float:
    fn()  # warm-up: oneDNN builds its kernels for a new shape once
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return n_items * repeat / (time.perf_counter() - t0)


def _dab_mask_dice(prediction: dict) -> float:
    """Dice of the virtual IHC's thresholded DAB with the true positive-cell mask."""
    import warnings

    # The demo's DAB mask for its 1 µm/px tiles (its model is the one measured here).
    from napari_stainfuser.cli.demo_ihc import DAB_MASK
    from napari_stainfuser.metrics.ihc import mask_metrics
    from napari_stainfuser.training.coarse_mask import NoDABWarning, coarse_mask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDABWarning)
        mask = coarse_mask(prediction["ihc"], **DAB_MASK)
    return mask_metrics(mask, prediction["reference"])["dice"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--weights", help="a trained run or checkpoint folder")
    ap.add_argument("--config", default="tiny", choices=("tiny", "base"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--budget", type=float, default=150.0, help="training seconds without --weights"
    )
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tile", type=int, default=64, help="training tile")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--steps", default="5,10,20,50", help="sampling steps for the quality table")
    ap.add_argument("--skip-train", action="store_true", help="no training-speed row")
    args = ap.parse_args()

    import torch

    from napari_stainfuser.diffusion.ihc_networks import build, preset
    from napari_stainfuser.diffusion.virtual_ihc import VirtualIHC
    from napari_stainfuser.training.ihc_data import write_synthetic_pairs
    from napari_stainfuser.training.ihc_eval import evaluate_virtual_ihc
    from napari_stainfuser.training.ihc_trainer import (
        IHCTrainConfig,
        read_loss_log,
        train_virtual_ihc,
    )

    tmp = Path(tempfile.mkdtemp(prefix="bench-ihc-"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    net = build(preset(args.config, ["CD3"], args.tile)).to(args.device).eval()
    n_params = sum(p.numel() for p in net.parameters())
    print(f"model: {args.config}, {n_params / 1e6:.2f}M parameters")

    print("\ninference (one sample; tiles/s)")
    print(f"{'tile':>6} {'10 steps':>10} {'anchor: 1 step':>15}")
    for size in (256, 512):
        tiles = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8)
        rates = []
        for steps in (10, 1):
            model = VirtualIHC(net, "CD3", steps=steps, device=args.device)
            rates.append(_rate(lambda m=model, t=tiles: m.stain(t), 1, args.repeat))
        print(f"{size:>5}² {rates[0]:>10.3f} {rates[1]:>15.3f}")

    pairs = tmp / "train"
    write_synthetic_pairs(pairs, 96, tile=128, marker="CD3", seed=11, mpp=1.0)
    weights = args.weights
    if not args.skip_train or weights is None:
        budget = args.budget if weights is None else 30.0
        cfg = IHCTrainConfig(
            pairs=[str(pairs)], markers=["CD3"], out=str(tmp / "run"), config=args.config,
            tile=args.tile, batch_size=args.batch_size, steps=100_000, mpp=1.0,
            checkpoint_every=100_000, progress=False, device=args.device,
        )  # fmt: skip
        trained = train_virtual_ihc(cfg, budget_s=budget)
        log = read_loss_log(tmp / "run")
        secs = [r["seconds"] for r in log[3:]] or [r["seconds"] for r in log]
        print(f"\ntraining: {1 / np.median(secs):.2f} steps/s ({args.batch_size} × {args.tile}²,"
              f" median of {len(secs)} steps)")  # fmt: skip
        print(f"  losses: IHC {log[0]['ihc_loss']:.4f} -> {log[-1]['ihc_loss']:.4f}, "
              f"mask {log[0]['mask_loss']:.4f} -> {log[-1]['mask_loss']:.4f} in {len(log)} steps")  # fmt: skip
        weights = weights or trained

    held_out = tmp / "held-out"
    write_synthetic_pairs(held_out, 8, tile=128, marker="CD3", seed=23, mpp=1.0)
    print(f"\nquality against steps on 8 held-out synthetic CD3 pairs ({weights})")
    print(f"{'sampler':>8} {'steps':>6} {'mask Dice':>10} {'DAB-mask Dice':>14} {'PSNR (dB)':>10} "
          f"{'s/tile':>8}")  # fmt: skip
    baselines = None
    for sampler in ("ddim", "dpm++"):
        for steps in (int(s) for s in args.steps.split(",")):
            model = VirtualIHC.load(weights, marker="CD3", steps=steps, sampler=sampler,
                                    device=args.device, tile_size=128)  # fmt: skip
            t0 = time.perf_counter()
            ev = evaluate_virtual_ihc(held_out, model, keep=True)
            per = (time.perf_counter() - t0) / 8
            mean = ev.rows[-1]
            baselines = ev.baselines
            dab = np.mean([_dab_mask_dice(p) for p in ev.predictions.values()])
            print(f"{sampler:>8} {steps:>6} {mean['mask_dice']:>10.3f} {dab:>14.3f} "
                  f"{mean['psnr']:>10.2f} {per:>8.2f}")  # fmt: skip
    for label, values in (baselines or {}).items():
        print(f"{'baseline':>8} {label:>15}: mask Dice {values['mask_dice']:.3f} "
              "(the same for the DAB mask: both are scored against the true mask)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
