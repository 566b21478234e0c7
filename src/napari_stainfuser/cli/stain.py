"""``stainfuser stain``: virtual IHC of a whole H&E slide (IHC, cell mask, uncertainty)."""

from ..methods import IHC_SAMPLERS
from ._run import add_run_options, checked_output, run_options
from ._run import run as run_slide


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
    add_run_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..job import SlideJob
    from ..methods import VIRTUAL_IHC

    job = SlideJob.create(
        args.slide, method=VIRTUAL_IHC, weights=args.weights, marker=args.marker,
        samples=args.samples, sampler=args.sampler, steps=args.steps, tile=args.tile,
        overlap=args.overlap, seed=args.seed, **run_options(args),
    )  # fmt: skip
    return run_slide(job, checked_output(args), args)
