"""npe2 sample data: a lazy, multiscale synthetic H&E slide."""

from ..slide.synthetic import SyntheticTissue

SAMPLE_SHAPE = (24576, 24576)
SAMPLE_MPP = 0.5


def synthetic_he_slide():
    """A 24,576² px synthetic H&E slide at 0.5 µm/px.

    Each level is rendered directly at its own µm/px (the tissue is defined in
    physical units), so napari's zoomed-out view costs only that level's pixels.
    """
    levels = SyntheticTissue(seed=0, mpp=SAMPLE_MPP).pyramid_he(SAMPLE_SHAPE)
    meta = {
        "name": "Synthetic H&E slide",
        "rgb": True,
        "multiscale": True,
        "scale": (SAMPLE_MPP, SAMPLE_MPP),
        "units": ("um", "um"),
        "metadata": {"mpp": SAMPLE_MPP, "format": "synthetic"},
    }
    return [(levels, meta, "image")]
