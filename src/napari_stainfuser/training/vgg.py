"""VGG19 feature extractor in plain torch, loading torchvision-format weights.

The layout reproduces torchvision's ``vgg19().features`` index for index
(configuration "E" of Simonyan & Zisserman 2015), so a torchvision state dict
(``features.0.weight``, ``features.0.bias``, ... ``features.34.bias``) loads
key for key. The classifier is not needed for style transfer: its
``classifier.*`` keys are accepted and ignored; any other extra key, a missing
key or a wrong shape is an error that lists them.

Weights are never downloaded. They come from a file the user supplies
(torchvision's ImageNet file is ``vgg19-dcbb9e9d.pth``), the
``STAINFUSER_VGG19`` environment variable, or torch's own hub cache if a
torchvision install already put the file there.
"""

import os
from pathlib import Path

import torch
from torch import nn

from ..diffusion.load_errors import load_error_summary
from ..errors import CheckpointError

VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
VGG19_ENV = "STAINFUSER_VGG19"

# Convolutions per block in VGG19; a max-pool closes each block.
_BLOCKS = (2, 2, 4, 4, 4)
VGG19_WIDTHS = (64, 128, 256, 512, 512)

# torchvision normalises its ImageNet input with these statistics.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_names() -> list[str]:
    names = []
    for b, n_conv in enumerate(_BLOCKS, start=1):
        for i in range(1, n_conv + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return names


# Name of every entry of `features`, e.g. LAYER_NAMES[21] == "conv4_2".
LAYER_NAMES = tuple(_layer_names())
LAYER_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}
# Index of the first convolution of each block, whose output width is that block's width.
_FIRST_CONV = tuple(LAYER_INDEX[f"conv{b}_1"] for b in range(1, 6))


class VGG19(nn.Module):
    """VGG19 convolutional trunk. Input: B×3×H×W RGB float in [0, 1].

    widths: channels of the five blocks (64, 128, 256, 512, 512 for the real
        network; smaller values give a cheap network for tests).
    pool: "max" as trained, or "avg", which Gatys et al. (2016) found gives
        smoother style transfer results.
    """

    def __init__(self, widths=VGG19_WIDTHS, pool: str = "max"):
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        self.widths = tuple(int(w) for w in widths)
        layers: list[nn.Module] = []
        c_in = 3
        for width, n_conv in zip(self.widths, _BLOCKS, strict=True):
            for _ in range(n_conv):
                layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(inplace=False)]
                c_in = width
            layers.append(nn.MaxPool2d(2, 2) if pool == "max" else nn.AvgPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), False)

    def forward(self, x: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        """Activations of the named layers (e.g. "relu4_2", "conv1_1")."""
        wanted = set(layers)
        unknown = wanted - set(LAYER_INDEX)
        if unknown:
            raise ValueError(
                f"unknown VGG19 layer(s) {sorted(unknown)}; names look like conv4_2, relu1_1, pool3"
            )
        last = max(LAYER_INDEX[name] for name in wanted)
        out = {}
        h = (x - self.mean) / self.std
        for i in range(last + 1):
            h = self.features[i](h)
            if LAYER_NAMES[i] in wanted:
                out[LAYER_NAMES[i]] = h
        return out


def find_vgg19_weights(path=None) -> Path:
    """Resolve the VGG19 weights file without downloading anything."""
    tried = []
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        raise CheckpointError(
            f"VGG19 weights {p} not found; supply torchvision's {VGG19_FILENAME} "
            "(a state dict with keys features.0.weight ...)"
        )
    env = os.environ.get(VGG19_ENV)
    if env:
        p = Path(env).expanduser()
        if p.is_file():
            return p
        tried.append(f"${VGG19_ENV}={p}")
    hub = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME
    if hub.is_file():
        return hub
    tried.append(str(hub))
    raise CheckpointError(
        f"VGG19 weights not found (looked in {', '.join(tried)}); get torchvision's "
        f"{VGG19_FILENAME} and pass its path (--vgg-weights) or set ${VGG19_ENV}"
    )


def _read_state_dict(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"{path}: cannot be read as VGG19 weights with "
            f"torch.load(weights_only=True) ({load_error_summary(exc)})"
        ) from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (torchvision format)")
    return sd


def load_vgg19(path=None, *, pool: str = "max", device="cpu") -> VGG19:
    """Build VGG19 and load torchvision-format weights strictly.

    The block widths are read from the file, so a reduced-width network saved
    in the same layout loads too; every other shape must then agree.
    """
    path = find_vgg19_weights(path)
    sd = _read_state_dict(path)
    sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    width_keys = [f"features.{i}.weight" for i in _FIRST_CONV]
    missing = [k for k in width_keys if k not in sd]
    if missing:
        raise CheckpointError(f"{path}: not a torchvision VGG19 state dict; missing {missing}")
    model = VGG19(widths=[sd[k].shape[0] for k in width_keys], pool=pool)
    expected = {f"features.{k}": v for k, v in model.features.state_dict().items()}
    problems = []
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    for k in sorted(set(sd) & set(expected)):
        if sd[k].shape != expected[k].shape:
            problems.append(
                f"{k} has shape {tuple(sd[k].shape)}, expected {tuple(expected[k].shape)}"
            )
    if problems:
        raise CheckpointError(f"{path}: does not match VGG19: " + "; ".join(problems))
    model.features.load_state_dict(
        {k.removeprefix("features."): v.float() for k, v in sd.items()}, strict=True
    )
    return model.to(device).eval().requires_grad_(False)
