"""Real images and fitted normalizers shared by the stain tests.

Fitting is cheap, but the first slide-level transform builds a 256³ lookup
table (a few seconds), so fitted normalizers are cached for the session.
"""

import numpy as np
import pytest
from stain_cases import read_rgb

from napari_stainfuser.stain import get_normalizer


@pytest.fixture(scope="session")
def images() -> dict[str, np.ndarray]:
    return {
        "source": read_rgb("he/torchstain-source.png"),
        "target": read_rgb("he/torchstain-target.png"),
        "almost_white": read_rgb("he/histolab-almost-white-2.png"),
        "pen": read_rgb("he/histolab-high-nuclei-score-red-pen-level1.png"),
        "ihc": read_rgb("ihc/skimage-ihc-fhl2.png"),
    }


@pytest.fixture(scope="session")
def fitted(images):
    """fitted(method, slide_level=False): a normalizer fitted on the target image;
    with slide_level=True also fit_source() on the source image (lookup table built)."""
    cache = {}

    def get(method: str, slide_level: bool = False):
        key = (method, slide_level)
        if key not in cache:
            norm = get_normalizer(method).fit(images["target"], name="target image")
            if slide_level:
                norm.fit_source(images["source"], name="source image")
                norm.transform(images["source"][:1, :1])  # build the table once
            cache[key] = norm
        return cache[key]

    return get
