"""What a virtual-IHC checkpoint declares, readable without torch.

The architecture (:class:`VirtualIHCConfig`), the file names and the lookup of
a checkpoint folder: the CLI and the job checks use these to refuse a bad
``--weights`` or ``--marker`` before torch and diffusers load (an argument
error within a second). The networks themselves are in
:mod:`napari_stainfuser.diffusion.ihc_networks`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import CheckpointError, ParameterError, opt

WEIGHTS_NAME = "virtual-ihc.safetensors"
CONFIG_NAME = "virtual-ihc.json"
FORMAT = "napari-stainfuser/virtual-ihc/1"
ENV_VAR = "STAINFUSER_IHC_WEIGHTS"

# Tile edges must be a multiple of this: the coarsest tokens are at stride 32.
MULTIPLE_OF = 32
BRANCHES = ("ihc", "mask")
CHANNELS = {"ihc": 3, "mask": 1}


@dataclass(frozen=True)
class VirtualIHCConfig:
    """The architecture, the markers and how the model sees its input.

    markers: the marker names, in the order of the marker embedding.
    mpp: the µm/px of the training tiles (None: any resolution).
    tile: the training tile edge in px (inference tiles may be larger).
    """

    markers: tuple[str, ...]
    mpp: float | None = None
    tile: int = 64
    encoder_channels: tuple[int, ...] = (16, 32, 64, 96)
    unet_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    context_dim: int = 64
    heads: int = 4
    groups: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "sample"
    name: str = "tiny"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        markers = tuple(str(m) for m in self.markers)
        if not markers:
            raise ParameterError(f"{opt('marker')}: give at least one marker")
        if len(set(markers)) != len(markers):
            raise ParameterError(f"{opt('marker')}: repeated marker in {', '.join(markers)}")
        object.__setattr__(self, "markers", markers)
        object.__setattr__(self, "encoder_channels", tuple(self.encoder_channels))
        object.__setattr__(self, "unet_channels", tuple(self.unet_channels))
        if len(self.encoder_channels) != 4:
            raise ParameterError("encoder_channels: expected 4 levels (1, 1/2, 1/4, 1/8)")

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("markers", "encoder_channels", "unet_channels"):
            d[k] = list(d[k])
        d.pop("extra")
        return d

    @classmethod
    def from_json(cls, d: dict) -> VirtualIHCConfig:
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ParameterError(f"unknown virtual-IHC config keys: {', '.join(unknown)}")
        return cls(**d)

    def scheduler_config(self) -> dict:
        """The diffusers scheduler config every sampler and the training noise use."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "prediction_type": self.prediction_type,
            "clip_sample": False,
            "timestep_spacing": "trailing",
        }

    def marker_index(self, marker: str) -> int:
        key = str(marker).strip().lower()
        for i, m in enumerate(self.markers):
            if m.lower() == key:
                return i
        raise ParameterError(
            f"{opt('marker')} {marker}: this checkpoint does not know it; "
            f"known markers: {', '.join(self.markers)}"
        )


def preset(name: str, markers, tile: int = 64, mpp: float | None = None) -> VirtualIHCConfig:
    """``tiny`` (trains at useful speed on a 2-core CPU) or ``base`` (for GPUs)."""
    if name == "tiny":
        return VirtualIHCConfig(tuple(markers), mpp, tile)
    if name == "base":
        return VirtualIHCConfig(
            tuple(markers), mpp, tile,
            encoder_channels=(64, 128, 192, 256), unet_channels=(64, 128, 256, 256),
            layers_per_block=2, context_dim=256, heads=8, groups=32, name="base",
        )  # fmt: skip
    raise ParameterError(f"{opt('config')}: {name!r} is unknown; valid: tiny, base")


def find_checkpoint(weights) -> Path:
    """The checkpoint folder for ``weights``: a folder with the two files, a run
    folder (its newest complete checkpoint), the weights file itself, or
    ``$STAINFUSER_IHC_WEIGHTS``. Never downloads anything."""
    import os

    if weights is None:
        env = os.environ.get(ENV_VAR)
        if not env:
            raise CheckpointError(
                f"{opt('weights')}: no virtual-IHC weights given and ${ENV_VAR} is not set; "
                "train a model with 'stainfuser train virtual-ihc' and pass its run folder"
            )
        weights = env
    path = Path(weights).expanduser()
    if path.is_file():
        if path.name != WEIGHTS_NAME:
            raise CheckpointError(f"{path}: expected {WEIGHTS_NAME} or its folder")
        path = path.parent
    if not path.exists():
        raise CheckpointError(f"{opt('weights')} {path}: no such file or folder")
    if (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file():
        return path
    found = sorted(
        p for p in (path / "checkpoints").glob("step-*")
        if p.is_dir() and not p.name.endswith(".partial") and (p / CONFIG_NAME).is_file()
    )  # fmt: skip
    if found:
        return found[-1]
    raise CheckpointError(
        f"{opt('weights')} {path}: not a virtual-IHC checkpoint (no {WEIGHTS_NAME} and "
        f"{CONFIG_NAME}, and no checkpoints/step-* inside)"
    )


def read_config(folder: Path) -> tuple[VirtualIHCConfig, dict]:
    """The architecture and the whole record (training metadata) of a checkpoint."""
    path = Path(folder) / CONFIG_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("format") != FORMAT:
            raise CheckpointError(f"{path}: format {record.get('format')!r}, expected {FORMAT!r}")
        return VirtualIHCConfig.from_json(record["architecture"]), record
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a virtual-IHC config ({exc})") from None
    except ParameterError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
