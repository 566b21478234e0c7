"""Virtual IHC on real serial sections: rat-kidney H&E and pan-cytokeratin (PanCK).

In one run:

1. register the two sections (hematoxylin correlation, registered vs centred);
2. make pairs (``make_ihc_pairs``) with coarse masks from the real IHC;
3. hold out the right quarter of the section (by tile position), train the tiny
   model on the rest for ``--budget`` seconds;
4. evaluate on the held-out tiles: the virtual IHC's DAB-mask Dice against the
   real IHC's (one colour deconvolution for both), and the mask branch's Dice,
   each beside the all-negative and all-positive baselines.

The sections are downscaled to 5 % (``tests/data/he-ihc-serial``), so a tile
of 64 px covers what 1280 px cover at full resolution.

    python benchmarks/bench_virtual_ihc_real.py --budget 240
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

DATA = Path(__file__).parents[1] / "tests" / "data" / "he-ihc-serial"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--budget", type=float, default=240.0, help="training seconds")
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--min-size", type=int, default=8, help="coarse mask: smallest object, px")
    ap.add_argument("--closing-radius", type=int, default=1)
    args = ap.parse_args()

    from napari_stainfuser.diffusion.virtual_ihc import VirtualIHC
    from napari_stainfuser.metrics.ihc import baseline_metrics, mask_metrics
    from napari_stainfuser.training.coarse_mask import NoDABWarning, coarse_mask
    from napari_stainfuser.training.ihc_eval import evaluate_virtual_ihc
    from napari_stainfuser.training.ihc_pairs import make_ihc_pairs
    from napari_stainfuser.training.ihc_trainer import (
        IHCTrainConfig,
        read_loss_log,
        train_virtual_ihc,
    )

    warnings.simplefilter("ignore", NoDABWarning)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ihc-real-"))
    params = {"min_size": args.min_size, "closing_radius": args.closing_radius}
    made = make_ihc_pairs(
        DATA / "rat-kidney-HE.jpg", DATA / "rat-kidney-PanCK.jpg", tmp / "pairs",
        marker="PanCK", tile=args.tile, mask_params=params,
    )  # fmt: skip
    reg = made.registration
    print(f"registration: hematoxylin correlation {reg.score:.3f} (centred, unregistered "
          f"{reg.unregistered_score:.3f}); tiles kept {made.kept}, skipped {made.skipped}")  # fmt: skip

    with open(tmp / "pairs" / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "kept"]
    cut = sorted(int(r["he_x"]) for r in rows)[int(len(rows) * 0.75)]
    for r in rows:
        dst = tmp / ("held-out" if int(r["he_x"]) >= cut else "train")
        for sub in ("he", "ihc", "mask"):
            (dst / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp / "pairs" / sub / f"{r['name']}.png", dst / sub / f"{r['name']}.png")
    n_train = len(list((tmp / "train" / "he").iterdir()))
    n_test = len(list((tmp / "held-out" / "he").iterdir()))
    print(f"split by position: {n_train} training tiles, {n_test} held-out tiles")

    cfg = IHCTrainConfig(
        pairs=[str(tmp / "train")], markers=["PanCK"], out=str(tmp / "run"), steps=100_000,
        tile=args.tile, batch_size=8, lr=2e-3, checkpoint_every=100_000, progress=False,
        device="cpu",
    )  # fmt: skip
    t0 = time.perf_counter()
    checkpoint = train_virtual_ihc(cfg, budget_s=args.budget)
    log = read_loss_log(tmp / "run")
    print(f"trained {len(log)} steps in {time.perf_counter() - t0:.0f} s: IHC loss "
          f"{log[0]['ihc_loss']:.4f} -> {log[-1]['ihc_loss']:.4f}, mask loss "
          f"{log[0]['mask_loss']:.4f} -> {log[-1]['mask_loss']:.4f}")  # fmt: skip

    model = VirtualIHC.load(checkpoint, marker="PanCK", steps=10, tile_size=args.tile)
    ev = evaluate_virtual_ihc(tmp / "held-out", model, keep=True)
    ours, neg, pos, positive_tiles = [], [], [], 0
    for p in ev.predictions.values():
        real = coarse_mask(p["real"], **params)
        positive_tiles += bool(real.any())
        ours.append(mask_metrics(coarse_mask(p["ihc"], **params), real)["dice"])
        base = baseline_metrics(real)
        neg.append(base["all-negative"]["mask_dice"])
        pos.append(base["all-positive"]["mask_dice"])
    mean = ev.rows[-1]
    print(
        f"held-out tiles with any DAB-positive pixel in the real IHC: {positive_tiles} of {n_test}"
    )
    print(f"{'':<28}{'ours':>8}{'all-negative':>14}{'all-positive':>14}")
    print(f"{'virtual IHC DAB-mask Dice':<28}{np.mean(ours):>8.3f}{np.mean(neg):>14.3f}"
          f"{np.mean(pos):>14.3f}")  # fmt: skip
    b = ev.baselines
    print(f"{'mask branch Dice':<28}{mean['mask_dice']:>8.3f}"
          f"{b['all-negative']['mask_dice']:>14.3f}{b['all-positive']['mask_dice']:>14.3f}")  # fmt: skip
    print(
        f"PSNR {mean['psnr']:.2f} dB, SSIM {mean['ssim']:.3f}, DAB Pearson {mean['dab_pearson']:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
