"""npe2 sample data: a lazy, multiscale synthetic H&E slide and a target stain for it.

The slide is stained as "lab A" (strong hematoxylin, faint eosin, Macenko's
reference vectors) and the target as "lab B" (Ruifrok's vectors at nominal
strength), the same two labs as ``stainfuser demo``, so a new user can try
live normalization with no files of their own: open the slide sample (the
target comes with it, beside the slide), open Plugins ▸ StainFuser ▸ Stain
normalization, and press Live.
"""

from ..slide.synthetic import MACENKO_REFERENCE_HE, SyntheticTissue
from ..stain.matrices import RUIFROK_HE
from .background import BackgroundPyramid

SAMPLE_SHAPE = (24576, 24576)
SAMPLE_MPP = 0.5
LAB_A = {"stain_matrix": MACENKO_REFERENCE_HE, "scale": (1.35, 0.6)}
LAB_B = {"stain_matrix": RUIFROK_HE, "scale": (1.0, 1.0)}
TARGET_SHAPE = (1536, 1536)
TARGET_NAME = "Synthetic H&E target, lab B"
# What the renderer draws where there is no tissue (its default light level).
GLASS = 240


def _meta(name: str, translate=(0.0, 0.0), **extra) -> dict:
    return {
        "name": name,
        "rgb": True,
        "scale": (SAMPLE_MPP, SAMPLE_MPP),
        "translate": translate,
        "units": ("um", "um"),
        "metadata": {"mpp": SAMPLE_MPP, "format": "synthetic"},
        **extra,
    }


def synthetic_he_target():
    """Lab B's stain on tissue the slide does not contain (1536² px, in memory)."""
    target = SyntheticTissue(seed=0, mpp=SAMPLE_MPP).render_he(
        TARGET_SHAPE, origin=(-TARGET_SHAPE[0] - 256, -TARGET_SHAPE[1] - 256), **LAB_B
    )
    # Beside the slide, so both are in view after opening.
    beside = (0.0, (SAMPLE_SHAPE[1] + 1024) * SAMPLE_MPP)
    return [(target.compute(), _meta(TARGET_NAME, beside), "image")]


def synthetic_he_slide():
    """A 24,576² px synthetic H&E slide at 0.5 µm/px in lab A's stain, and lab B's target.

    Levels down to 2 µm/px are rendered directly at their own µm/px (the tissue
    is defined in physical units) and coarser ones are area averages of the
    2 µm/px level, so every level looks like the area average of level 0. The
    tissue is rendered in the background (a `BackgroundPyramid`), so the viewer
    never waits for it: the first overview takes a few seconds to appear (the
    whole slide at 2 µm/px), and new tissue shows blurred for a moment, as the
    overview's pixels, before its own land.
    """
    tissue = SyntheticTissue(seed=0, mpp=SAMPLE_MPP)
    levels = BackgroundPyramid(tissue.pyramid_he(SAMPLE_SHAPE, **LAB_A), fill=GLASS).levels
    slide = (levels, _meta("Synthetic H&E slide", multiscale=True), "image")
    return [slide, *synthetic_he_target()]
