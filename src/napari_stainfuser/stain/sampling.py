"""Tissue pixels to fit stain statistics on: from images, lists of them, or slides.

A slide is never read at full resolution here: pixels come from the same
low-resolution overview the tissue mask is computed on (see
:func:`~napari_stainfuser.stain.tissue.slide_overview`), so fitting costs the
same for a 2,000 px and a 100,000 px slide. Subsampling uses a seeded
generator, so the same input always gives the same sample.
"""

import numpy as np

from ..errors import ParameterError
from .tissue import DEFAULT_MAX_SIDE, check_rgb, is_slide, slide_overview, tissue_mask

DEFAULT_MAX_PIXELS = 1 << 22  # a 2048² sample


def describe(source, name: str | None, default: str) -> str:
    """The name errors use for an image or slide."""
    if name:
        return name
    path = getattr(source, "path", None)
    return f"slide {path}" if path else default


def tissue_pixels(
    source,
    *,
    name: str | None = None,
    default_name: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
    seed: int = 0,
    use_mask: bool = True,
) -> np.ndarray:
    """Tissue pixels (N×3 uint8) of an image, a list of images, or a slide.

    use_mask: False keeps every pixel (the caller filters, e.g. by optical density).
    Images with a side longer than ``max_side`` are read on a regular grid of
    every k-th pixel first. At most ``max_pixels`` are returned, drawn at
    random with ``seed``.
    """
    label = describe(source, name, default_name)
    if is_slide(source):
        images = [slide_overview(source, max_side)[0]]
    elif isinstance(source, (list, tuple)):
        if not source:
            raise ParameterError(f"{label}: an empty list has no pixels")
        images = [check_rgb(im, f"{label} [{i}]") for i, im in enumerate(source)]
    else:
        images = [check_rgb(source, label)]
    per_image = max(1, max_pixels // len(images))
    rng = np.random.default_rng(seed)
    parts = []
    for im in images:
        step = -(-max(im.shape[:2], default=0) // max_side) if im.size else 1
        if step > 1:
            # A big in-memory image is sampled on a regular grid, like a slide overview.
            im = im[::step, ::step]
        px = im[tissue_mask(im).mask] if use_mask else im.reshape(-1, 3)
        if len(px) > per_image:
            px = px[np.sort(rng.choice(len(px), per_image, replace=False))]
        parts.append(px)
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 3), np.uint8)
