"""The denoising loop and the samplers (diffusers schedulers) it can run with.

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

from ..errors import ParameterError, opt
from ..methods import SAMPLER_ALIASES
from .networks import StainFuserNetworks

# Sampler name -> (diffusers scheduler class, overrides on top of the model's
# scheduler config). The model's config is PNDM's, so it lacks the keys of the
# other schedulers and
# diffusers would fill in its defaults. Some of those defaults assume pixel-space
# diffusion: DDIM clips its x0 estimate to [-1, 1] (``clip_sample=True``), but
# latents scaled by 0.18215 reach |x| of several tens. Every switch that bounds
# or rescales the sample is therefore pinned off here.
_UNBOUNDED = {"thresholding": False}
SAMPLERS: dict[str, tuple[type, dict]] = {
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),  # PLMS: the reference sampler
    "ddim": (DDIMScheduler, {**_UNBOUNDED, "clip_sample": False}),
    "dpm++": (DPMSolverMultistepScheduler, {**_UNBOUNDED, "algorithm_type": "dpmsolver++"}),
    "euler": (EulerDiscreteScheduler, {}),
}


def make_sampler(name: str, config: dict, **overrides) -> SchedulerMixin:
    """A fresh sampler ``name`` (a diffusers scheduler) built from the model's scheduler config.

    Samplers keep per-run state (PLMS history, multistep buffers), so every
    sampling run gets its own instance.
    """
    key = SAMPLER_ALIASES.get(str(name).lower(), str(name).lower())
    if key not in SAMPLERS:
        raise ParameterError(f"{opt('sampler')}: {name!r} is unknown; valid: {', '.join(SAMPLERS)}")
    cls, defaults = SAMPLERS[key]
    return cls.from_config(config, **{**defaults, **overrides})


def denoise(
    networks: StainFuserNetworks,
    source: torch.Tensor,
    context: tuple[torch.Tensor, torch.Tensor],
    sampler: SchedulerMixin,
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
    sampler: a diffusers scheduler from :func:`make_sampler`.
    callback(step, total) is called after every sampler step.
    """
    sampler.set_timesteps(steps, device=init_noise.device)
    latents = init_noise * sampler.init_noise_sigma
    kv_cache = None
    if reuse_across_steps:
        source = networks.embed_source(source)
        kv_cache = networks.context_kv(context)
    timesteps = sampler.timesteps
    for i, t in enumerate(timesteps):
        model_input = sampler.scale_model_input(latents, t)
        eps = networks.predict_noise(model_input, t, source, context, kv_cache)
        latents = sampler.step(eps, t, latents, return_dict=False)[0]
        if callback is not None:
            callback(i + 1, len(timesteps))
    return latents
