"""Reading and writing StainFuser weights in the official flat layout.

Safetensors is read first. ``.pth`` files are read only with
``torch.load(weights_only=True)``, so a pickle that holds anything other than
tensors is refused. Loading is strict: every missing or unexpected key and
every shape mismatch is reported, unlike the official ``strict=False``.
"""

import os
import re
import tempfile
import time
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError
from .configs import write_configs, write_json_atomic
from .networks import StainFuserNetworks

WEIGHTS_NAME = "checkpoint.safetensors"
METADATA_NAME = "metadata.json"
FORMAT = "napari-stainfuser/1"
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_SHOWN = 4  # keys listed per kind of problem before "+N more"


def _shorten(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... +{len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def strip_ddp_prefix(state: dict) -> dict:
    """Drop the ``module.`` prefix that DistributedDataParallel puts on every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def _pickle_refusal(exc: Exception) -> str:
    # torch's message spans a page; keep the part that names the culprit.
    text = str(exc)
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if match:
        return f"it holds a non-tensor object ({match.group(1)})"
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
    if match:
        return " ".join(match.group(1).split())
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)


def read_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape from a safetensors header without reading the tensors (None for pickles)."""
    if path.suffix != ".safetensors":
        return None
    try:
        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a mapping)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def read_state_dict(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict:
    """The flat state dict stored in ``path`` (.safetensors or a weights-only pickle)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            state = {}
            with safe_open(path, framework="pt", device="cpu") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    # One tensor at a time, so casting never holds two copies of the model.
                    tensor = f.get_tensor(key)
                    state[key] = tensor.to(dtype) if dtype is not None else tensor
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise CheckpointError(
                f"{path}: not a readable safetensors file (truncated or corrupt: {exc})"
            ) from None
    elif path.suffix in PICKLE_SUFFIXES:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
            raise CheckpointError(
                f"{path}: refused by torch.load(weights_only=True): {_pickle_refusal(exc)}"
            ) from None
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise CheckpointError(f"{path}: expected a flat dict of tensors (official layout)")
        if dtype is not None:
            state = {k: v.to(dtype) for k, v in state.items()}
    else:
        raise CheckpointError(
            f"{path}: unknown checkpoint type {path.suffix!r} "
            f"(expected .safetensors or one of {', '.join(PICKLE_SUFFIXES)})"
        )
    return strip_ddp_prefix(state)


def check_state_dict(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], path: Path, origin: str
) -> None:
    """Raise CheckpointError listing every key/shape difference between model and file."""
    # Model order, not alphabetical: the first keys listed are the outermost layers.
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        f"{k} {list(found[k])} vs model {list(expected[k])}"
        for k in expected
        if k in found and tuple(found[k]) != tuple(expected[k])
    ]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({_shorten(mismatched)})")
    if missing:
        problems.append(f"{len(missing)} missing keys ({_shorten(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_shorten(unexpected)})")
    raise CheckpointError(
        f"{path} does not match the StainFuser architecture of configs {origin}: "
        + "; ".join(problems)
    )


def load_weights(networks: StainFuserNetworks, path: str | os.PathLike, dtype=None) -> None:
    """Strictly load ``path`` into ``networks`` (which may live on the meta device)."""
    path = Path(path)
    expected = {k: tuple(v.shape) for k, v in networks.state_dict().items()}
    origin = networks.configs.origin
    shapes = read_shapes(path) if path.is_file() else None
    if shapes is not None:
        # Check the header first: a wrong 5 GB file fails before it is read.
        check_state_dict(expected, strip_ddp_prefix(shapes), path, origin)
    state = read_state_dict(path, dtype=dtype)
    check_state_dict(expected, {k: tuple(v.shape) for k, v in state.items()}, path, origin)
    networks.load_state_dict(state, strict=True, assign=True)


def save_checkpoint(model, directory: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Save weights, configs and metadata into ``directory``; return the weights path.

    ``model`` is a :class:`StainFuser` or its :class:`StainFuserNetworks`. The
    weights are one safetensors file in the official flat layout, so the
    official code loads it too. ``metadata`` (training data, steps,
    magnification, ...) goes to ``metadata.json``, which is written last: its
    presence marks a complete checkpoint. Every file is written under a
    temporary name and renamed.
    """
    networks = getattr(model, "networks", model)
    if not isinstance(networks, StainFuserNetworks):
        raise TypeError(f"expected a StainFuser or StainFuserNetworks, got {type(model).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_configs(networks.configs, directory)
    state = {k: v.detach().to("cpu").contiguous() for k, v in networks.state_dict().items()}
    weights = directory / WEIGHTS_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{WEIGHTS_NAME}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt", "layout": "stainfuser-official-flat"})
        os.replace(tmp, weights)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    record = {
        "format": FORMAT,
        "weights": WEIGHTS_NAME,
        "layout": "official flat state dict (encoder., conditioner., noise_predictor.)",
        "parameters": sum(v.numel() for v in state.values()),
        "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    record.update(metadata or {})
    write_json_atomic(directory / METADATA_NAME, record)
    return weights
