"""Cross-attention with keys and values computed once per sampling run.

StainFuser's cross-attention context is the target's VAE latents: 4096 tokens
for a 512² target, identical at every denoising step and, when one target
styles a whole slide, for every tile of the batch. The stock processor
projects those tokens to keys and values in every attention layer at every
step for every tile. Here they are projected once (batch 1 when the batch
shares one target) and reused; the attention itself is unchanged, so the
result is the same up to float rounding.

The cache travels as ``cross_attention_kwargs={"kv_cache": {...}}`` rather
than as processor state, so a ``torch.compile``-d network sees it as an
ordinary input and is not recompiled for every new target.
"""

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

KVCache = dict[str, tuple[torch.Tensor, torch.Tensor]]


class CachedKVAttnProcessor(AttnProcessor2_0):
    """SDPA attention that takes precomputed keys/values for its layer from ``kv_cache``.

    Without a cache entry for its layer it is exactly diffusers' default
    ``AttnProcessor2_0``. It is installed on self-attention layers too, so
    that they accept the ``kv_cache`` keyword instead of warning about it.
    """

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        cached = kv_cache.get(self.name) if kv_cache is not None else None
        if cached is None or attention_mask is not None or hidden_states.ndim != 3:
            return super().__call__(
                attn, hidden_states, encoder_hidden_states, attention_mask=attention_mask, temb=temb
            )
        key, value = cached
        batch_size = hidden_states.shape[0]
        if key.shape[0] != batch_size:
            key = key.expand(batch_size, -1, -1, -1)
            value = value.expand(batch_size, -1, -1, -1)
        residual = hidden_states
        head_dim = key.shape[-1]
        query = attn.to_q(hidden_states)
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _cacheable(attn: Attention) -> bool:
    # Layers that normalise or mix the query side with the spatial map before
    # projecting need the full processor; SD2.1's transformer blocks never do.
    return attn.is_cross_attention and attn.spatial_norm is None and attn.group_norm is None


def install_cached_processors(network: torch.nn.Module, prefix: str) -> None:
    """Give every attention layer of ``network`` a :class:`CachedKVAttnProcessor`."""
    for name, module in network.named_modules():
        if isinstance(module, Attention):
            module.set_processor(CachedKVAttnProcessor(f"{prefix}.{name}"))


def cross_attention_kv(
    network: torch.nn.Module, prefix: str, context: torch.Tensor, out: KVCache
) -> KVCache:
    """Project ``context`` (B×N×D) to each cacheable cross-attention layer's keys/values."""
    for name, module in network.named_modules():
        if not (isinstance(module, Attention) and _cacheable(module)):
            continue
        tokens = context
        if module.norm_cross is not None:
            tokens = module.norm_encoder_hidden_states(tokens)
        key = module.to_k(tokens)
        value = module.to_v(tokens)
        batch, length, inner = key.shape
        head_dim = inner // module.heads
        key = key.view(batch, length, module.heads, head_dim).transpose(1, 2)
        value = value.view(batch, length, module.heads, head_dim).transpose(1, 2)
        if module.norm_k is not None:
            key = module.norm_k(key)
        out[f"{prefix}.{name}"] = (key, value)
    return out
