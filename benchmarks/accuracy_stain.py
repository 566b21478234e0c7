"""Accuracy of the four classical normalizers against ground truth, on synthetic pairs.

The synthetic slide's tissue is rendered twice, pixel-aligned: with stain
matrix A (Ruifrok's H&E; the input) and with matrix B (the H&E reference
vectors of Macenko's code; the ground truth), optionally with B's stain
amounts scaled; or, to test intensity alone, with one matrix and A's amounts
scaled. Each method is fitted on B's rendering of a *different*
region of the same slide (the target), then normalizes A; the table gives
PSNR, SSIM and mean ΔE2000 against B's rendering of the same region.

Run: python benchmarks/accuracy_stain.py [--size 2048]
"""

import argparse
import time

from napari_stainfuser.metrics import image_metrics
from napari_stainfuser.slide.synthetic import MACENKO_REFERENCE_HE, synthetic_pair
from napari_stainfuser.stain import RUIFROK_HE, get_normalizer

METHODS = ("macenko", "reinhard", "vahadane", "ruifrok")
# (title, matrix A, stain amounts of A, matrix B, stain amounts of B)
SCENARIOS = (
    ("matrix A → B", RUIFROK_HE, 1.0, MACENKO_REFERENCE_HE, 1.0),
    ("matrix A → B, B's stain amounts × 1.3", RUIFROK_HE, 1.0, MACENKO_REFERENCE_HE, 1.3),
    (
        "intensity only: one matrix, input under-stained (amounts × 0.7)",
        RUIFROK_HE,
        0.7,
        RUIFROK_HE,
        1.0,
    ),
    (
        "intensity only: one matrix, input over-stained (amounts × 1.4)",
        RUIFROK_HE,
        1.4,
        RUIFROK_HE,
        1.0,
    ),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shape = (args.size, args.size)
    for title, matrix_a, scale_a, matrix_b, scale_b in SCENARIOS:
        kw = dict(
            seed=args.seed, matrix_a=matrix_a, scale_a=scale_a, matrix_b=matrix_b, scale_b=scale_b
        )
        a, truth = (x.compute() for x in synthetic_pair(shape, **kw))
        target = synthetic_pair(shape, origin=(0, 3 * args.size), **kw)[1].compute()
        print(f"\n{title} ({args.size}×{args.size}, seed {args.seed}; target: another region)\n")
        print("| method | PSNR (dB) ↑ | SSIM ↑ | mean ΔE2000 ↓ | time (s) |")
        print("|---|---:|---:|---:|---:|")
        m = image_metrics(a, truth)
        print(f"| none (input) | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['delta_e2000']:.2f} | |")
        for method in METHODS:
            t0 = time.perf_counter()
            norm = get_normalizer(method).fit(target)
            out = norm.transform(a)
            dt = time.perf_counter() - t0
            m = image_metrics(out, truth)
            print(
                f"| {method} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['delta_e2000']:.2f} | {dt:.1f} |"
            )


if __name__ == "__main__":
    main()
