"""The StainFuser fine-tuning recipe: what trains, what stays frozen, and the loss.

Trained (the published recipe, ``unlock_decoder: true, unlock_encoder: false``):

- the whole ControlNet (``conditioner.*``), including its conditioning
  embedding, zero convolutions and its token projector;
- the UNet decoder: ``noise_predictor.up_blocks``, ``.conv_norm_out``,
  ``.conv_out`` (``conv_act`` has no parameters);
- the UNet's token projector ``noise_predictor.encoder_projector``.

Frozen:

- the VAE (``encoder.*``): it only encodes the target and stylised tiles;
- the UNet encoder: ``noise_predictor.conv_in``, ``.time_embedding``
  (``time_proj`` has no parameters), ``.down_blocks``, ``.mid_block``, and
  any class/addition embedding a custom config might add.

Loss: the stylised tile's VAE latents are noised with the DDPM forward
process of the model's own scheduler config (same betas, same number of
training timesteps) at a uniformly drawn timestep, and the networks predict
the noise (epsilon MSE; v-prediction configs regress the velocity instead).
As in the published training code, both the target and the stylised tile are
encoded with a draw from the VAE posterior; the target enters in [0, 1]
(not rescaled, as at inference), the stylised tile in [-1, 1].
"""

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from ..errors import ParameterError

TRAINED_UNET_PARTS = ("up_blocks.", "conv_norm_out.", "conv_out.", "encoder_projector.")


def is_trained(name: str) -> bool:
    """Whether the parameter of this official-layout key is trained by the recipe."""
    if name.startswith("conditioner."):
        return True
    if name.startswith("noise_predictor."):
        return name[len("noise_predictor.") :].startswith(TRAINED_UNET_PARTS)
    return False


def set_trainable(networks) -> list[tuple[str, torch.nn.Parameter]]:
    """Switch gradients on for the trained parts only; return them in a fixed order."""
    networks.requires_grad_(False)
    trained = []
    for name, p in networks.named_parameters():
        if is_trained(name):
            p.requires_grad_(True)
            trained.append((name, p))
    networks.train()
    networks.encoder.eval()  # frozen: keep it in inference behaviour
    return trained


def training_scheduler(scheduler_config: dict) -> DDPMScheduler:
    """The DDPM forward process matching the model's scheduler config."""
    keys = (
        "num_train_timesteps",
        "beta_start",
        "beta_end",
        "beta_schedule",
        "trained_betas",
        "prediction_type",
    )
    cfg = {k: scheduler_config[k] for k in keys if k in scheduler_config}
    if cfg.get("prediction_type", "epsilon") not in ("epsilon", "v_prediction"):
        raise ParameterError(
            f"scheduler prediction_type {cfg['prediction_type']!r} is not trainable here "
            "(epsilon or v_prediction)"
        )
    return DDPMScheduler(**cfg)


def _posterior_sample(vae, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    dist = vae.encode(images.to(vae.dtype)).latent_dist
    # Drawn on the CPU generator so a seed gives the same draw on any device.
    eps = torch.randn(dist.mean.shape, generator=gen).to(dist.mean.device, dist.mean.dtype)
    return dist.mean + dist.std * eps


def training_loss(
    networks,
    scheduler: DDPMScheduler,
    source: torch.Tensor,
    target: torch.Tensor,
    stylised: torch.Tensor,
    gen: torch.Generator,
    autocast,
) -> torch.Tensor:
    """Epsilon MSE for one batch.

    source, target: B×3×H×W float in [0, 1]; stylised: B×3×H×W float in [-1, 1].
    gen: CPU generator for every random draw of this step (latent samples,
    noise, timesteps), so a step is reproducible from its seed alone.
    autocast: a context manager factory for the mixed-precision region.
    """
    vae = networks.encoder
    scale = networks.scaling_factor
    upcast = bool(getattr(vae.config, "force_upcast", False))
    with (
        torch.no_grad(),
        torch.autocast(source.device.type, enabled=False) if upcast else autocast(),
    ):
        if upcast:
            target, stylised = target.float(), stylised.float()
        target_latents = (_posterior_sample(vae, target, gen) * scale).float()
        latents = (_posterior_sample(vae, stylised, gen) * scale).float()
    noise = torch.randn(latents.shape, generator=gen).to(latents.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=gen)
    t = t.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    with autocast():
        pred = networks(noisy, t, source, target_latents)
    if scheduler.config.prediction_type == "v_prediction":
        goal = scheduler.get_velocity(latents, noise, t)
    else:
        goal = noise
    return F.mse_loss(pred.float(), goal.float())
