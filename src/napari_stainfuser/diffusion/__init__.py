"""StainFuser: the conditional latent diffusion model, its checkpoints, sampling and weight lookup.

diffusers lives here and nowhere else in the package.
"""

from .checkpoint import read_state_dict, save_checkpoint
from .configs import ModelConfigs, load_configs
from .lookup import ENV_VAR, HF_REPO_ID, find_weights
from .model import StainFuser, to_uint8
from .networks import StainFuserNetworks, build_networks
from .sampling import SCHEDULERS, denoise, make_scheduler
from .size import ModelSize, model_size

__all__ = [
    "ENV_VAR",
    "HF_REPO_ID",
    "SCHEDULERS",
    "ModelConfigs",
    "ModelSize",
    "StainFuser",
    "StainFuserNetworks",
    "build_networks",
    "denoise",
    "find_weights",
    "load_configs",
    "make_scheduler",
    "model_size",
    "read_state_dict",
    "save_checkpoint",
    "to_uint8",
]
