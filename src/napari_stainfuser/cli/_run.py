"""What ``stainfuser normalize`` and ``stainfuser stain`` share: the whole-slide run's
flags (where it runs, how it writes) and its last steps."""

from pathlib import Path


def add_run_options(p) -> None:
    """The flags of a whole-slide run that do not depend on the stainer."""
    p.add_argument("--level", type=int, default=0, help="pyramid level to stain (default: 0)")
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


def run_options(args) -> dict:
    """The SlideJob keywords that :func:`add_run_options` flags give."""
    return {
        "level": args.level, "device": args.device, "batch_size": args.batch_size,
        "tissue": not args.no_tissue, "mpp": args.mpp,
    }  # fmt: skip


def checked_output(args):
    """The output, and the scheduler checked, before any work (light modules only):
    an existing output without --overwrite or --resume is refused here, not after
    the slide and the model have loaded."""
    from ..batch.output import OutputSpec, check_output
    from ..batch.schedulers import parse_scheduler

    out = OutputSpec.create(args.output, args.compression, args.quality)
    parse_scheduler(args.scheduler)
    inputs = [str(p) for p in (args.slide, getattr(args, "target", None)) if p]
    check_output(out, inputs, resume=args.resume, overwrite=args.overwrite)
    return out


def run(job, out, args) -> int:
    """Run ``job`` into ``out`` as the flags say; print where it went."""
    from ..batch.run import run_job

    path = run_job(
        job, out, resume=args.resume, overwrite=args.overwrite, scheduler=args.scheduler,
        progress=not args.no_progress,
    )  # fmt: skip
    print(f"wrote {Path(path)}")
    return 0
