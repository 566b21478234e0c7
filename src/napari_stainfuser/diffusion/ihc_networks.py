"""The virtual-IHC networks: one shared H&E encoder and two denoisers (IHC image, cell mask).

This is a StainDiffuser-style dual-task diffusion model (Kataria, Knudsen,
Elhabian, arXiv 2403.11340): two diffusion processes learn at once from the
same H&E, one generating the IHC and one segmenting the marker-positive
cells, and the segmentation signal helps the IHC branch converge on
thousands of pairs instead of millions.

Choices, and why:

* **Pixel space, not latent space.** The model must train from scratch on a
  user's own pairs, without pretrained weights; an SD VAE would be a 84M
  parameter pretrained component, it was never trained on H-DAB, and its 8×
  latent grid blurs the cell-scale mask the second branch predicts. A
  pixel-space UNet on 64–512 px tiles is small enough to train on a CPU in
  the ``tiny`` configuration.
* **The shared encoder** turns the H&E into multi-scale features (full,
  ½, ¼ and ⅛ resolution). Both branches use them in two ways: the
  full-resolution features are concatenated to the noisy input (the pixel
  alignment a segmentation needs), and the ¼ and ⅛ features, pooled to
  tokens at strides 16 and 32 with a sinusoidal position code, are the
  context of each branch's cross-attention (the tissue context around a
  cell). Each branch has its own token projection and its own attention
  weights: task-specific attention over one shared representation.
* **Multi-marker** through a marker embedding: both branches take the
  marker as a class label, added to the timestep embedding (diffusers'
  ``num_class_embeds``), so one checkpoint serves N markers and the mask
  branch predicts the chosen marker's mask.
* **x0 prediction** (``prediction_type="sample"``): the branches predict
  the clean image and mask. With DDIM or DPM-Solver++ a handful of steps then
  suffices, and the mask branch's output is directly a probability map.

The denoisers are diffusers ``UNet2DConditionModel``; the encoder is built
from diffusers' ``ResnetBlock2D`` and ``Downsample2D``.
"""

from __future__ import annotations

import math

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.resnet import Downsample2D, ResnetBlock2D
from torch import nn

from ..errors import ParameterError, opt
from .ihc_config import BRANCHES, CHANNELS, MULTIPLE_OF, VirtualIHCConfig, preset

__all__ = [
    "BRANCHES", "CHANNELS", "MULTIPLE_OF", "Branch", "HEEncoder", "VirtualIHCConfig",
    "VirtualIHCNetworks", "build", "position_code", "preset",
]  # fmt: skip


def position_code(h: int, w: int, dim: int, stride: int, device, dtype) -> torch.Tensor:
    """(h·w)×dim sinusoidal code of token positions in pixels (stride × index)."""
    quarter = dim // 4
    freqs = torch.exp(
        -math.log(10_000.0) * torch.arange(quarter, device=device, dtype=torch.float32) / quarter
    )
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride / 16.0
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride / 16.0
    ay, ax = ys[:, None] * freqs[None], xs[:, None] * freqs[None]
    code_y = torch.cat([ay.sin(), ay.cos()], 1)[:, None, :].expand(h, w, 2 * quarter)
    code_x = torch.cat([ax.sin(), ax.cos()], 1)[None, :, :].expand(h, w, 2 * quarter)
    code = torch.cat([code_y, code_x], -1).reshape(h * w, 4 * quarter)
    if code.shape[1] < dim:
        code = torch.nn.functional.pad(code, (0, dim - code.shape[1]))
    return code.to(dtype)


class HEEncoder(nn.Module):
    """H&E (B×3×H×W in [-1, 1]) -> features at 1, ½, ¼ and ⅛ resolution."""

    def __init__(self, channels: tuple[int, ...], groups: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        prev = channels[0]
        for i, ch in enumerate(channels):
            self.blocks.append(
                ResnetBlock2D(in_channels=prev, out_channels=ch, temb_channels=None, groups=groups)
            )
            if i < len(channels) - 1:
                self.downs.append(
                    Downsample2D(ch, use_conv=True, out_channels=ch, padding=1, name="op")
                )
            prev = ch

    def forward(self, he: torch.Tensor) -> list[torch.Tensor]:
        x = self.conv_in(he)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x, None)
            feats.append(x)
            if i < len(self.downs):
                x = self.downs[i](x)
        return feats


class Branch(nn.Module):
    """One denoiser with its own attention on the shared H&E features."""

    def __init__(self, cfg: VirtualIHCConfig, out_channels: int):
        super().__init__()
        enc = cfg.encoder_channels
        d = cfg.context_dim
        # Task-specific projections of the shared tokens (¼ at stride 16, ⅛ at stride 32).
        self.tokens_quarter = nn.Linear(enc[2], d)
        self.tokens_eighth = nn.Linear(enc[3], d)
        self.token_norm = nn.LayerNorm(d)
        n = len(cfg.unet_channels)
        self.unet = UNet2DConditionModel(
            sample_size=cfg.tile,
            in_channels=out_channels + enc[0],
            out_channels=out_channels,
            # Attention only at the coarsest level and in the middle block, and
            # only to the H&E tokens: self-attention over a 512² tile's ½-resolution
            # grid would be a 65k × 65k matrix.
            down_block_types=("DownBlock2D",) * (n - 1) + ("CrossAttnDownBlock2D",),
            up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
            only_cross_attention=True,
            block_out_channels=cfg.unet_channels,
            layers_per_block=cfg.layers_per_block,
            cross_attention_dim=d,
            attention_head_dim=cfg.heads,
            norm_num_groups=cfg.groups,
            num_class_embeds=len(cfg.markers),
        )

    def context(self, feats: list[torch.Tensor]) -> torch.Tensor:
        f2 = nn.functional.avg_pool2d(feats[2], 4)  # stride 16 px
        f3 = nn.functional.avg_pool2d(feats[3], 4)  # stride 32 px
        d = self.tokens_quarter.out_features
        toks = []
        for f, proj, stride in ((f2, self.tokens_quarter, 16), (f3, self.tokens_eighth, 32)):
            b, _, h, w = f.shape
            t = proj(f.flatten(2).transpose(1, 2))
            toks.append(t + position_code(h, w, d, stride, f.device, t.dtype))
        return self.token_norm(torch.cat(toks, 1))

    def forward(self, noisy, t, feats, context, marker) -> torch.Tensor:
        x = torch.cat([noisy, feats[0].to(noisy.dtype)], 1)
        return self.unet(
            x, t, encoder_hidden_states=context, class_labels=marker, return_dict=False
        )[0]


class VirtualIHCNetworks(nn.Module):
    """The shared encoder and the ``ihc`` and ``mask`` branches."""

    def __init__(self, cfg: VirtualIHCConfig):
        super().__init__()
        self.config = cfg
        self.encoder = HEEncoder(cfg.encoder_channels, cfg.groups)
        self.ihc = Branch(cfg, CHANNELS["ihc"])
        self.mask = Branch(cfg, CHANNELS["mask"])

    def branch(self, name: str) -> Branch:
        return getattr(self, name)

    def encode(self, he: torch.Tensor) -> list[torch.Tensor]:
        """Shared features of an H&E batch (B×3×H×W, values in [-1, 1])."""
        h, w = he.shape[-2:]
        if h % MULTIPLE_OF or w % MULTIPLE_OF:
            raise ParameterError(
                f"{opt('tile')}: virtual-IHC tiles must be a multiple of {MULTIPLE_OF} px a side, "
                f"got {h}×{w}"
            )
        return self.encoder(he)

    def contexts(self, feats) -> dict[str, torch.Tensor]:
        return {name: self.branch(name).context(feats) for name in BRANCHES}

    def forward(self, he, noisy: dict, t, marker) -> dict[str, torch.Tensor]:
        """x0 predictions of both branches for one noisy IHC and one noisy mask."""
        feats = self.encode(he)
        ctx = self.contexts(feats)
        return {n: self.branch(n)(noisy[n], t, feats, ctx[n], marker) for n in BRANCHES}


def build(cfg: VirtualIHCConfig, seed: int = 0) -> VirtualIHCNetworks:
    """Networks with freshly initialised weights (the same for the same seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VirtualIHCNetworks(cfg)
