"""Optical density: Beer–Lambert between transmitted intensity and absorbance.

``OD = -ln((I + 1) / Io)`` with ``I`` in 0..255 and ``Io`` the background
(incident) intensity. The ``+ 1`` keeps black pixels finite, as in Macenko's
reference implementation and torchstain. The inverse subtracts the 1 again,
so ``od_to_rgb(rgb_to_od(I)) == I`` exactly in real arithmetic; torchstain
omits the ``- 1`` and so brightens every pixel it reconstructs by about one
grey level.

uint8 input goes through a 256-entry table (one gather per channel instead of
a log per pixel). Values are float32 torch tensors on the input's device.
"""

from functools import lru_cache

import numpy as np
import torch

from ..errors import ParameterError

DEFAULT_IO = 240.0


def check_io(io: float, name: str = "io") -> float:
    """Validate a background intensity (0 < Io ≤ 256)."""
    try:
        value = float(io)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {io!r}") from None
    if not np.isfinite(value) or not 0.0 < value <= 256.0:
        raise ParameterError(f"{name} must be in (0, 256], got {io!r}")
    return value


@lru_cache(maxsize=16)
def _od_table(io: float) -> np.ndarray:
    # float64 logs, rounded once to float32: the same values as the float path.
    return (-np.log((np.arange(256, dtype=np.float64) + 1.0) / io)).astype(np.float32)


def od_lut(io: float = DEFAULT_IO, device: str | torch.device = "cpu") -> torch.Tensor:
    """The 256-entry table ``OD[i] = -ln((i + 1) / io)`` as float32."""
    return torch.from_numpy(_od_table(check_io(io))).to(device)


def rgb_to_od(rgb, io: float = DEFAULT_IO) -> torch.Tensor:
    """Optical density of RGB values (any shape).

    uint8 values (numpy or torch) use the lookup table; float values are taken
    on the 0..255 scale and go through the logarithm.
    """
    io = check_io(io)
    t = torch.as_tensor(rgb)
    if t.dtype == torch.uint8:
        return od_lut(io, t.device)[t.long()]
    if not t.is_floating_point():
        raise ParameterError(f"rgb must be uint8 or float on the 0..255 scale, got {t.dtype}")
    t = t.to(torch.float32)
    return -torch.log((t.clamp_min(0.0) + 1.0) / io)


def od_to_rgb(od: torch.Tensor, io: float = DEFAULT_IO) -> torch.Tensor:
    """Intensity on the 0..255 scale (float32, clipped) from optical density."""
    io = check_io(io)
    return (io * torch.exp(-od.to(torch.float32)) - 1.0).clamp_(0.0, 255.0)


def split_background(od: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split planar optical density (3×N) into an absorbing part (≥ 0) and a
    grey offset (≤ 0) for pixels brighter than ``Io``.

    A pixel whose brightest channel exceeds the background intensity was lit
    more brightly than ``Io`` (glass at 255 with ``Io = 240``). Its excess is
    the most negative channel OD, ``e = min(0, min_c OD_c)``; ``OD - e`` is then
    the pixel's absorbance relative to its own, brighter, illumination.
    Stain models act on that part and ``e`` is added back, so white paper
    stays white and only the brightness of a bright pixel, never its colour,
    bypasses the model. Pixels darker than ``Io`` in every channel have
    ``e = 0`` and are unaffected.
    """
    excess = od.amin(dim=0).clamp_max(0.0)
    return od - excess, excess
