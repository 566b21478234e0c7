"""The checks a whole-slide job runs when it is described, before any work.

Everything here is cheap (no torch, no model, no pixel read beyond file
headers), so a mistake is one line naming the option within a fraction of a
second, and no runner ever starts on a job it would refuse later.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..errors import ParameterError, SlideReadError, opt
from ..methods import (
    CLASSICAL,
    DIFFUSION,
    IHC_SAMPLERS,
    METHODS,
    PREPROCESS,
    SAMPLER_ALIASES,
    SAMPLERS,
    VIRTUAL_IHC,
)

MAX_STEPS = 1000
MAX_SAMPLES = 64
MAX_BATCH = 256
_DEVICE = re.compile(r"^(cpu|mps|(cuda|xpu)(:\d+)?)$")


def check_int(value, name: str, lo: int, hi: int | None = None) -> int:
    """A whole number in [lo, hi]; 1.7, "3" and True are refused, not converted."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok and isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if not ok:
        raise ParameterError(f"{opt(name)}: must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        bound = f"at least {lo}" if hi is None else f"in {lo}..{hi}"
        raise ParameterError(f"{opt(name)}: must be {bound}, got {value}")
    return value


def check_choice(value, name: str, choices, aliases: dict | None = None) -> str:
    key = str(value).strip().lower()
    key = (aliases or {}).get(key, key)
    if key not in choices:
        raise ParameterError(f"{opt(name)}: {value!r} is unknown; valid: {', '.join(choices)}")
    return key


def check_mpp(value, name: str = "mpp") -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
        ok = not isinstance(value, bool) and math.isfinite(v) and v > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ParameterError(
            f"{opt(name)}: expected a positive number of µm per pixel, got {value!r}"
        )
    return v


def check_device(device) -> str:
    """The device's name if it is one torch knows the form of (availability is
    checked when the job opens, where torch is loaded anyway)."""
    d = str(device).strip().lower()
    if not _DEVICE.match(d):
        raise ParameterError(
            f"{opt('device')}: {device!r} is not a device; use cpu, cuda, cuda:N or mps"
        )
    return d


def check_method(method) -> str:
    return check_choice(method, "method", METHODS)


def check_slide(slide):
    """What a job keeps of its input: an absolute path string, or the object."""
    if isinstance(slide, (str, Path)):
        path = Path(slide).expanduser().absolute()
        if not path.exists():
            raise SlideReadError(f"{path}: no such file or directory")
        return str(path)
    if hasattr(slide, "levels"):
        path = getattr(slide, "path", None)
        # A slide opened from a file travels as its path (workers reopen it).
        if path and Path(path).exists() and type(slide).__name__ == "Slide":
            return str(Path(path).absolute())
        return slide
    shape, dtype = getattr(slide, "shape", None), getattr(slide, "dtype", None)
    if shape is None or len(shape) != 3 or shape[2] != 3:
        raise ParameterError(
            f"{opt('slide')}: expected a path, a Slide or a Y×X×3 uint8 array, "
            f"got {type(slide).__name__} {tuple(shape) if shape is not None else ''}".rstrip()
        )
    if np.dtype(dtype) != np.uint8:
        raise ParameterError(f"{opt('slide')}: expected uint8 RGB, got dtype {dtype}")
    return slide


# Options whose None means "not given" (the command line passes None for a flag
# left out); any other option keeps its None (StainFuser's ``mpp=None``: any µm/px).
_UNSET_IF_NONE = ("sampler", "steps", "precision", "batch_size", "preprocess")


def stainer_options(method: str, params: dict) -> dict:
    """A method's options with the diffusion ones checked."""
    params = {k: v for k, v in params.items() if not (v is None and k in _UNSET_IF_NONE)}
    if method in CLASSICAL:
        for name in ("sampler", "steps", "preprocess"):
            if name in params:
                raise ParameterError(
                    f"{opt(name)}: applies to diffusion methods ({', '.join(DIFFUSION)}), "
                    f"not to {method}, which maps colours pixel by pixel"
                )
        return params
    if "sampler" in params:
        params["sampler"] = check_choice(params["sampler"], "sampler", SAMPLERS, SAMPLER_ALIASES)
    if "steps" in params:
        params["steps"] = check_int(params["steps"], "steps", 1, MAX_STEPS)
    if "batch_size" in params:
        params["batch_size"] = check_int(params["batch_size"], "batch_size", 1, MAX_BATCH)
    if "preprocess" in params:
        params["preprocess"] = check_choice(params["preprocess"], "preprocess", PREPROCESS)
        precision = params.get("precision")
        if params["preprocess"] == "official" and precision not in (None, "fp32"):
            raise ParameterError(
                f"{opt('precision')} {precision}: {opt('preprocess')} official runs in fp32, "
                "as the official script does"
            )
    return params


def virtual_ihc_options(params: dict) -> dict:
    """The virtual-IHC options checked: marker, samples, steps, sampler, tiling."""
    params = {k: v for k, v in params.items() if v is not None}
    known = {"marker", "samples", "steps", "sampler", "batch_size", "tile_size", "overlap"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ParameterError(
            f"{opt(unknown[0])}: not an option of {VIRTUAL_IHC}; valid: {', '.join(sorted(known))}"
        )
    if "marker" in params:
        marker = str(params["marker"]).strip()
        if not marker:
            raise ParameterError(f"{opt('marker')}: must not be empty")
        params["marker"] = marker
    if "sampler" in params:
        params["sampler"] = check_choice(
            params["sampler"], "sampler", IHC_SAMPLERS, SAMPLER_ALIASES
        )
    if "steps" in params:
        params["steps"] = check_int(params["steps"], "steps", 1, MAX_STEPS)
    if "samples" in params:
        params["samples"] = check_int(params["samples"], "samples", 1, MAX_SAMPLES)
    if "batch_size" in params:
        params["batch_size"] = check_int(params["batch_size"], "batch_size", 1, MAX_BATCH)
    return params


def stainer_recipe(method, target, weights, device, seed, params):
    """A checked :class:`~napari_stainfuser.stainers.StainerRecipe`."""
    from ..stainers import StainerRecipe
    from ..targets import check_target

    if str(method).strip().lower() == VIRTUAL_IHC:
        if target is not None:
            raise ParameterError(
                f"{opt('target')}: {VIRTUAL_IHC} takes a marker and trained weights, not a target"
            )
        from ..diffusion.ihc_config import find_checkpoint, read_config

        found = find_checkpoint(weights)
        cfg, _ = read_config(found)  # a bad config is refused before anything loads
        options = virtual_ihc_options(dict(params))
        if "marker" in options:
            options["marker"] = cfg.markers[cfg.marker_index(options["marker"])]
        elif len(cfg.markers) == 1:
            options["marker"] = cfg.markers[0]
        else:
            raise ParameterError(
                f"{opt('marker')}: this checkpoint knows several markers; choose one of "
                f"{', '.join(cfg.markers)}"
            )
        return StainerRecipe(
            VIRTUAL_IHC, None, str(found), check_device(device),
            check_int(seed, "seed", 0, (1 << 63) - 1), tuple(sorted(options.items())),
        )  # fmt: skip
    key = check_method(method)
    classical = key in CLASSICAL
    options = stainer_options(key, dict(params))
    target = check_target(key, target, classical)
    device = check_device(device)
    seed = check_int(seed, "seed", 0, (1 << 63) - 1)
    if classical:
        resolved = None
    else:
        from ..diffusion.configs import has_configs, load_configs
        from ..diffusion.lookup import find_weights

        found = find_weights(weights)
        if has_configs(found.parent):
            load_configs(found.parent)  # a bad config is refused before anything loads
        resolved = str(found)
    return StainerRecipe(key, target, resolved, device, seed, tuple(sorted(options.items())))
