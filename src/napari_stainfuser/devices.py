"""Torch devices: which ones this machine has, and turning a name into one.

The widgets list :func:`available_devices`; every stainer checks its device
with :func:`resolve_device` before it moves any weights.
"""

from __future__ import annotations

import torch

from .errors import ParameterError, opt


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device, refusing accelerators this machine does not have."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ParameterError(f"{opt('device')}: {device!r} is not a torch device ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError(
                f"{opt('device')}: {str(device)!r} requested but CUDA is not available on this "
                f"machine (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'})"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ParameterError(
                f"{opt('device')}: {str(device)!r} requested but only "
                f"{torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ParameterError(f"{opt('device')}: {str(device)!r} requested but MPS is not available")
    elif dev.type == "meta":
        raise ParameterError("device 'meta' holds no weights; use StainFuser.describe() instead")
    return dev


def available_devices() -> list[tuple[str, str]]:
    """(name, description) of every device this machine has, CPU first."""
    out = [("cpu", "CPU")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            out.append((f"cuda:{i}", f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"))
    if torch.backends.mps.is_available():
        out.append(("mps", "Apple GPU (MPS)"))
    return out
