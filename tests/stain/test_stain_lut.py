"""The lookup table against the colour map it tabulates, computed directly.

The map below is cheap to state in numpy and moves every channel, so a wrong
index (byte order, an off-by-one pixel at a block edge) or a wrong store (a
clobbered neighbour byte) changes the output.
"""

import numpy as np
import pytest
import torch
from stain_cases import read_rgb

from napari_stainfuser.stain.lut import (
    _PARALLEL_MIN,
    _ROWS_PER_JOB,
    apply_lut,
    apply_lut_planar,
    apply_lut_torch,
    build_lut,
)


def _map_torch(planes: torch.Tensor) -> torch.Tensor:
    r, g, b = planes.to(torch.int32)
    return torch.stack([255 - b, g ^ 0x5A, (r * 7 + g) % 256]).to(torch.uint8)


def _map_numpy(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., c].astype(np.int32) for c in range(3))
    return np.stack([255 - b, g ^ 0x5A, (r * 7 + g) % 256], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    return build_lut(_map_torch)


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    slide = read_rgb("he/torchstain-source.png")
    big = rng.integers(0, 256, (_PARALLEL_MIN // 512 + 3, 517, 3), dtype=np.uint8)
    return {
        "real H&E": slide,
        "1×1": rng.integers(0, 256, (1, 1, 3), dtype=np.uint8),
        "one row": rng.integers(0, 256, (1, 7, 3), dtype=np.uint8),
        # Parallel path; the pixel count is not a multiple of the block size.
        "parallel": big,
        "one block + 1": rng.integers(0, 256, (_ROWS_PER_JOB + 1, 3), dtype=np.uint8),
        "non-contiguous view": big[::2, 1::3],
        "extremes": np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 255]]], np.uint8),
    }


@pytest.mark.parametrize("case", list(_inputs()))
def test_interleaved_lookup_equals_the_map(table, case):
    rgb = _inputs()[case]
    out = apply_lut(table, rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, _map_numpy(rgb))


@pytest.mark.parametrize("case", ["real H&E", "1×1", "parallel", "non-contiguous view"])
def test_planar_and_torch_lookups_equal_the_map(table, case):
    rgb = _inputs()[case]
    batch = np.stack([rgb, rgb[::-1]])
    expected = _map_numpy(batch).transpose(0, 3, 1, 2)
    planar = batch.transpose(0, 3, 1, 2)  # a strided view, as from a torch tensor
    np.testing.assert_array_equal(apply_lut_planar(table, planar), expected)
    # The device path (index_select on an int32 table), run on the CPU here.
    as_int32 = torch.from_numpy(table.view(np.int32))
    got = apply_lut_torch(as_int32, torch.from_numpy(np.ascontiguousarray(planar)))
    np.testing.assert_array_equal(got.numpy(), expected)
