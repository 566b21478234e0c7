"""Parameter count and weight memory of a StainFuser model, without allocating it."""

import os
from dataclasses import dataclass

import torch

from .configs import load_configs
from .networks import build_networks


@dataclass(frozen=True)
class ModelSize:
    """Parameters per part (``vae``, ``controlnet``, ``unet``, ``projectors``)."""

    parameters: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parameters.values())

    def weight_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        return self.total * torch.empty((), dtype=dtype).element_size()

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in self.parameters.items())
        return (
            f"{self.total / 1e6:.1f} M parameters ({parts}); weights "
            f"{self.weight_bytes(torch.float32) / 2**30:.2f} GiB in fp32, "
            f"{self.weight_bytes(torch.float16) / 2**30:.2f} GiB in fp16"
        )


def model_size(config_dir: str | os.PathLike | None = None) -> ModelSize:
    """Size of the model the configs in ``config_dir`` describe (None: SD2.1-base).

    The model is built on the meta device, so even the full 1.3 B-parameter
    model costs no memory and well under a second or two.
    """
    nets = build_networks(load_configs(config_dir), device="meta")

    def count(module: torch.nn.Module, skip: str | None = None) -> int:
        return sum(
            p.numel() for n, p in module.named_parameters() if not (skip and n.startswith(skip))
        )

    projectors = count(nets.conditioner.encoder_projector) + count(
        nets.noise_predictor.encoder_projector
    )
    return ModelSize(
        {
            "vae": count(nets.encoder),
            "controlnet": count(nets.conditioner, skip="encoder_projector."),
            "unet": count(nets.noise_predictor, skip="encoder_projector."),
            "projectors": projectors,
        }
    )
