"""Fixtures for the batch-run tests: real slide crops and a synthetic slide."""

import numpy as np
import pytest
from batch_cases import CMU


@pytest.fixture(scope="session")
def cmu_crop() -> np.ndarray:
    """768 × 1024 of the real CMU slide at full resolution: about 40 % tissue."""
    from napari_stainfuser.slide import open_slide

    return np.ascontiguousarray(open_slide(CMU).levels[0][512:1280, 256:1280].compute())


@pytest.fixture(scope="session")
def synth() -> np.ndarray:
    from napari_stainfuser.slide.synthetic import synthetic_he

    return synthetic_he((640, 832), seed=3).compute()
