"""The stainer protocol: the one interface every stain method implements.

A stainer maps a batch of RGB tiles (B×3×H×W uint8 torch tensor) to a batch
of RGB tiles of the same shape, plus optional extra outputs (cell masks,
uncertainty). It holds its fitted target or conditioning itself, so the
tiler, engine, CLI and widgets never need to know which method they run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch loads with the stainers themselves, not with their description
    import torch

EXTRA_KINDS = ("labels", "image")


@dataclass(frozen=True)
class ExtraOutput:
    """An output a stainer gives besides the stained tiles.

    name: its key in :attr:`StainResult.extras` and in output files.
    kind: "labels": a per-pixel probability in [0, 1], blended like the image
        and then thresholded at one half into a 0/1 label image (a cell
        mask); "image": a float map kept as is (uncertainty).

    Each extra is one plane: a stainer returns it as B×1×H×W (or B×H×W).
    """

    name: str
    kind: str = "labels"

    def __post_init__(self):
        if self.kind not in EXTRA_KINDS:
            raise ValueError(f"extra output kind {self.kind!r} is not one of {EXTRA_KINDS}")
        if not self.name.isidentifier():
            raise ValueError(f"extra output name {self.name!r} must be an identifier")

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind}


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
    extras: the extra outputs every :meth:`Stainer.stain` call returns.
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
    extras: tuple[ExtraOutput, ...] = ()


@dataclass
class StainResult:
    """Stained tiles (B×3×H×W uint8) plus named extra outputs (B×k×H×W float)."""

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
