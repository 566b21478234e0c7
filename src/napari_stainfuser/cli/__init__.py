"""The `stainfuser` command line.

Every subcommand is a thin wrapper over the library; errors the user can
cause (StainFuserError) become one line on stderr and exit status 2.
"""

import argparse
import logging
import sys

from .. import __version__
from ..errors import StainFuserError


def _cmd_info(args) -> int:
    from ..slide import open_slide

    slide = open_slide(args.slide)
    print(f"file:          {slide.path}")
    print(f"format:        {slide.format}")
    print(f"mpp:           {_fmt(slide.mpp, '{:.4g} µm/px')}")
    print(f"magnification: {_fmt(slide.magnification, '{:g}×')}")
    print("levels:")
    for k, level in enumerate(slide.levels):
        h, w = level.shape[:2]
        chunk = f"{level.chunks[0][0]}×{level.chunks[1][0]}"
        down = slide.levels[0].shape[1] / w
        print(f"  {k}: {w} × {h} px  (downsample {down:.4g}, chunks {chunk})")
    if slide.associated:
        print("associated images:")
        for name, img in slide.associated.items():
            print(f"  {name}: {img.shape[1]} × {img.shape[0]} px")
    else:
        print("associated images: none")
    return 0


def _fmt(value, pattern: str) -> str:
    return "unknown" if value is None else pattern.format(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stainfuser",
        description="Stain normalization and virtual IHC for whole-slide images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", help="print a slide's format, levels, µm/px and associated images")
    p.add_argument("slide", help="slide file or OME-Zarr directory")
    p.set_defaults(func=_cmd_info)

    from . import demo, make_pairs, normalize, train

    demo.add_parser(sub)
    normalize.add_parser(sub)
    train.add_parser(sub)
    make_pairs.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # tifffile logs its own complaint about a damaged file before raising; our
    # SlideReadError already says it in one line that names the file.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        return args.func(args)
    except StainFuserError as exc:
        print(f"stainfuser {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stainfuser {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
