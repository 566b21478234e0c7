"""Stain presets: the small JSON files a fitted target is shared as.

A preset holds the method, its parameters and the target's statistics. It
is read and checked here with numpy alone (no torch), so a bad preset is a
one-line error the moment a job names it, before any model or slide loads.
A preset is validated like a fitted state: finite numbers of the right
shape; for Macenko and Vahadane two unit-norm stain vectors with positive
optical density that are far enough apart to be two stains; positive
concentration maxima; Reinhard's colour spread positive.

Presets are small (a few hundred bytes); files over :data:`MAX_PRESET_BYTES`
are refused unread.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ParameterError
from .matrices import MIN_STAIN_ANGLE, STAIN_MATRICES

PRESET_FORMAT = "napari-stainfuser stain preset"
PRESET_VERSION = 1
MAX_PRESET_BYTES = 1 << 20

# What a preset's "target" holds per method: entry -> shape (None: set by the params).
STATE_SHAPES = {
    "macenko": {"stain_matrix": (2, 3), "max_concentrations": (2,)},
    "vahadane": {"stain_matrix": (2, 3), "max_concentrations": (2,)},
    "reinhard": {"mean": (3,), "std": (3,)},
    "ruifrok": {"max_concentrations": None},
}
PRESET_METHODS = tuple(sorted(STATE_SHAPES))
_UNIT_TOLERANCE = 1e-3


def read_preset(path, method: str | None = None) -> dict:
    """The checked content of the preset at ``path``: a dict with "method",
    "params", "target" (name -> float64 array) and "target_name".

    method: if given, the preset must be for this method.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ParameterError(f"{path}: no such stain preset") from None
    except OSError as e:
        raise ParameterError(f"{path}: cannot read stain preset ({e.strerror or e})") from None
    if size > MAX_PRESET_BYTES:
        raise ParameterError(
            f"{path}: {size / 2**20:.1f} MB is too large for a stain preset "
            f"(presets are a few hundred bytes; the limit is {MAX_PRESET_BYTES // 2**20} MB)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ParameterError(f"{path}: cannot read stain preset ({e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParameterError(
            f"{path}: corrupt stain preset ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    except RecursionError:
        raise ParameterError(f"{path}: not a stain preset (JSON nested too deeply)") from None
    return check_preset(data, str(path), method)


def check_preset(data, where: str, method: str | None = None) -> dict:
    """Validate a parsed preset (see :func:`read_preset`); ``where`` names it in errors."""
    if not isinstance(data, dict) or data.get("format") != PRESET_FORMAT:
        raise ParameterError(f'{where}: not a stain preset (no "format": {PRESET_FORMAT!r})')
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version > PRESET_VERSION:
        raise ParameterError(
            f"{where}: stain preset version {version!r} is not supported (up to {PRESET_VERSION})"
        )
    stored = data.get("method")
    if not isinstance(stored, str) or stored not in STATE_SHAPES:
        raise ParameterError(
            f"{where}: stain preset method {stored!r} is unknown; valid: {', '.join(PRESET_METHODS)}"
        )
    if method is not None and str(method).strip().lower() != stored:
        raise ParameterError(f"{where}: stain preset is for method {stored!r}, not {method!r}")
    params, target = data.get("params", {}), data.get("target")
    if not isinstance(params, dict) or not isinstance(target, dict):
        raise ParameterError(f'{where}: stain preset needs "params" and "target" objects')
    name = data.get("target_name")
    return {
        "method": stored,
        "params": params,
        "target": check_state(stored, target, where, params),
        "target_name": str(name) if isinstance(name, str) and name else where,
    }


def check_state(method: str, state: dict, where: str, params: dict | None = None) -> dict:
    """A method's target statistics as float64 arrays, checked like a fitted state."""
    shapes = dict(STATE_SHAPES[method])
    if method == "ruifrok":
        shapes["max_concentrations"] = (_ruifrok_rows(params or {}),)
    if set(state) != set(shapes):
        raise ParameterError(
            f"{where}: target of a {method} preset must have keys {sorted(shapes)}, "
            f"got {sorted(state)}"
        )
    out = {}
    for key, shape in shapes.items():
        field = f"{where}: target.{key}"
        try:
            v = np.asarray(state[key], dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise ParameterError(f"{field} is not a list of numbers") from None
        if v.shape != shape:
            raise ParameterError(f"{field} has shape {v.shape}, expected {shape}")
        if not np.isfinite(v).all():
            raise ParameterError(f"{field} has non-finite values")
        out[key] = v
    if "stain_matrix" in out:
        _check_stain_vectors(out["stain_matrix"], f"{where}: target.stain_matrix")
    if "max_concentrations" in out and not (out["max_concentrations"] > 0).all():
        raise ParameterError(f"{where}: target.max_concentrations must be positive")
    if method == "reinhard":
        if not (out["std"] > 0).all():
            raise ParameterError(f"{where}: target.std must be positive")
        if not 0.0 <= out["mean"][0] <= 100.0:
            raise ParameterError(f"{where}: target.mean lightness must be in [0, 100]")
    return out


def _check_stain_vectors(m: np.ndarray, field: str) -> None:
    norms = np.linalg.norm(m, axis=1)
    if np.abs(norms - 1.0).max() > _UNIT_TOLERANCE:
        raise ParameterError(f"{field} rows must be unit vectors (norms {np.round(norms, 4)})")
    # Optical density is absorbance: a stain cannot make a channel brighter.
    if (m < -_UNIT_TOLERANCE).any():
        raise ParameterError(f"{field} has negative optical density")
    cos = float(np.clip(abs(m[0] @ m[1]), 0.0, 1.0))
    if np.arccos(cos) < MIN_STAIN_ANGLE:
        raise ParameterError(f"{field} holds one stain twice, not two separable stains")


def _ruifrok_rows(params: dict) -> int:
    stains = params.get("stains", "he")
    if isinstance(stains, str):
        m = STAIN_MATRICES.get(stains.lower())
        if m is None:
            raise ParameterError(
                f"stains: {stains!r} is unknown; valid: {', '.join(STAIN_MATRICES)}"
            )
        return m.shape[0]
    try:
        return int(np.asarray(stains, dtype=np.float64).reshape(-1, 3).shape[0])
    except (TypeError, ValueError):
        raise ParameterError(
            f"stains: expected a name or rows of 3 numbers, got {stains!r}"
        ) from None
