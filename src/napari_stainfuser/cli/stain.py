"""``stainfuser stain``: virtual IHC of a whole H&E slide (IHC, cell mask, uncertainty)."""

from pathlib import Path

from ..methods import IHC_SAMPLERS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "stain",
        help="turn a whole H&E slide into a virtual IHC with its cell mask (trained weights)",
        description="Run a virtual-IHC model (trained with 'stainfuser train virtual-ihc') over "
        "a whole H&E slide. OUT.ome.zarr holds the IHC pyramid, the cell mask as the NGFF "
        "label image labels/mask and, with --samples K > 1, the uncertainty maps under "
        "extras/. With OUT.ome.tif the mask goes to OUT.mask.ome.tif and the uncertainties "
        "to OUT.uncertainty.ome.tif and OUT.mask_uncertainty.ome.tif. Work is committed tile "
        "by tile: an interrupted run continues with --resume.",
    )
    p.add_argument("slide", help="H&E slide (SVS, NDPI, TIFF, OME-TIFF, OME-Zarr, PNG, JPEG)")
    p.add_argument("--marker", help="marker to stain (default: the checkpoint's only marker)")
    p.add_argument(
        "--weights", help="training run or checkpoint folder (default: $STAINFUSER_IHC_WEIGHTS)"
    )
    p.add_argument("-o", "--output", required=True, help="OUT.ome.zarr or OUT.ome.tif")
    p.add_argument(
        "--samples", type=int, default=1, help="samples per pixel; K > 1 adds uncertainty (1)"
    )
    p.add_argument("--steps", type=int, help="sampling steps (default: 10)")
    p.add_argument("--sampler", help=f"{', '.join(IHC_SAMPLERS)} (default: ddim)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    p.add_argument("--tile", type=int, help="tile size in px, a multiple of 32 (default: 256)")
    p.add_argument("--overlap", type=int, help="tile overlap in px (default: tile/4, at most 64)")
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
    p.set_defaults(func=run)


def run(args) -> int:
    from ..batch.output import OutputSpec
    from ..batch.schedulers import parse_scheduler
    from ..job import SlideJob
    from ..methods import VIRTUAL_IHC

    job = SlideJob.create(
        args.slide, method=VIRTUAL_IHC, weights=args.weights, marker=args.marker,
        samples=args.samples, sampler=args.sampler, steps=args.steps, tile=args.tile,
        overlap=args.overlap, level=args.level, seed=args.seed, device=args.device,
        batch_size=args.batch_size, tissue=not args.no_tissue, mpp=args.mpp,
    )  # fmt: skip
    out = OutputSpec.create(args.output, args.compression, args.quality)
    parse_scheduler(args.scheduler)
    from ..batch.run import run_job

    path = run_job(
        job, out, resume=args.resume, overwrite=args.overwrite, scheduler=args.scheduler,
        progress=not args.no_progress,
    )  # fmt: skip
    print(f"wrote {Path(path)}")
    return 0
