"""The `stainfuser` command line.

Every subcommand is a thin wrapper over the library; errors the user can
cause (StainFuserError) become one line on stderr and exit status 2, naming
the command's own flags. Anything else is a bug: one line, exit status 1,
and ``--debug`` shows the traceback.
"""

import argparse
import logging
import sys
import warnings

from .. import __version__
from ..errors import StainFuserError, use_cli_names


def _cmd_info(args) -> int:
    from ..slide import open_slide

    slide = open_slide(args.slide)
    print(f"file:          {slide.path}")
    print(f"format:        {slide.format}")
    print(f"mpp:           {_fmt(slide.mpp, '{:.4g} µm/px')}")
    print(f"magnification: {_fmt(slide.magnification, '{:g}×')}")
    print("levels (width × height, as every size below):")
    for k, level in enumerate(slide.levels):
        h, w = level.shape[:2]
        chunk = f"{level.chunks[1][0]} × {level.chunks[0][0]}"
        down = slide.levels[0].shape[1] / w
        print(f"  {k}: {w} × {h} px  (downsample {down:.4g}, chunks {chunk} px)")
    if slide.associated:
        print("associated images:")
        for name, img in slide.associated.items():
            print(f"  {name}: {img.shape[1]} × {img.shape[0]} px")
    else:
        print("associated images: none")
    prov = slide.provenance
    if prov is None:
        print("provenance: none (not written by napari-stainfuser)")
    else:
        print("provenance:")
        for line in _flatten(prov):
            print(f"  {line}")
    return 0


def _flatten(value, prefix: str = ""):
    """``a.b: value`` lines of a nested JSON object, in key order."""
    if isinstance(value, dict) and value:
        for k in sorted(value):
            yield from _flatten(value[k], f"{prefix}.{k}" if prefix else str(k))
    else:
        yield f"{prefix}: {value}"


def _fmt(value, pattern: str) -> str:
    return "unknown" if value is None else pattern.format(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stainfuser",
        description="Stain normalization and virtual IHC for whole-slide images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an unexpected error"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", help="print a slide's format, levels, µm/px and associated images")
    p.add_argument("slide", help="slide file or OME-Zarr directory")
    p.set_defaults(func=_cmd_info)

    from . import demo, evaluate, make_ihc_pairs, make_pairs, normalize, stain, train

    demo.add_parser(sub)
    normalize.add_parser(sub)
    stain.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    make_pairs.add_parser(sub)
    make_ihc_pairs.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # tifffile logs its own complaint about a damaged file before raising; our
    # SlideReadError already says it in one line that names the file.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    use_cli_names(True)
    show_warning = warnings.showwarning
    warnings.showwarning = _one_line_warning(args.command)
    try:
        return args.func(args)
    except StainFuserError as exc:
        print(f"stainfuser {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stainfuser {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last resort: a bug, not the user's mistake
        if args.debug:
            raise
        print(
            f"stainfuser {args.command}: unexpected error: {type(exc).__name__}: "
            f"{_one_line(exc)} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        use_cli_names(False)
        warnings.showwarning = show_warning


def _one_line_warning(command: str):
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"stainfuser {command}: warning: {_one_line(message)}", file=file or sys.stderr)

    return show


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
