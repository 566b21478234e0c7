"""StainFuser: the conditional latent diffusion model, its checkpoints, sampling and weight lookup.

diffusers lives here and nowhere else in the package. Submodules load on first
use, so light helpers (configs, weight lookup, atomic writes) do not import
torch's model zoo.
"""

from importlib import import_module

_LAZY = {
    "ENV_VAR": ".lookup",
    "HF_REPO_ID": ".lookup",
    "find_weights": ".lookup",
    "ModelConfigs": ".configs",
    "load_configs": ".configs",
    "read_state_dict": ".checkpoint",
    "save_checkpoint": ".checkpoint",
    "StainFuser": ".model",
    "to_uint8": ".model",
    "StainFuserNetworks": ".networks",
    "build_networks": ".networks",
    "SAMPLERS": ".sampling",
    "denoise": ".sampling",
    "make_sampler": ".sampling",
    "ModelSize": ".size",
    "model_size": ".size",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
