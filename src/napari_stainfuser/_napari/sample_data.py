"""npe2 sample data: a lazy, multiscale synthetic H&E slide."""

from ..slide.pyramid import MIN_LEVEL_SIZE, downsample2x
from ..slide.synthetic import SyntheticTissue

SAMPLE_SHAPE = (24576, 24576)
SAMPLE_MPP = 0.5
# The tissue model resolves nuclei only up to this µm/px; coarser levels are area-averaged.
_MAX_RENDER_MPP = 4.0


def synthetic_pyramid(shape=SAMPLE_SHAPE, mpp=SAMPLE_MPP, seed=0, chunks=512):
    """Multiscale synthetic H&E where each level is rendered at its own µm/px.

    Area-averaging level 0 would mean rendering all of it before napari can
    show the zoomed-out view; the tissue is defined in physical units, so each
    level is rendered directly and costs only its own pixels.
    """
    levels = []
    h, w = shape
    while True:
        level_mpp = mpp * 2 ** len(levels)
        if level_mpp <= _MAX_RENDER_MPP:
            tissue = SyntheticTissue(seed=seed, mpp=level_mpp)
            levels.append(tissue.render_he((h, w), chunks=chunks))
        else:
            levels.append(downsample2x(levels[-1], target_chunk=chunks))
        if max(h, w) <= MIN_LEVEL_SIZE:
            return levels
        h, w = h // 2, w // 2


def synthetic_he_slide():
    """A 24,576² px synthetic H&E slide at 0.5 µm/px, rendered only where napari looks."""
    meta = {
        "name": "Synthetic H&E slide",
        "rgb": True,
        "multiscale": True,
        "scale": (SAMPLE_MPP, SAMPLE_MPP),
        "units": ("um", "um"),
        "metadata": {"mpp": SAMPLE_MPP, "format": "synthetic"},
    }
    return [(synthetic_pyramid(), meta, "image")]
