"""The stainer protocol: the one interface every stain method implements.

A stainer maps a batch of RGB tiles (B×3×H×W uint8 torch tensor) to a batch
of RGB tiles of the same shape, plus optional extra outputs (cell masks,
uncertainty). It holds its fitted target or conditioning itself, so the
tiler, engine, CLI and widgets never need to know which method they run.
"""

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class StainerSpec:
    """What a stainer needs from the tiler.

    tile_size: preferred tile edge in pixels at the working resolution.
    overlap: preferred overlap between neighbouring tiles (0 for per-pixel methods).
    mpp: µm/px the method works at; None means any resolution.
    per_pixel: the output at a pixel depends only on that input pixel, so tiles
        need no overlap or blending and any tiling gives identical output.
    deterministic: the same input (and noise) always gives the same output.
    device: torch device the stainer computes on.
    batch_size: how many tiles the device takes at once.
    multiple_of: tile edges must be a multiple of this (8 for latent diffusion).
    latent_channels / latent_factor: for diffusion stainers, the shape of the
        initial noise per tile (C × H/f × W/f); None for non-diffusion stainers.
    """

    tile_size: int = 512
    overlap: int = 0
    mpp: float | None = None
    per_pixel: bool = True
    deterministic: bool = True
    device: str = "cpu"
    batch_size: int = 8
    multiple_of: int = 1
    latent_channels: int | None = None
    latent_factor: int | None = None


@dataclass
class StainResult:
    """Stained tiles (B×3×H×W uint8) plus named extra outputs (B×k×H×W)."""

    tiles: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class Stainer(Protocol):
    spec: StainerSpec

    def stain(self, tiles: torch.Tensor, noise: torch.Tensor | None = None) -> StainResult:
        """Stain a B×3×H×W uint8 batch. `noise` is the initial latent noise
        (B×C×H/f×W/f) for diffusion stainers, cut from the slide's noise field;
        per-pixel stainers ignore it."""
        ...
