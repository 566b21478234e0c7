"""The official StainFuser WSI preprocessing, reproduced exactly (``preprocess="official"``).

What the official ``run_wsi.py`` does to its inputs, next to what we do by default
(README, "StainFuser: the official pipeline and ours"):

- the source batch is min–max scaled over the whole batch (all tiles, all
  channels): :func:`scale_batch`. Ours divides by 255, so a tile's colours do
  not depend on the tiles it happens to be batched with;
- the target is resized to the tile size with nearest neighbour, OpenCV's rule
  (source index ⌊dst · in / out⌋, which is torch's ``"nearest"``, not
  ``"nearest-exact"``): :func:`resize_target`. Ours centre-crops, which keeps
  the target's magnification;
- the target latents are drawn from the VAE posterior (``.sample()``), one draw
  per tile: :meth:`StainFuser.encode_target` with ``sample=True``. Ours takes
  the posterior mean, which is deterministic;
- everything runs in fp32.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError
from ..methods import PREPROCESS

__all__ = ["PREPROCESS", "posterior_noise", "resize_target", "scale_batch"]


def scale_batch(tiles_uint8_bchw: torch.Tensor) -> torch.Tensor:
    """``(u − min) / (max − min)`` as float32, min and max over the whole batch.

    A batch of one colour (max = min, where the official code divides by zero)
    gives zeros.
    """
    u = tiles_uint8_bchw
    if not isinstance(u, torch.Tensor) or u.dtype != torch.uint8 or u.ndim != 4:
        got = f"{u.dtype} {tuple(u.shape)}" if isinstance(u, torch.Tensor) else type(u).__name__
        raise ParameterError(f"tiles must be a B×C×H×W uint8 tensor, got {got}")
    x = u.float()
    lo, hi = x.min(), x.max()
    if hi == lo:
        return torch.zeros_like(x)
    return (x - lo) / (hi - lo)


def resize_target(image_uint8_hwc, size: int) -> torch.Tensor:
    """The target as the official ``create_target_inf`` makes it: 1×3×size×size in [0, 1].

    Nearest neighbour with source index ⌊dst · in / out⌋ on each axis. The
    official function skips the resize when the height already equals
    ``size`` (whatever the width); here the result is always size × size.
    """
    a = np.asarray(image_uint8_hwc)
    if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise ParameterError(f"target must be an H×W×3 uint8 image, got {a.shape} {a.dtype}")
    size = int(size)
    if size < 1:
        raise ParameterError(f"size must be a positive number of pixels, got {size}")
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="nearest")
    return x / 255.0


def posterior_noise(seed: int, init_noise: torch.Tensor) -> torch.Tensor:
    """One N(0, 1) draw per tile for the posterior ``.sample()``, seeded.

    The official script draws it from the global generator, batch after batch.
    Here each tile's draw is seeded by the run's seed and that tile's initial
    noise (which the tiler cuts from the slide's noise field), so a tile gets
    the same draw whichever batch or worker it lands in.
    """
    out = torch.empty_like(init_noise, dtype=torch.float32, device="cpu")
    for i, tile in enumerate(init_noise.detach().to("cpu", torch.float32)):
        key = zlib.crc32(tile.contiguous().numpy().tobytes())
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + key) % (1 << 63))
        out[i] = torch.randn(tile.shape, generator=gen)
    return out
