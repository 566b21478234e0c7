"""The settings of a virtual-IHC training run, checked without torch.

``stainfuser train virtual-ihc`` validates its flags through this before torch
loads, so a mistake is reported at once; :mod:`.ihc_trainer` runs the training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import ParameterError, opt

CONFIGS = ("tiny", "base")


@dataclass
class IHCTrainConfig:
    """Settings of one run (the CLI's flags, one to one)."""

    pairs: list[str]
    markers: list[str]
    out: str
    config: str = "tiny"
    tile: int = 64
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-2
    ihc_weight: float = 1.0
    mask_weight: float = 1.0
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    mpp: float | None = None
    augment: bool = True
    resume: bool = False
    progress: bool = True
    mask_params: dict = field(default_factory=dict)

    def validate(self) -> None:
        if not self.pairs:
            raise ParameterError(f"{opt('pairs')}: give at least one pair folder")
        if len(self.markers) != len(self.pairs):
            raise ParameterError(
                f"{opt('marker')}: give one marker per {opt('pairs')} folder "
                f"({len(self.pairs)} folders, {len(self.markers)} markers)"
            )
        if self.config not in CONFIGS:
            raise ParameterError(f"{opt('config')}: {self.config!r} is unknown; valid: tiny, base")
        from ..diffusion.ihc_config import MULTIPLE_OF

        if self.tile < 64 or self.tile % MULTIPLE_OF:
            raise ParameterError(
                f"{opt('tile')} {self.tile}: must be at least 64 and a multiple of {MULTIPLE_OF}"
            )
        for name in ("steps", "batch_size", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ParameterError(f"{opt(name)}: must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ParameterError(f"{opt('lr')} must be > 0 and {opt('weight_decay')} >= 0")
        if self.ihc_weight < 0 or self.mask_weight < 0 or self.ihc_weight + self.mask_weight == 0:
            raise ParameterError(
                f"{opt('ihc_weight')} and {opt('mask_weight')}: non-negative, not both zero"
            )
        if self.keep_checkpoints < 0:
            raise ParameterError(f"{opt('keep_checkpoints')}: must be >= 0")

    def settings(self) -> dict:
        return dataclasses.asdict(self)
