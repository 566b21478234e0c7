"""``VirtualIHC``: H&E in, virtual IHC and the marker-positive cell mask out.

Python::

    from napari_stainfuser.diffusion.virtual_ihc import VirtualIHC

    model = VirtualIHC.load("run/", marker="CD3", steps=10, sampler="ddim", samples=4)
    out = model.stain(tiles)          # B×3×H×W uint8 H&E -> StainResult
    out.tiles                         # the virtual IHC (mean of the samples)
    out.extras["mask"]                # P(marker-positive cell), B×1×H×W
    out.extras["uncertainty"]         # per-pixel std of DAB density over the samples
    out.extras["mask_uncertainty"]    # per-pixel std of the mask probability

It is a stainer (:mod:`napari_stainfuser.stainer`) with extra outputs, so it
runs through the tiler, the engine, batch runs and dask like any other. Its
initial noise is cut from the slide's noise field: ``4·K`` channels at pixel
resolution (3 for the IHC and 1 for the mask of each of the K samples), so
overlapping tiles start from the same noise and their blended seams agree.

A checkpoint is a folder with ``virtual-ihc.safetensors`` (the weights) and
``virtual-ihc.json`` (the architecture, the markers, the working µm/px, the
training tile and the training metadata). A training run's folder also
works: its newest complete checkpoint is used. Loading is strict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, ParameterError, opt
from ..stainer import ExtraOutput, StainerSpec, StainResult
from .ihc_config import (
    BRANCHES,
    CHANNELS,
    CONFIG_NAME,
    FORMAT,
    MULTIPLE_OF,
    WEIGHTS_NAME,
    VirtualIHCConfig,
    find_checkpoint,
    read_config,
)
from .ihc_networks import VirtualIHCNetworks

IHC_SAMPLERS = ("ddim", "dpm++")
DEFAULT_STEPS = 10
DEFAULT_TILE = 256
MAX_SAMPLES = 64
PER_SAMPLE = sum(CHANNELS.values())  # noise channels per sample


def dab_density_torch(rgb01: torch.Tensor) -> torch.Tensor:
    """DAB density (skimage's ``rgb2hed`` channel 2) of B×3×H×W RGB in [0, 1] -> B×H×W.

    The same units as :func:`napari_stainfuser.training.coarse_mask.dab_density`,
    computed on the model's device.
    """
    from skimage.color import hed_from_rgb

    log_adjust = float(np.log(1e-6))
    od = torch.log(rgb01.clamp(min=1e-6)) / log_adjust
    m = torch.as_tensor(hed_from_rgb[:, 2], dtype=od.dtype, device=od.device)
    return torch.einsum("bchw,c->bhw", od, m).clamp(min=0)


def save_checkpoint(networks: VirtualIHCNetworks, folder, metadata: dict | None = None) -> Path:
    """Weights and config into ``folder`` (each written atomically); returns the folder."""
    from safetensors.torch import save_file

    from ..atomic import replace_atomic, write_json_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in networks.state_dict().items()}
    replace_atomic(folder / WEIGHTS_NAME, lambda tmp: save_file(state, tmp))
    record = {
        "format": FORMAT,
        "architecture": networks.config.to_json(),
        "markers": list(networks.config.markers),
        "mpp": networks.config.mpp,
        "tile": networks.config.tile,
        "parameters": sum(v.numel() for v in state.values()),
        **(metadata or {}),
    }
    write_json_atomic(folder / CONFIG_NAME, record)
    return folder


def load_networks(folder, device="cpu") -> tuple[VirtualIHCNetworks, dict]:
    """Strictly load a checkpoint folder (every key and shape must match its config)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .checkpoint import check_state_dict

    folder = Path(folder)
    cfg, record = read_config(folder)
    networks = VirtualIHCNetworks(cfg)
    path = folder / WEIGHTS_NAME
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None
    expected = {k: tuple(v.shape) for k, v in networks.state_dict().items()}
    check_state_dict(
        expected, {k: tuple(v.shape) for k, v in state.items()}, path, str(folder / CONFIG_NAME),
        model="virtual-IHC",
    )  # fmt: skip
    networks.load_state_dict(state, strict=True)
    return networks.to(device).eval(), record


def make_ihc_sampler(name: str, cfg: VirtualIHCConfig):
    from .sampling import make_sampler

    key = str(name).strip().lower()
    key = {"dpmsolver++": "dpm++", "dpm-solver++": "dpm++", "dpmpp": "dpm++"}.get(key, key)
    if key not in IHC_SAMPLERS:
        raise ParameterError(
            f"{opt('sampler')}: {name!r} is not a virtual-IHC sampler; valid: "
            f"{', '.join(IHC_SAMPLERS)}"
        )
    return make_sampler(key, cfg.scheduler_config())


@torch.no_grad()
def sample(
    networks: VirtualIHCNetworks,
    he: torch.Tensor,
    marker: torch.Tensor,
    noise: torch.Tensor,
    steps: int,
    sampler: str = "ddim",
) -> dict[str, torch.Tensor]:
    """Joint reverse diffusion of both branches.

    he: B×3×H×W in [-1, 1]; marker: B marker indices; noise: B×K×4×H×W.
    Returns the IHC samples (B×K×3×H×W in [0, 1]) and the mask probability
    samples (B×K×1×H×W in [0, 1]). The H&E is encoded once; both branches
    step in lockstep on the same timesteps, each with its own sampler state.
    """
    b, k = noise.shape[:2]
    h, w = he.shape[-2:]
    feats = networks.encode(he)
    feats = [f.repeat_interleave(k, 0) for f in feats]
    ctx = networks.contexts(feats)
    marker = marker.repeat_interleave(k, 0)
    flat = noise.reshape(b * k, PER_SAMPLE, h, w)
    x = {"ihc": flat[:, :3], "mask": flat[:, 3:]}
    cfg = networks.config
    samplers = {n: make_ihc_sampler(sampler, cfg) for n in BRANCHES}
    for s in samplers.values():
        s.set_timesteps(steps, device=he.device)
    x = {n: x[n] * samplers[n].init_noise_sigma for n in BRANCHES}
    for t in samplers["ihc"].timesteps:
        tt = t.expand(b * k) if t.ndim == 0 else t
        for n in BRANCHES:
            inp = samplers[n].scale_model_input(x[n], t)
            pred = networks.branch(n)(inp, tt, feats, ctx[n], marker).clamp(-1, 1)
            x[n] = samplers[n].step(pred, t, x[n], return_dict=False)[0]
    ihc = ((x["ihc"].clamp(-1, 1) + 1) / 2).reshape(b, k, 3, h, w)
    mask = ((x["mask"].clamp(-1, 1) + 1) / 2).reshape(b, k, 1, h, w)
    return {"ihc": ihc, "mask": mask}


class VirtualIHC:
    """The virtual-IHC stainer (see the module docstring)."""

    method = "virtual-ihc"

    def __init__(
        self,
        networks: VirtualIHCNetworks,
        marker: str,
        *,
        steps: int = DEFAULT_STEPS,
        sampler: str = "ddim",
        samples: int = 1,
        device: str = "cpu",
        seed: int = 0,
        weights: str | None = None,
        batch_size: int | None = None,
        tile_size: int | None = None,
        overlap: int | None = None,
        record: dict | None = None,
    ):
        from .sampling import make_sampler  # noqa: F401  (diffusers loads here, not per tile)

        self.networks = networks
        self.config = networks.config
        self.marker = self.config.markers[self.config.marker_index(marker)]
        self.marker_index = self.config.marker_index(marker)
        self.steps = int(steps)
        self.sampler = str(sampler)
        make_ihc_sampler(self.sampler, self.config)  # refuse an unknown sampler now
        if not 1 <= int(samples) <= MAX_SAMPLES:
            raise ParameterError(f"{opt('samples')}: must be in 1..{MAX_SAMPLES}, got {samples}")
        self.samples = int(samples)
        self.device = str(device)
        self.seed = int(seed)
        self.weights = weights
        self.record = record or {}
        tile = int(tile_size or max(DEFAULT_TILE, self.config.tile))
        if tile % MULTIPLE_OF:
            raise ParameterError(
                f"{opt('tile')} {tile}: virtual IHC needs a multiple of {MULTIPLE_OF} px"
            )
        extras = [ExtraOutput("mask", "labels")]
        if self.samples > 1:
            extras += [
                ExtraOutput("uncertainty", "image"),
                ExtraOutput("mask_uncertainty", "image"),
            ]
        self.spec = StainerSpec(
            tile_size=tile,
            overlap=min(64, tile // 4) if overlap is None else int(overlap),
            mpp=self.config.mpp,
            per_pixel=False,
            deterministic=True,
            device=self.device,
            batch_size=int(batch_size or 4),
            multiple_of=MULTIPLE_OF,
            latent_channels=PER_SAMPLE * self.samples,
            latent_factor=1,
            extras=tuple(extras),
        )

    @classmethod
    def load(cls, weights=None, marker: str | None = None, device: str = "cpu", **options):
        from ..devices import resolve_device

        folder = find_checkpoint(weights)
        networks, record = load_networks(folder, resolve_device(device))
        if marker is None:
            if len(networks.config.markers) != 1:
                raise ParameterError(
                    f"{opt('marker')}: this checkpoint knows several markers; choose one of "
                    f"{', '.join(networks.config.markers)}"
                )
            marker = networks.config.markers[0]
        return cls(networks, marker, device=device, weights=str(folder), record=record, **options)

    def stain(self, tiles: torch.Tensor, noise: torch.Tensor | None = None) -> StainResult:
        if tiles.ndim != 4 or tiles.shape[1] != 3 or tiles.dtype != torch.uint8:
            raise ParameterError(
                f"tiles: expected a B×3×H×W uint8 batch, got {tuple(tiles.shape)} {tiles.dtype}"
            )
        b, _, h, w = tiles.shape
        dev = next(self.networks.parameters()).device
        if noise is None:
            gen = torch.Generator().manual_seed(self.seed)
            noise = torch.randn((b, self.spec.latent_channels, h, w), generator=gen)
        noise = torch.as_tensor(noise, dtype=torch.float32).to(dev)
        noise = noise.reshape(b, self.samples, PER_SAMPLE, h, w)
        he = tiles.to(dev).float() / 127.5 - 1.0
        marker = torch.full((b,), self.marker_index, dtype=torch.long, device=dev)
        out = sample(self.networks, he, marker, noise, self.steps, self.sampler)
        ihc = out["ihc"].mean(1)
        extras = {"mask": out["mask"].mean(1).cpu()}
        if self.samples > 1:
            dab = torch.stack([dab_density_torch(out["ihc"][:, i]) for i in range(self.samples)], 1)
            extras["uncertainty"] = dab.std(1, unbiased=False)[:, None].cpu()
            extras["mask_uncertainty"] = out["mask"].std(1, unbiased=False).cpu()
        tiles_out = (ihc * 255).round().clamp(0, 255).to(torch.uint8).cpu()
        return StainResult(tiles_out, extras)

    def options(self) -> dict:
        return {
            "marker": self.marker,
            "steps": self.steps,
            "sampler": self.sampler,
            "samples": self.samples,
            "tile_size": self.spec.tile_size,
            "overlap": self.spec.overlap,
            "batch_size": self.spec.batch_size,
        }

    def recipe(self):
        from ..stainers import StainerRecipe

        if self.weights is None:
            return None
        return StainerRecipe(
            self.method, None, self.weights, self.device, self.seed,
            tuple(sorted(self.options().items())),
        )  # fmt: skip

    def identity(self) -> dict:
        from ..fingerprint import file_digest

        return {
            "method": self.method,
            "weights": file_digest(Path(self.weights) / WEIGHTS_NAME) if self.weights else None,
            "seed": self.seed,
            "device": self.device,
            "params": {k: v for k, v in self.options().items() if k != "batch_size"},
        }
