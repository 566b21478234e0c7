"""`stainfuser normalize`: re-render a whole slide in a target stain."""

from pathlib import Path

METHODS = ("macenko", "reinhard", "vahadane", "ruifrok", "stainfuser")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "normalize",
        help="re-render a whole slide in a target stain (classical or StainFuser)",
        description="Stain a whole slide toward a target image, slide region or stain preset "
        "and write a pyramidal OME-TIFF or OME-Zarr. OME-Zarr output is committed tile by "
        "tile and can be resumed after a crash with --resume.",
    )
    p.add_argument("slide", help="source slide (SVS, NDPI, TIFF, OME-TIFF, OME-Zarr, PNG, JPEG)")
    p.add_argument("--target", required=True, help="target image, slide, or stain preset JSON")
    p.add_argument(
        "--method", default="macenko", help=f"one of {', '.join(METHODS)} (default: %(default)s)"
    )
    p.add_argument("-o", "--output", required=True, help="OUT.ome.tif or OUT.ome.zarr")
    p.add_argument("--weights", help="StainFuser checkpoint (file or directory)")
    p.add_argument("--tile", type=int, help="tile size in px (default: the method's)")
    p.add_argument("--overlap", type=int, help="tile overlap in px (default: the method's)")
    p.add_argument("--level", type=int, default=0, help="pyramid level to stain (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="noise / sampling seed (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    p.add_argument("--batch-size", type=int, help="tiles per device call")
    p.add_argument("--steps", type=int, help="StainFuser sampling steps (default: 20)")
    p.add_argument("--scheduler", help="dask scheduler: local, local:N or tcp://host:port")
    p.add_argument("--mpp", type=float, help="µm/px of level 0 when the file does not say")
    p.add_argument("--compression", default="auto", help="jpeg, zlib, zstd, lzw or none")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default: 90)")
    p.add_argument("--no-tissue", action="store_true", help="stain glass too (no tissue mask)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..batch import normalize_slide

    params = {}
    if args.steps is not None:
        params["steps"] = args.steps
    out = normalize_slide(
        args.slide,
        args.output,
        method=args.method,
        target=args.target,
        weights=args.weights,
        tile=args.tile,
        overlap=args.overlap,
        level=args.level,
        seed=args.seed,
        resume=args.resume,
        overwrite=args.overwrite,
        scheduler=args.scheduler,
        device=args.device,
        batch_size=args.batch_size,
        tissue=not args.no_tissue,
        compression=None if args.compression == "none" else args.compression,
        quality=args.quality,
        mpp=args.mpp,
        progress=not args.no_progress,
        **params,
    )
    print(f"wrote {Path(out)}")
    return 0
