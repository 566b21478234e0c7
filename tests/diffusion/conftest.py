"""Fixtures shared by the diffusion tests."""

import pytest
import torch
from diffusion_cases import REF_DIR
from safetensors.torch import load_file


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tiny model is all synchronisation overhead on the shared 2-core runner.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ref():
    """The official implementation's reference inputs and outputs."""
    return load_file(REF_DIR / "reference_io.safetensors")
