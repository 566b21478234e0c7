"""StainFuser: conditional latent diffusion for stain normalisation, as a stainer.

The source tile enters through the ControlNet (it keeps the structure); the
target's style enters through cross-attention on its VAE latents. The target
is encoded once per :meth:`StainFuser.set_target` and reused for every tile.
"""

import contextlib
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import resolve_device
from ..errors import ParameterError, opt
from ..methods import SAMPLER_ALIASES
from ..stainer import StainerSpec, StainResult
from .checkpoint import load_weights
from .configs import ModelConfigs, has_configs, load_configs
from .lookup import find_weights
from .networks import StainFuserNetworks, build_networks
from .official import PREPROCESS, posterior_noise, scale_batch
from .sampling import denoise, make_sampler
from .size import ModelSize, model_size

log = logging.getLogger(__name__)
# Targets smaller than this on a side are refused; larger ones of any size are used.
MIN_TARGET_SIDE = 64
# A target with less tissue than this share is used, with a warning.
MOSTLY_GLASS = 0.5

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def vae_runs_fp32(vae_config, compute_dtype: torch.dtype) -> bool:
    """Whether the VAE must run in float32 while the rest computes in ``compute_dtype``.

    SD2.1's VAE overflows in float16 (its config says ``force_upcast``); bfloat16
    has float32's range and needs no upcast. Training honours the same flag.
    """
    return bool(vae_config.get("force_upcast", False)) and compute_dtype == torch.float16


def _check_images(x: torch.Tensor, name: str, multiple_of: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ParameterError(f"{name} must be a B×3×H×W tensor, got {shape}")
    h, w = x.shape[-2:]
    if h % multiple_of or w % multiple_of:
        raise ParameterError(
            f"{name} size {h}×{w} is not divisible by {multiple_of} (the VAE's downsampling factor)"
        )


def _check_unit_range(x: torch.Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise ParameterError(f"{name} must be float in [0, 1], got {x.dtype}")
    lo, hi = torch.aminmax(x.detach())
    if lo < 0 or hi > 1:
        raise ParameterError(
            f"{name} must be in [0, 1], got values in [{float(lo):.3g}, {float(hi):.3g}]"
        )


def image_to_unit_tensor(image, name: str = "target") -> torch.Tensor:
    """An RGB image (H×W×3 or 3×H×W or 1×3×H×W; uint8 or float in [0, 1]) as 1×3×H×W float32."""
    x = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.array(image))
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or 3 not in (x.shape[0], x.shape[-1]):
        raise ParameterError(f"{name} must be an RGB image (H×W×3 or 3×H×W), got {tuple(x.shape)}")
    if x.shape[-1] == 3 and x.shape[0] != 3:
        x = x.permute(2, 0, 1)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.is_floating_point():
        x = x.float()
        _check_unit_range(x, name)
    else:
        raise ParameterError(f"{name} must be uint8 or float in [0, 1], got {x.dtype}")
    return x.unsqueeze(0).contiguous()


def _check_target_tissue(image: np.ndarray) -> None:
    from ..stain.tissue import tissue_mask

    h, w = image.shape[:2]
    share = float(tissue_mask(image, name="target").mask.mean())
    if share == 0.0:
        raise ParameterError(
            f"{opt('target')}: no tissue in the {h}×{w} px it is encoded from (glass or a flat "
            "colour); give a region with stained tissue"
        )
    if share < MOSTLY_GLASS:
        log.warning(
            "target: only %.0f%% of the %d×%d px it is encoded from is tissue; the rest is glass",
            100 * share, h, w,
        )  # fmt: skip


def _fill_grid(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Scale a 1×3×H×W target up, bilinearly, until its short side is at least
    ``grid`` px; returned unchanged (the same tensor) when it already is."""
    h, w = x.shape[-2:]
    if min(h, w) >= grid:
        return x
    k = grid / min(h, w)
    size = (max(grid, round(h * k)), max(grid, round(w * k)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Decoder output in [-1, 1] -> uint8, exactly as the official scripts convert it."""
    return ((images.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)


class StainFuser:
    """A loaded StainFuser model: low-level diffusion API plus the stainer protocol.

    Build it with :meth:`load` (weights from a checkpoint) or :meth:`from_configs`
    (random weights, for training from scratch and benchmarks).
    """

    def __init__(
        self,
        networks: StainFuserNetworks,
        device: str | torch.device = "cpu",
        precision: str | None = None,
        *,
        steps: int = 20,
        sampler: str = "pndm",
        seed: int = 0,
        tile_size: int | None = None,
        overlap: int | None = None,
        work_mpp: float | None = 0.5,
        batch_size: int | None = None,
        channels_last: bool | None = None,
        reuse_across_steps: bool = True,
        preprocess: str = "ours",
    ):
        # Every option is checked before gigabytes of weights move to the device.
        self.device = resolve_device(device)
        if preprocess not in PREPROCESS:
            raise ParameterError(
                f"preprocess must be one of {', '.join(PREPROCESS)}, got {preprocess!r}"
            )
        self.preprocess = preprocess
        if preprocess == "official" and precision not in (None, "fp32"):
            raise ParameterError(
                f"precision {precision!r}: preprocess 'official' runs in fp32, as the official "
                "script does"
            )
        precision = "fp32" if preprocess == "official" else precision
        self.precision = self._resolve_precision(precision)
        make_sampler(sampler, networks.configs.scheduler)
        self.tile_size = int(tile_size or networks.target_size)
        if self.tile_size % networks.vae_scale_factor:
            raise ParameterError(
                f"tile_size {self.tile_size} is not divisible by {networks.vae_scale_factor}"
            )
        self.steps = int(steps)
        if self.steps < 1:
            raise ParameterError(f"steps must be at least 1, got {steps}")
        self.sampler = SAMPLER_ALIASES.get(str(sampler).lower(), str(sampler).lower())
        self.seed = int(seed)
        # 64 px for SD2.1-base's 512² tiles; a quarter of a smaller model's tile.
        self.overlap = int(overlap) if overlap is not None else min(64, self.tile_size // 4)
        self.work_mpp = work_mpp
        self.batch_size = int(batch_size or (8 if self.device.type == "cuda" else 2))
        self.reuse_across_steps = reuse_across_steps
        self._target_latents: torch.Tensor | None = None
        self._target_posterior: tuple[torch.Tensor, torch.Tensor] | None = None
        self._target_image: np.ndarray | None = None
        self.checkpoint: str | None = None  # where the weights came from (set by load)
        self.networks = networks.to(self.device).eval().requires_grad_(False)
        vae = self.networks.encoder
        if vae_runs_fp32(vae.config, vae.dtype):
            vae.float()  # float16 weights: keep the VAE's in float32
        # Under float16 autocast the VAE runs with autocast off, in float32.
        self._vae_fp32 = vae_runs_fp32(vae.config, PRECISIONS[self.precision])
        if channels_last if channels_last is not None else self.device.type == "cuda":
            # Tensor-core convolutions want NHWC; on the CPU it is not reliably faster.
            self.networks.to(memory_format=torch.channels_last)

    # -- construction ---------------------------------------------------------------

    @classmethod
    def load(
        cls,
        checkpoint: str | os.PathLike | None = None,
        config_dir: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        **options,
    ) -> "StainFuser":
        """Load weights strictly from ``checkpoint`` (.safetensors, .pth or our directory).

        ``checkpoint=None`` looks in ``$STAINFUSER_WEIGHTS`` and the local Hugging
        Face cache (see :func:`find_weights`). ``config_dir=None`` uses the
        configs saved next to the weights, else the built-in SD2.1-base ones.
        ``options`` go to the constructor (precision, steps, sampler, seed,
        tile_size, overlap, work_mpp, batch_size, channels_last, reuse_across_steps).
        """
        resolve_device(device)  # refuse a missing GPU before reading gigabytes
        path = find_weights(checkpoint)
        if config_dir is None and has_configs(path.parent):
            config_dir = path.parent
        configs = load_configs(config_dir)
        networks = build_networks(configs, device="meta")
        # A force_upcast VAE is read in float32 directly: no round trip through float16.
        keep = ("encoder.",) if vae_runs_fp32(configs.vae, dtype) else ()
        load_weights(networks, path, dtype=dtype, fp32_prefixes=keep)
        model = cls(networks, device=device, **options)
        model.checkpoint = str(path)
        model._load_dtype = dtype
        return model

    @classmethod
    def from_configs(
        cls,
        config_dir: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        init_seed: int | None = None,
        **options,
    ) -> "StainFuser":
        """A randomly initialised model (ControlNet copied from the UNet, as officially).

        ``init_seed`` makes the weights reproducible without touching the
        caller's random state: the initialisation runs on a forked RNG.
        """
        dev = resolve_device(device)
        configs = load_configs(config_dir)
        rng_devices = []
        if dev.type == "cuda":
            rng_devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
        with torch.random.fork_rng(devices=rng_devices, enabled=init_seed is not None):
            if init_seed is not None:
                torch.manual_seed(init_seed)
            networks = build_networks(configs, device=dev, controlnet_from_unet=True)
        return cls(networks.to(dtype), device=dev, **options)

    @staticmethod
    def describe(config_dir: str | os.PathLike | None = None) -> ModelSize:
        """Parameter count and weight memory, computed on the meta device."""
        return model_size(config_dir)

    # -- properties -------------------------------------------------------------------

    @property
    def configs(self) -> ModelConfigs:
        return self.networks.configs

    @property
    def dtype(self) -> torch.dtype:
        return self.networks.dtype

    @property
    def multiple_of(self) -> int:
        return self.networks.vae_scale_factor

    @property
    def spec(self) -> StainerSpec:
        return StainerSpec(
            tile_size=self.tile_size,
            overlap=self.overlap,
            mpp=self.work_mpp,
            per_pixel=False,
            deterministic=True,
            device=str(self.device),
            batch_size=self.batch_size,
            multiple_of=self.multiple_of,
            latent_channels=self.networks.latent_channels,
            latent_factor=self.networks.vae_scale_factor,
        )

    def _resolve_precision(self, precision: str | None) -> str:
        if precision is None:
            return "fp16" if self.device.type == "cuda" else "fp32"
        if precision not in PRECISIONS:
            raise ParameterError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        if precision == "fp16" and self.device.type != "cuda":
            raise ParameterError(f"precision 'fp16' needs CUDA; device is {self.device}")
        return precision

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision])

    def _vae_autocast(self):
        if self._vae_fp32:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return self._autocast()

    # -- speed switches ---------------------------------------------------------------

    def compile(self, vae: bool = True, **kwargs) -> "StainFuser":
        """``torch.compile`` the ControlNet, the UNet and (``vae``) the VAE decoder in place.

        The modules keep their key names, so checkpoints save as before. The
        first batch of each new tile shape pays the compilation.
        """
        self.networks.conditioner.compile(**kwargs)
        self.networks.noise_predictor.compile(**kwargs)
        if vae:
            self.networks.encoder.decoder.compile(**kwargs)
        return self

    def enable_vae_tiling(self) -> "StainFuser":
        """Encode/decode tiles larger than the VAE's sample size in overlapping pieces."""
        self.networks.encoder.enable_tiling()
        return self

    # -- low-level diffusion API -------------------------------------------------------

    def _latent_grid_check(self, target: torch.Tensor) -> None:
        need = self.networks.target_size
        h, w = target.shape[-2:]
        if h < need or w < need:
            raise ParameterError(
                f"target {h}×{w} is smaller than the model's latent grid "
                f"({need}×{need} px = {need // self.multiple_of}² latents)"
            )

    @torch.inference_mode()
    def encode_target(
        self,
        target: torch.Tensor,
        sample: bool = False,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Target tiles B×3×H×W in [0, 1] -> latents B×C×H/8×W/8 (× scaling_factor).

        The target is not rescaled to [-1, 1], as in the official inference.
        ``sample=False`` takes the posterior mean (deterministic, our default);
        ``sample=True`` draws from the posterior as the official ``.sample()``
        does: ``(mean + std · noise) · scaling_factor``, with ``noise`` (B×C×h×w
        N(0, 1)) if given, else drawn from ``generator``.
        """
        mean, std = self._posterior(target)
        if sample:
            if noise is None:
                noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32)
            elif tuple(noise.shape) != tuple(mean.shape):
                raise ParameterError(
                    f"noise must have shape {tuple(mean.shape)}, got {tuple(noise.shape)}"
                )
            z = mean + std * noise.to(mean.device, mean.dtype)
        else:
            z = mean
        return (z * self.networks.scaling_factor).float()

    @torch.inference_mode()
    def _posterior(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE posterior's mean and std (float32) of target tiles in [0, 1]."""
        _check_images(target, "target", self.multiple_of)
        _check_unit_range(target, "target")
        self._latent_grid_check(target)
        vae = self.networks.encoder
        with self._vae_autocast():
            dist = vae.encode(target.to(self.device, vae.dtype)).latent_dist
        # diffusers clamps logvar to [-30, 20] and takes std = exp(logvar / 2), as
        # the official .sample() does.
        return dist.mean.float(), dist.std.float()

    def _check_source(self, source: torch.Tensor) -> torch.Tensor:
        _check_images(source, "source", self.multiple_of)
        _check_unit_range(source, "source")
        return source.to(self.device)

    def _check_target_latents(self, latents: torch.Tensor, batch: int) -> torch.Tensor:
        c = self.networks.latent_channels
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[1] != c:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else latents
            raise ParameterError(f"target_latents must be B×{c}×h×w, got {shape}")
        if latents.shape[0] not in (1, batch):
            raise ParameterError(
                f"target_latents batch {latents.shape[0]} must be 1 or the source batch {batch}"
            )
        return latents.to(self.device)

    def _check_x_t(self, x_t: torch.Tensor, t, source: torch.Tensor) -> None:
        b, _, h, w = source.shape
        f = self.multiple_of
        shape = (b, self.networks.latent_channels, h // f, w // f)
        if not isinstance(x_t, torch.Tensor) or tuple(x_t.shape) != shape:
            got = tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            raise ParameterError(
                f"x_t must have shape {shape} (the latent grid of the {h}×{w} source), got {got}"
            )
        if isinstance(t, torch.Tensor) and (t.ndim > 1 or t.numel() not in (1, b)):
            raise ParameterError(
                f"t must be a scalar or one timestep per tile ({b}), got shape {tuple(t.shape)}"
            )

    @torch.inference_mode()
    def predict_noise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        source: torch.Tensor,
        target_latents: torch.Tensor,
    ) -> torch.Tensor:
        """One network evaluation: eps for noisy latents ``x_t`` at timestep(s) ``t``."""
        source = self._check_source(source)
        target_latents = self._check_target_latents(target_latents, source.shape[0])
        self._check_x_t(x_t, t, source)
        if isinstance(t, torch.Tensor):
            t = t.to(self.device)
        with self._autocast():
            eps = self.networks(x_t.to(self.device), t, source, target_latents)
        return eps.float()

    def _initial_noise(self, source, init_noise, generator) -> torch.Tensor:
        b, _, h, w = source.shape
        f = self.multiple_of
        shape = (b, self.networks.latent_channels, h // f, w // f)
        if init_noise is None:
            # Drawn on the generator's device (CPU by default) so that a seed gives
            # the same noise whatever device the model runs on.
            gen_device = generator.device if generator is not None else torch.device("cpu")
            init_noise = torch.randn(shape, generator=generator, device=gen_device)
        elif tuple(init_noise.shape) != shape:
            raise ParameterError(
                f"init_noise must have shape {shape} for this source, got {tuple(init_noise.shape)}"
            )
        return init_noise.to(self.device, torch.float32)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images, the VAE decoder's output (nominally in [-1, 1])."""
        vae = self.networks.encoder
        with self._vae_autocast():
            images = vae.decode((latents / self.networks.scaling_factor).to(vae.dtype)).sample
        return images.float()

    @torch.inference_mode()
    def sample(
        self,
        source: torch.Tensor,
        target_latents: torch.Tensor,
        steps: int = 20,
        sampler: str = "pndm",
        init_noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        callback=None,
        **sampler_options,
    ) -> torch.Tensor:
        """Stain ``source`` (B×3×H×W in [0, 1]) in the style of ``target_latents``.

        Returns the decoded images B×3×H×W, nominally in [-1, 1]. ``init_noise``
        (B×C×H/8×W/8, unit variance) fixes the starting point, e.g. a tile's
        slice of a slide-wide noise field; otherwise it is drawn from ``generator``.
        """
        if int(steps) < 1:
            raise ParameterError(f"steps must be at least 1, got {steps}")
        source = self._check_source(source)
        target_latents = self._check_target_latents(target_latents, source.shape[0])
        steps_sampler = make_sampler(sampler, self.configs.scheduler, **sampler_options)
        noise = self._initial_noise(source, init_noise, generator)
        with self._autocast():
            context = self.networks.context(target_latents)
            latents = denoise(
                self.networks,
                source,
                context,
                steps_sampler,
                int(steps),
                noise,
                reuse_across_steps=self.reuse_across_steps,
                callback=callback,
            )
        return self.decode(latents)

    # -- stainer protocol ---------------------------------------------------------------

    def set_target(self, target) -> torch.Tensor:
        """Encode the style target once; every later :meth:`stain` call reuses it.

        ``target`` is an RGB image (H×W×3 or 3×H×W, uint8 or float in [0, 1]),
        at least 64 px a side, of any size and aspect. Ours (the default): a
        target smaller than the model's latent grid (512² for SD2.1-base) is
        first scaled up, bilinearly, until its short side fills the grid; then
        it is centre-cropped to at most the tile size, as the official code
        pairs each tile with a target of its own size. ``preprocess="official"``:
        resized to the tile size with nearest neighbour (:func:`resize_target`).
        A target with no tissue is refused; one that is mostly glass is used,
        with a warning. Returns the latents (the posterior mean).
        """
        x = image_to_unit_tensor(target, "target")
        h, w = x.shape[-2:]
        if min(h, w) < MIN_TARGET_SIDE:
            raise ParameterError(
                f"{opt('target')}: {h}×{w} px is smaller than {MIN_TARGET_SIDE} px a side; "
                "give a larger region of the target stain"
            )
        edge = max(self.tile_size, self.networks.target_size)
        exact_u8 = getattr(target, "dtype", None) in (np.uint8, torch.uint8)
        if self.preprocess == "official":
            if (h, w) != (edge, edge):
                x = F.interpolate(x, size=(edge, edge), mode="nearest")  # = resize_target
        else:
            grown = _fill_grid(x, self.networks.target_size)
            exact_u8 = exact_u8 and grown is x
            x = grown
            f = self.multiple_of
            h, w = x.shape[-2:]
            ch, cw = min(h, edge) // f * f, min(w, edge) // f * f
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        # What is encoded must be tissue: the centre crop, or the whole resized target.
        _check_target_tissue((x[0].permute(1, 2, 0) * 255.0).round().to(torch.uint8).numpy())
        mean, std = self._posterior(x)
        self._target_posterior = (mean, std)
        self._target_latents = (mean * self.networks.scaling_factor).float()
        # Kept as encoded (uint8 stays uint8), so a rebuilt model encodes the same latents.
        crop = x[0].permute(1, 2, 0)
        self._target_image = (
            (crop * 255.0).round().to(torch.uint8).numpy() if exact_u8 else crop.numpy().copy()
        )
        return self._target_latents

    def recipe(self):
        """How to rebuild this model in another process, or None (random weights).

        Its options are the effective ones, so two models that sample alike
        have equal recipes whichever defaults they were built from.
        """
        if self.checkpoint is None or self._target_image is None:
            return None
        if getattr(self, "_load_dtype", torch.float32) != torch.float32:
            return None
        from ..stainers import StainerRecipe

        options = {
            "steps": self.steps, "sampler": self.sampler, "precision": self.precision,
            "tile_size": self.tile_size, "overlap": self.overlap, "work_mpp": self.work_mpp,
            "batch_size": self.batch_size, "reuse_across_steps": self.reuse_across_steps,
            "preprocess": self.preprocess,
        }  # fmt: skip
        return StainerRecipe(
            "stainfuser", self._target_image, self.checkpoint, str(self.device), self.seed,
            tuple(sorted(options.items())),
        )  # fmt: skip

    @property
    def target_latents(self) -> torch.Tensor | None:
        return self._target_latents

    def stain(self, tiles: torch.Tensor, noise: torch.Tensor | None = None) -> StainResult:
        """Stain a B×3×H×W uint8 batch towards the target set with :meth:`set_target`.

        ``noise`` is each tile's initial latent noise (B×C×H/8×W/8), cut from
        the slide's noise field; without it the noise comes from ``self.seed``.
        """
        if self._target_latents is None:
            raise ParameterError("no target set: call set_target(image) before stain()")
        if not isinstance(tiles, torch.Tensor) or tiles.dtype != torch.uint8:
            kind = tiles.dtype if isinstance(tiles, torch.Tensor) else type(tiles).__name__
            raise ParameterError(f"tiles must be a uint8 torch tensor, got {kind}")
        _check_images(tiles, "tiles", self.multiple_of)
        b, _, h, w = tiles.shape
        f = self.multiple_of
        shape = (b, self.networks.latent_channels, h // f, w // f)
        if noise is None:
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(self.seed))
        elif tuple(noise.shape) != shape:
            raise ParameterError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        out = []
        for start in range(0, b, self.batch_size):
            chunk = slice(start, start + self.batch_size)
            if self.preprocess == "official":
                source = scale_batch(tiles[chunk]).to(self.device)
                mean, std = self._target_posterior
                draw = posterior_noise(self.seed, noise[chunk]).to(mean.device)
                latents = (mean + std * draw) * self.networks.scaling_factor
            else:
                source = tiles[chunk].to(self.device).float() / 255.0
                latents = self._target_latents
            images = self.sample(
                source,
                latents,
                steps=self.steps,
                sampler=self.sampler,
                init_noise=noise[chunk],
            )
            out.append(to_uint8(images).to(tiles.device))
        return StainResult(tiles=torch.cat(out))
