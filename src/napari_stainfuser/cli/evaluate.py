"""``stainfuser evaluate``: score a virtual-IHC model on paired tiles."""

from ..methods import IHC_SAMPLERS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a virtual-IHC model on paired H&E/IHC tiles (PSNR, SSIM, DAB and mask Dice)",
        description="Run the model on every pair's H&E and compare: PSNR and SSIM; Dice, IoU "
        "and HD95 between the DAB masks of the real and the virtual IHC (one colour "
        "deconvolution for both); Pearson correlation of DAB density over tissue; and the "
        "mask branch's Dice against the pair's mask (mask/ if present, else the real IHC's "
        "coarse mask). Writes one CSV row per tile plus a mean row, and prints the mean "
        "beside the all-negative and all-positive baselines.",
    )
    p.add_argument("--pairs", required=True, help="pair folder (he/, ihc/, optional mask/)")
    p.add_argument("--weights", help="training run or checkpoint folder")
    p.add_argument("--marker", help="marker of these pairs (default: the checkpoint's only one)")
    p.add_argument("-o", "--output", required=True, help="metrics.csv")
    p.add_argument("--steps", type=int, default=10, help="sampling steps (default: 10)")
    p.add_argument("--sampler", default="ddim", help=f"{', '.join(IHC_SAMPLERS)} (ddim)")
    p.add_argument("--samples", type=int, default=1, help="samples per pixel (1)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..diffusion.virtual_ihc import VirtualIHC
    from ..metrics.ihc import format_table, write_metrics_csv
    from ..training.ihc_data import find_pairs
    from ..training.ihc_eval import evaluate_virtual_ihc

    find_pairs(args.pairs, args.marker or "", min_size=1)  # the folder first, before the model
    model = VirtualIHC.load(
        args.weights, marker=args.marker, device=args.device, steps=args.steps,
        sampler=args.sampler, samples=args.samples, seed=args.seed,
    )  # fmt: skip
    ev = evaluate_virtual_ihc(args.pairs, model)
    write_metrics_csv(args.output, ev.rows)
    print(format_table(ev.rows, ev.baselines))
    print(f"wrote {Path(args.output)}")
    return 0
