"""`stainfuser normalize`: re-render a whole slide in a target stain."""

from ..methods import METHODS, SAMPLERS
from ._run import add_run_options, checked_output, run_options
from ._run import run as run_slide


def add_parser(sub) -> None:
    p = sub.add_parser(
        "normalize",
        help="re-render a whole slide in a target stain (classical or StainFuser)",
        description="Stain a whole slide toward a target image, slide region or stain preset "
        "and write a pyramidal OME-TIFF or OME-Zarr. Every option is checked before any work "
        "starts. Work is committed tile by tile: an interrupted run continues with --resume.",
    )
    p.add_argument("slide", help="source slide (SVS, NDPI, TIFF, OME-TIFF, OME-Zarr, PNG, JPEG)")
    p.add_argument("--target", required=True, help="target image, slide, or stain preset JSON")
    p.add_argument(
        "--method", default="macenko", help=f"one of {', '.join(METHODS)} (default: %(default)s)"
    )
    p.add_argument("-o", "--output", required=True, help="OUT.ome.tif or OUT.ome.zarr")
    p.add_argument("--weights", help="StainFuser checkpoint (file or directory)")
    p.add_argument(
        "--sampler",
        help=f"diffusion sampler: {', '.join(SAMPLERS)} (default: pndm, as published)",
    )
    p.add_argument("--steps", type=int, help="diffusion sampling steps (default: 20)")
    p.add_argument("--precision", help="StainFuser precision: fp32, fp16 (CUDA), bf16")
    p.add_argument(
        "--preprocess",
        help="StainFuser preprocessing: ours (default: deterministic, tile-independent) or "
        "official (the official WSI script's: batch min-max source, nearest-resized target, "
        "sampled target latents, fp32)",
    )
    p.add_argument(
        "--distill",
        action="store_true",
        help="StainFuser: distil it into a per-pixel colour map on this slide's tissue first, "
        "then stain the whole slide through that map at lookup-table speed",
    )
    p.add_argument(
        "--distill-tiles",
        type=int,
        default=64,
        help="tissue tiles StainFuser stains for --distill (default: %(default)s)",
    )
    p.add_argument("--tile", type=int, help="tile size in px, 16-8192 (default: the method's)")
    p.add_argument("--overlap", type=int, help="tile overlap in px (default: the method's)")
    p.add_argument("--seed", type=int, default=0, help="noise / sampling seed (default: 0)")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    # Describe and check everything first: the light modules only, so a
    # mistake is reported before torch, dask or a model loads.
    from ..job import SlideJob

    params = {k: v for k in ("precision", "preprocess") if (v := getattr(args, k)) is not None}
    job = SlideJob.create(
        args.slide, method=args.method, target=args.target, weights=args.weights,
        sampler=args.sampler, steps=args.steps, tile=args.tile, overlap=args.overlap,
        seed=args.seed, **run_options(args), **params,
    )  # fmt: skip
    out = checked_output(args)
    if args.distill:
        job = _distilled(job, args)
    return run_slide(job, out, args)


def _distilled(job, args):
    """The job with its stainer replaced by the one distilled from it on this slide."""
    from ..errors import ParameterError, opt
    from ..methods import CLASSICAL

    if job.stainer.method in CLASSICAL:
        raise ParameterError(
            f"{opt('distill')}: {job.stainer.method} is already per-pixel (it runs through a "
            "lookup table); --distill is for stainfuser"
        )
    n = args.distill_tiles
    if isinstance(n, bool) or not 1 <= n <= 4096:
        raise ParameterError(f"--distill-tiles: must be in 1..4096, got {n}")
    from ..distillation import distilled_job

    teacher = job.stainer.method
    job, student = distilled_job(job, tiles=n)
    fit, held = student.report["fit"], student.report["held_out"]
    print(
        f"distilled {teacher} on {student.report['tiles']['fit']} tissue tiles: "
        f"ΔE2000 to it median {fit['median']:.2f}, 95th percentile {fit['p95']:.2f}"
        + (f"; on held-out tiles {held['median']:.2f} / {held['p95']:.2f}" if held else "")
    )
    return job
