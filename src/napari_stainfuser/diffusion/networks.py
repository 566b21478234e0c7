"""StainFuser's networks, assembled from diffusers components.

The module tree mirrors the official checkpoint's flat state dict, so the
same key names load here and in the official code:

- ``encoder.``: the ``AutoencoderKL`` (VAE);
- ``conditioner.``: a ``ControlNetModel`` initialised from the UNet, with the
  default conditioning embedding (16, 32, 96, 256); it sees the source tile;
- ``noise_predictor.``: the ``UNet2DConditionModel``;
- ``conditioner.encoder_projector`` and ``noise_predictor.encoder_projector``:
  one ``Linear(latent_channels → cross_attention_dim)`` per network, lifting
  the target's latent tokens to the cross-attention width.
"""

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
from torch import nn

from ..errors import CheckpointError
from .attention import KVCache, cross_attention_kv, install_cached_processors
from .configs import ModelConfigs

CONDITIONING_CHANNELS = (16, 32, 96, 256)


def _projector(latent_channels: int, width: int) -> nn.Module:
    # The official model only adds a projector when the widths differ; an
    # Identity has no parameters, so the key set stays the same as theirs.
    return nn.Linear(latent_channels, width) if width != latent_channels else nn.Identity()


class PrecomputableConditioningEmbedding(ControlNetConditioningEmbedding):
    """The ControlNet's source embedding, letting an already embedded source through.

    The source tile is the same at every denoising step, so the sampler embeds
    it once and hands the ControlNet the result. An input with the embedding's
    channel count (320 for SD2.1) rather than RGB's 3 is recognised as such;
    weights and key names are those of the stock module.
    """

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        if conditioning.shape[1] == self.conv_out.out_channels:
            return conditioning
        return super().forward(conditioning)


class StainFuserNetworks(nn.Module):
    """The VAE, the ControlNet and the UNet, plus the two token projectors."""

    def __init__(self, configs: ModelConfigs, controlnet_from_unet: bool = True):
        super().__init__()
        try:
            unet = UNet2DConditionModel.from_config(configs.unet)
            vae = AutoencoderKL.from_config(configs.vae)
            # Copying the UNet encoder's weights is the official initialisation
            # for training; skip it when the weights come from a checkpoint anyway.
            controlnet = ControlNetModel.from_unet(
                unet,
                conditioning_embedding_out_channels=CONDITIONING_CHANNELS,
                load_weights_from_unet=controlnet_from_unet,
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise CheckpointError(
                f"configs from {configs.origin} do not build a model: {exc}"
            ) from None
        latent_channels = vae.config.latent_channels
        width = unet.config.cross_attention_dim
        # from_unet keeps the RGB channel order, so no flip touches a precomputed embedding.
        controlnet.controlnet_cond_embedding.__class__ = PrecomputableConditioningEmbedding
        controlnet.encoder_projector = _projector(latent_channels, width)
        unet.encoder_projector = _projector(latent_channels, width)
        self.encoder = vae
        self.conditioner = controlnet
        self.noise_predictor = unet
        self.configs = configs
        install_cached_processors(controlnet, "conditioner")
        install_cached_processors(unet, "noise_predictor")

    @property
    def dtype(self) -> torch.dtype:
        return self.noise_predictor.dtype

    @property
    def latent_channels(self) -> int:
        return self.encoder.config.latent_channels

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.encoder.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return self.encoder.config.scaling_factor

    @property
    def target_size(self) -> int:
        """Edge in pixels of the target the model was trained with (its latent grid × 8)."""
        return self.noise_predictor.config.sample_size * self.vae_scale_factor

    def context(self, target_latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Target latents B×C×h×w -> the cross-attention context of each network.

        The latents become B×(h·w)×C tokens in row-major order (the official
        reshape + permute), then each network's projector lifts them.
        """
        tokens = target_latents.flatten(2).transpose(1, 2).to(self.dtype)
        return (
            self.conditioner.encoder_projector(tokens),
            self.noise_predictor.encoder_projector(tokens),
        )

    def embed_source(self, source: torch.Tensor) -> torch.Tensor:
        """Source tiles in [0, 1] -> the ControlNet's condition embedding (step-invariant)."""
        return self.conditioner.controlnet_cond_embedding(source.to(self.dtype))

    def context_kv(self, context: tuple[torch.Tensor, torch.Tensor]) -> KVCache:
        """Keys/values of every cacheable cross-attention layer for this context."""
        cache: KVCache = {}
        cross_attention_kv(self.conditioner, "conditioner", context[0], cache)
        cross_attention_kv(self.noise_predictor, "noise_predictor", context[1], cache)
        return cache

    def predict_noise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        source: torch.Tensor,
        context: tuple[torch.Tensor, torch.Tensor],
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """One network evaluation: the ControlNet, then the UNet with its residuals.

        ``source`` is the RGB source in [0, 1] or its :meth:`embed_source` embedding.
        """
        # Inputs follow the weights' dtype so that half-precision weights run without autocast.
        x_t, source = x_t.to(self.dtype), source.to(self.dtype)
        batch = x_t.shape[0]
        ctx_c, ctx_u = (c.expand(batch, -1, -1) if c.shape[0] != batch else c for c in context)
        kwargs = {"kv_cache": kv_cache} if kv_cache else None
        down_residuals, mid_residual = self.conditioner(
            x_t,
            t,
            encoder_hidden_states=ctx_c,
            controlnet_cond=source,
            cross_attention_kwargs=kwargs,
            return_dict=False,
        )
        return self.noise_predictor(
            x_t,
            t,
            encoder_hidden_states=ctx_u,
            down_block_additional_residuals=down_residuals,
            mid_block_additional_residual=mid_residual,
            cross_attention_kwargs=kwargs,
            return_dict=False,
        )[0]

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        source: torch.Tensor,
        target_latents: torch.Tensor,
    ) -> torch.Tensor:
        """eps for noisy latents ``x_t`` at ``t``, source tiles in [0, 1] and target latents."""
        return self.predict_noise(x_t, t, source, self.context(target_latents))


def build_networks(
    configs: ModelConfigs, device: str | torch.device = "meta", controlnet_from_unet: bool = False
) -> StainFuserNetworks:
    """Build the networks directly on ``device``.

    On ``"meta"`` no memory is allocated: use it to count parameters, or as
    the skeleton a checkpoint is assigned into.
    """
    try:
        with torch.device(device):
            return StainFuserNetworks(configs, controlnet_from_unet=controlnet_from_unet)
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError, ZeroDivisionError) as e:
        # diffusers raises whatever a bad size makes torch raise: say which configs.
        why = " ".join(str(e).split())[:300]
        raise CheckpointError(
            f"{configs.origin}: the configs do not describe a model that can be built "
            f"({type(e).__name__}: {why})"
        ) from None
