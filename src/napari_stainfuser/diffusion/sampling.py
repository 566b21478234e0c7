"""The denoising loop and the schedulers it can run with.

The loop is the official one, readable top to bottom: scale the model input,
run the ControlNet and then the UNet, step the scheduler. What differs is
only what is computed once instead of at every step: the source's
ControlNet embedding, the target's cross-attention context and its keys/values.
"""

from collections.abc import Callable

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from ..errors import ParameterError
from .networks import StainFuserNetworks

# name -> (class, overrides on top of the model's scheduler config).
# The model's config is PNDM's, so it lacks the keys of the other schedulers and
# diffusers would fill in its defaults. Some of those defaults assume pixel-space
# diffusion: DDIM clips its x0 estimate to [-1, 1] (``clip_sample=True``), but
# latents scaled by 0.18215 reach |x| of several tens. Every switch that bounds
# or rescales the sample is therefore pinned off here.
_UNBOUNDED = {"thresholding": False}
SCHEDULERS: dict[str, tuple[type, dict]] = {
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),  # PLMS: the reference sampler
    "ddim": (DDIMScheduler, {**_UNBOUNDED, "clip_sample": False}),
    "dpm++": (DPMSolverMultistepScheduler, {**_UNBOUNDED, "algorithm_type": "dpmsolver++"}),
    "euler": (EulerDiscreteScheduler, {}),
}
_ALIASES = {"plms": "pndm", "dpmsolver++": "dpm++", "dpm-solver++": "dpm++", "dpmpp": "dpm++"}


def scheduler_names() -> list[str]:
    return list(SCHEDULERS)


def make_scheduler(name: str, config: dict, **overrides) -> SchedulerMixin:
    """A fresh scheduler of kind ``name`` built from the model's scheduler config.

    Schedulers keep per-run state (PLMS history, multistep buffers), so every
    sampling run gets its own instance.
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in SCHEDULERS:
        raise ParameterError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    cls, defaults = SCHEDULERS[key]
    return cls.from_config(config, **{**defaults, **overrides})


def denoise(
    networks: StainFuserNetworks,
    source: torch.Tensor,
    context: tuple[torch.Tensor, torch.Tensor],
    scheduler: SchedulerMixin,
    steps: int,
    init_noise: torch.Tensor,
    reuse_across_steps: bool = True,
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run the reverse diffusion from ``init_noise`` (unit variance) to clean latents.

    source: B×3×H×W in [0, 1], the ControlNet's condition.
    context: each network's projected target tokens (batch B or 1).
    reuse_across_steps: embed the source and project the target's keys/values
        once, instead of at every step as the official loop does (same result).
    callback(step, total) is called after every scheduler step.
    """
    scheduler.set_timesteps(steps, device=init_noise.device)
    latents = init_noise * scheduler.init_noise_sigma
    kv_cache = None
    if reuse_across_steps:
        source = networks.embed_source(source)
        kv_cache = networks.context_kv(context)
    timesteps = scheduler.timesteps
    for i, t in enumerate(timesteps):
        model_input = scheduler.scale_model_input(latents, t)
        eps = networks.predict_noise(model_input, t, source, context, kv_cache)
        latents = scheduler.step(eps, t, latents, return_dict=False)[0]
        if callback is not None:
            callback(i + 1, len(timesteps))
    return latents
