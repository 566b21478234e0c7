"""``stainfuser make-ihc-pairs``: registered H&E/IHC training tiles from two serial sections."""

import argparse

# make_ihc_pairs' default min_score, as the help shows it; kept equal to
# ihc_pairs.MIN_LOCAL_SCORE by a test, so that building the parser imports no scipy.
MIN_SCORE_DEFAULT = 0.1


def _cmd_make_ihc_pairs(args) -> int:
    from ..training.ihc_pairs import make_ihc_pairs

    result = make_ihc_pairs(
        args.he,
        args.ihc,
        args.out,
        marker=args.marker,
        tile=args.tile,
        level=args.level,
        min_tissue=args.min_tissue,
        min_score=args.min_score,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    reg = result.registration
    skipped = sum(result.skipped.values())
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(result.skipped.items())) or "none"
    print(
        f"registration: hematoxylin correlation {reg.score:.3f} "
        f"(unregistered {reg.unregistered_score:.3f}), rotation {reg.rotation_deg:.1f}°"
    )
    print(f"{result.kept} tile pairs kept in {result.out}; {skipped} skipped ({reasons})")
    print(f"manifest: {result.manifest}; check the alignment in {result.out / 'overlay.png'}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``make-ihc-pairs`` on the CLI."""
    p = subparsers.add_parser(
        "make-ihc-pairs",
        help="make registered (H&E, IHC, DAB mask) tiles from two serial sections",
        description=(
            "Register an IHC slide onto the H&E slide of the neighbouring section (an affine fit "
            "of the hematoxylin both stains share, refined per tile), cut the H&E on a grid, and "
            "write each tissue tile with the IHC resampled into its frame and a coarse DAB mask. "
            "Writes he/, ihc/, mask/, manifest.csv, registration.json and overlay PNGs to "
            "check the alignment. Mirrored (flipped) sections are not handled."
        ),
    )
    p.add_argument("--he", required=True, metavar="SLIDE", help="H&E slide or image")
    p.add_argument("--ihc", required=True, metavar="SLIDE", help="IHC slide or image")
    p.add_argument("--marker", required=True, help="the IHC marker, recorded (e.g. CD3)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--tile", type=int, default=256, help="tile edge in pixels (256)")
    p.add_argument("--level", type=int, default=0, help="H&E pyramid level to cut tiles from (0)")
    p.add_argument(
        "--min-tissue", type=float, default=0.5, help="tissue fraction a tile needs (0.5)"
    )
    p.add_argument(
        "--min-score",
        type=float,
        default=MIN_SCORE_DEFAULT,
        help=f"hematoxylin correlation a registered tile needs ({MIN_SCORE_DEFAULT:g})",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the pairs already in the output folder"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_make_ihc_pairs)
    return p
