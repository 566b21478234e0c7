"""Reading and writing StainFuser weights in the official flat layout.

Safetensors is read first. ``.pth`` files are read only with
``torch.load(weights_only=True)``, so a pickle that holds anything other than
tensors is refused. Loading is strict: every missing or unexpected key and
every shape mismatch is reported, unlike the official ``strict=False``.
"""

import os
import time
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..atomic import replace_atomic, write_json_atomic
from ..errors import CheckpointError
from .configs import write_configs
from .load_errors import load_error_summary
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


def read_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape from a safetensors header without reading the tensors (None for pickles)."""
    if path.suffix != ".safetensors":
        return None
    try:
        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a mapping)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({load_error_summary(exc)})"
        ) from None


def _caster(dtype: torch.dtype | None, fp32_prefixes: tuple[str, ...], path: Path):
    def cast(key: str, tensor: torch.Tensor) -> torch.Tensor:
        # Weights are checked as stored: cast, an int8 or bool tensor would load
        # silently, and NaN would give one flat colour and a success.
        if not tensor.is_floating_point():
            raise CheckpointError(
                f"{path}: tensor {key!r} is {str(tensor.dtype).removeprefix('torch.')}; "
                "weights must be floating point (fp16, bf16, fp32 or fp64)"
            )
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{path}: tensor {key!r} has {bad} non-finite values (NaN or inf); "
                "the weights are damaged"
            )
        if key.removeprefix("module.").startswith(fp32_prefixes):
            return tensor.float()
        return tensor.to(dtype) if dtype is not None else tensor

    return cast


def read_state_dict(
    path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    fp32_prefixes: tuple[str, ...] = (),
) -> dict:
    """The flat state dict stored in ``path`` (.safetensors or a weights-only pickle).

    Tensors are cast to ``dtype`` (None: as stored), except those whose key
    starts with one of ``fp32_prefixes``, which are read as float32.
    """
    path = Path(path)
    cast = _caster(dtype, tuple(fp32_prefixes), path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            state = {}
            with safe_open(path, framework="pt", device="cpu") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    # One tensor at a time, so casting never holds two copies of the model.
                    state[key] = cast(key, f.get_tensor(key))
        except CheckpointError:
            raise
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise CheckpointError(
                f"{path}: not a readable safetensors file "
                f"(truncated or corrupt: {load_error_summary(exc)})"
            ) from None
    elif path.suffix in PICKLE_SUFFIXES:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
            raise CheckpointError(
                f"{path}: refused by torch.load(weights_only=True): {load_error_summary(exc)}"
            ) from None
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise CheckpointError(f"{path}: expected a flat dict of tensors (official layout)")
        state = {k: cast(k, v) for k, v in state.items()}
    else:
        raise CheckpointError(
            f"{path}: unknown checkpoint type {path.suffix!r} "
            f"(expected .safetensors or one of {', '.join(PICKLE_SUFFIXES)})"
        )
    return strip_ddp_prefix(state)


def check_state_dict(
    expected: dict[str, tuple[int, ...]],
    found: dict[str, tuple[int, ...]],
    path: Path,
    origin: str,
    model: str = "StainFuser",
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
        f"{path} does not match the {model} architecture of configs {origin}: "
        + "; ".join(problems)
    )


def load_weights(
    networks: StainFuserNetworks,
    path: str | os.PathLike,
    dtype=None,
    fp32_prefixes: tuple[str, ...] = (),
) -> None:
    """Strictly load ``path`` into ``networks`` (which may live on the meta device).

    ``dtype`` casts the weights, except keys under ``fp32_prefixes`` (e.g. a
    VAE whose config asks for ``force_upcast``), which stay float32.
    """
    path = Path(path)
    expected = {k: tuple(v.shape) for k, v in networks.state_dict().items()}
    origin = networks.configs.origin
    shapes = read_shapes(path) if path.is_file() else None
    if shapes is not None:
        # Check the header first: a wrong 5 GB file fails before it is read.
        check_state_dict(expected, strip_ddp_prefix(shapes), path, origin)
    state = read_state_dict(path, dtype=dtype, fp32_prefixes=fp32_prefixes)
    check_state_dict(expected, {k: tuple(v.shape) for k, v in state.items()}, path, origin)
    networks.load_state_dict(state, strict=True, assign=True)


def save_checkpoint(model, directory: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Save weights, configs and metadata into ``directory``; return the weights path.

    ``model`` is a :class:`StainFuser` or its :class:`StainFuserNetworks`. The
    weights are one safetensors file in the official flat layout, so the
    official code loads it too. ``metadata`` (training data, steps,
    magnification, ...) goes to ``metadata.json``, which is written last: its
    presence marks a complete checkpoint. The configs are written under our
    names and under the official ``sd21b_*_config.json`` ones, so the folder is
    also a config folder for the official code. Every file is written under a
    temporary name, synced to disk and renamed.
    """
    networks = getattr(model, "networks", model)
    if not isinstance(networks, StainFuserNetworks):
        raise TypeError(f"expected a StainFuser or StainFuserNetworks, got {type(model).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_configs(networks.configs, directory)
    state = {k: v.detach().to("cpu").contiguous() for k, v in networks.state_dict().items()}
    weights = directory / WEIGHTS_NAME
    replace_atomic(
        weights,
        lambda tmp: save_file(
            state, tmp, metadata={"format": "pt", "layout": "stainfuser-official-flat"}
        ),
    )
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
