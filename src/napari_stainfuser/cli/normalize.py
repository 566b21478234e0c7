"""`stainfuser normalize`: re-render a whole slide in a target stain."""

from pathlib import Path

from ..methods import METHODS, SAMPLERS


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
    p.add_argument("--level", type=int, default=0, help="pyramid level to stain (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="noise / sampling seed (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    p.add_argument("--batch-size", type=int, help="tiles per device call")
    p.add_argument(
        "--scheduler",
        help="dask scheduler: local, local:N or tcp://host:port (default: this process)",
    )
    p.add_argument("--mpp", type=float, help="µm/px of level 0 when the file does not say")
    p.add_argument("--compression", default="auto", help="jpeg, zlib, zstd, lzw, gzip or none")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality 1-100 (default: 90)")
    p.add_argument("--no-tissue", action="store_true", help="stain glass too (no tissue mask)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    # Describe and check everything first: the light modules only, so a
    # mistake is reported before torch, dask or a model loads.
    from ..batch.output import OutputSpec
    from ..batch.schedulers import parse_scheduler
    from ..job import SlideJob

    params = {k: v for k in ("precision", "preprocess") if (v := getattr(args, k)) is not None}
    job = SlideJob.create(
        args.slide, method=args.method, target=args.target, weights=args.weights,
        sampler=args.sampler, steps=args.steps, tile=args.tile, overlap=args.overlap,
        level=args.level, seed=args.seed, device=args.device, batch_size=args.batch_size,
        tissue=not args.no_tissue, mpp=args.mpp, **params,
    )  # fmt: skip
    out = OutputSpec.create(args.output, args.compression, args.quality)
    parse_scheduler(args.scheduler)
    if args.distill:
        job = _distilled(job, args)
    from ..batch.run import run_job

    path = run_job(
        job, out, resume=args.resume, overwrite=args.overwrite, scheduler=args.scheduler,
        progress=not args.no_progress,
    )  # fmt: skip
    print(f"wrote {Path(path)}")
    return 0


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
