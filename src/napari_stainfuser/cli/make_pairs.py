"""``stainfuser make-pairs``: build a (source, target, stylised) triplet set for training."""

import argparse

from ..errors import ParameterError


def _names(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in _names(text))
    except ValueError:
        raise ParameterError(f"expected comma-separated numbers, got {text!r}") from None


# NST defaults as the help shows them; kept equal to NSTConfig's by a test, so that
# building the parser does not import torch.
NST_HELP_DEFAULTS = {
    "content_layers": "relu4_2",
    "style_layers": "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1",
    "content_weight": 1.0,
    "style_weight": 1e6,
    "iterations": 300,
    "optimizer": "adam",
    "lr": 0.01,
}


def nst_config(args):
    """NSTConfig from the parsed flags; flags left out keep NSTConfig's defaults."""
    from ..training.nst import NSTConfig

    given = {
        "content_layers": _names(args.content_layers) if args.content_layers else None,
        "style_layers": _names(args.style_layers) if args.style_layers else None,
        "style_layer_weights": _floats(args.style_layer_weights)
        if args.style_layer_weights
        else None,
        "content_weight": args.content_weight,
        "style_weight": args.style_weight,
        "iterations": args.iterations,
        "optimizer": args.optimizer,
        "lr": args.nst_lr,
    }
    return NSTConfig(**{k: v for k, v in given.items() if v is not None})


def _cmd_make_pairs(args) -> int:
    from ..training.pairs import PairsConfig, make_pairs

    nst = nst_config(args)
    cfg = PairsConfig(
        sources=args.sources,
        targets=args.targets,
        out=args.out,
        method=args.method,
        n_targets=args.n_targets,
        targets_per_source=args.targets_per_source,
        features=args.features,
        tile_size=args.tile_size,
        tiles_per_slide=args.tiles_per_slide,
        level=args.level,
        min_tissue=args.min_tissue,
        seed=args.seed,
        stain_method=args.stain_method,
        vgg_weights=args.vgg_weights,
        vgg_pool=args.vgg_pool,
        nst=nst,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    result = make_pairs(cfg)
    print(
        f"{result.done} triplets in {result.out} ({result.made} made now); "
        f"manifest: {result.manifest}"
    )
    if result.skipped:
        print(f"{len(result.skipped)} pairs skipped; reasons in {result.out / 'skipped.csv'}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``make-pairs`` on the CLI."""
    d = NST_HELP_DEFAULTS
    p = subparsers.add_parser(
        "make-pairs",
        help="make (source, target, stylised) training triplets",
        description=(
            "Build a training set the SPI-2M way: target tiles chosen by k-means to cover the "
            "colour variety, every source tile stylised with every target (or a seeded subset), "
            "by physics-based re-staining (default, no weights) or neural style transfer (VGG19 "
            "weights from a torchvision vgg19-dcbb9e9d.pth you supply). Inputs are folders of "
            "tiles, PNG/JPEG tiles, or slides (tissue tiles are sampled). Run the same command "
            "again to resume."
        ),
    )
    p.add_argument(
        "--sources", nargs="+", required=True, metavar="PATH", help="tile folders, tiles or slides"
    )
    p.add_argument(
        "--targets", nargs="+", required=True, metavar="PATH", help="tile folders, tiles or slides"
    )
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--method", default="physics", choices=("physics", "nst"), help="(physics)")
    p.add_argument("--n-targets", type=int, default=8, help="targets chosen by k-means; 0: all (8)")
    p.add_argument(
        "--targets-per-source",
        type=int,
        default=0,
        help="targets each source is paired with; 0: every chosen target (0)",
    )
    p.add_argument(
        "--features", default="od", choices=("od", "stain"), help="k-means features (od)"
    )
    p.add_argument("--tile-size", type=int, default=512, help="tile edge cut from slides (512)")
    p.add_argument("--tiles-per-slide", type=int, default=64, help="tiles sampled per slide (64)")
    p.add_argument("--level", type=int, default=0, help="slide pyramid level to cut tiles from")
    p.add_argument("--min-tissue", type=float, default=0.5, help="tissue fraction of a tile (0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    p.add_argument(
        "--stain-method",
        default="macenko",
        choices=("macenko", "vahadane"),
        help="physics: stain-vector estimator (macenko)",
    )
    nst = p.add_argument_group("neural style transfer (--method nst)")
    nst.add_argument("--vgg-weights", help="torchvision VGG19 state dict (vgg19-dcbb9e9d.pth)")
    nst.add_argument("--vgg-pool", default="max", choices=("max", "avg"), help="pooling (max)")
    nst.add_argument(
        "--content-layers", help=f"VGG19 layers, comma-separated ({d['content_layers']})"
    )
    nst.add_argument("--style-layers", help=f"VGG19 layers, comma-separated ({d['style_layers']})")
    nst.add_argument("--style-layer-weights", help="one weight per style layer (all 1)")
    nst.add_argument("--content-weight", type=float, help=f"({d['content_weight']:g})")
    nst.add_argument("--style-weight", type=float, help=f"({d['style_weight']:g})")
    nst.add_argument("--iterations", type=int, help=f"optimisation steps ({d['iterations']})")
    nst.add_argument("--optimizer", choices=("adam", "lbfgs"), help=f"({d['optimizer']})")
    nst.add_argument("--nst-lr", type=float, help=f"Adam step in [0, 1] pixel units ({d['lr']:g})")
    p.add_argument("--device", default="cpu", help="device for NST (cpu)")
    p.add_argument("--batch-size", type=int, default=4, help="NST pairs optimised together (4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_make_pairs)
    return p
