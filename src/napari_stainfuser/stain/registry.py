"""Normalizers by name, stain presets, and fitting from a target path."""

import inspect
import json
from pathlib import Path

import numpy as np

from ..errors import ParameterError, SlideReadError
from .base import PRESET_FORMAT, PRESET_VERSION, StainNormalizer
from .macenko import MacenkoNormalizer
from .reinhard import ReinhardNormalizer
from .ruifrok import RuifrokNormalizer
from .vahadane import VahadaneNormalizer

NORMALIZERS: dict[str, type[StainNormalizer]] = {
    cls.name: cls
    for cls in (MacenkoNormalizer, ReinhardNormalizer, RuifrokNormalizer, VahadaneNormalizer)
}

# Whole-slide formats go through open_slide; everything else is decoded as a picture.
SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif", ".vms", ".mrxs", ".zarr", ".tif", ".tiff")


def _method_class(name) -> type[StainNormalizer]:
    key = str(name).strip().lower()
    if key not in NORMALIZERS:
        raise ParameterError(f"method {name!r} is unknown; valid: {', '.join(sorted(NORMALIZERS))}")
    return NORMALIZERS[key]


def valid_params(cls: type[StainNormalizer]) -> list[str]:
    names = set()
    for klass in (cls, StainNormalizer):
        sig = inspect.signature(klass.__init__)
        names |= {p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}
    return sorted(names)


def get_normalizer(name: str, **params) -> StainNormalizer:
    """A new, unfitted normalizer: 'macenko', 'reinhard', 'ruifrok' or 'vahadane'."""
    cls = _method_class(name)
    valid = valid_params(cls)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ParameterError(
            f"{cls.name}: unknown parameter {unknown[0]!r}; valid: {', '.join(valid)}"
        )
    return cls(**params)


def load_normalizer(path, method: str | None = None, **params) -> StainNormalizer:
    """A normalizer fitted from a JSON stain preset written by ``save``.

    method: if given, the preset must be for this method.
    params: override the preset's parameters (e.g. device, tile_size).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParameterError(f"{path}: no such stain preset") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ParameterError(f"{path}: cannot read stain preset ({e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParameterError(
            f"{path}: corrupt stain preset ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != PRESET_FORMAT:
        raise ParameterError(f'{path}: not a stain preset (no "format": {PRESET_FORMAT!r})')
    version = data.get("version")
    if not isinstance(version, int) or version > PRESET_VERSION:
        raise ParameterError(
            f"{path}: stain preset version {version!r} is not supported (up to {PRESET_VERSION})"
        )
    stored = data.get("method")
    if not isinstance(stored, str) or stored not in NORMALIZERS:
        raise ParameterError(
            f"{path}: stain preset method {stored!r} is unknown; valid: {', '.join(sorted(NORMALIZERS))}"
        )
    if method is not None and _method_class(method).name != stored:
        raise ParameterError(
            f"{path}: stain preset is for method {stored!r}, not {_method_class(method).name!r}"
        )
    saved = data.get("params", {})
    target = data.get("target")
    if not isinstance(saved, dict) or not isinstance(target, dict):
        raise ParameterError(f'{path}: stain preset needs "params" and "target" objects')
    try:
        norm = get_normalizer(stored, **{**saved, **params})
    except ParameterError as e:
        raise ParameterError(f"{path}: {e}") from None
    norm._set_target_from_preset(target, str(path))
    norm.target_name = str(data.get("target_name") or path)
    return norm


load = load_normalizer


def read_target_image(path) -> np.ndarray:
    """Decode a target picture (PNG, JPEG, ...) to H×W×3 uint8; alpha is dropped."""
    import imagecodecs

    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"target {path}: no such file")
    try:
        image = np.asarray(imagecodecs.imread(str(path)))
    except Exception as e:  # imagecodecs raises format-specific errors
        raise ParameterError(f"target {path}: not an image ({type(e).__name__})") from None
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ParameterError(f"target {path}: expected an RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ParameterError(f"target {path}: expected 8-bit RGB, got {image.dtype}")
    return image


def fit_target(method: str, target, *, name: str | None = None, **params) -> StainNormalizer:
    """A normalizer for ``method`` fitted on ``target``.

    target: a stain preset (.json path), a picture path (PNG, JPEG, ...), a
    slide path (fitted on its tissue), an H×W×3 uint8 array, a list of them,
    or a Slide.
    """
    if isinstance(target, (str, Path)):
        path = Path(target)
        if path.suffix.lower() == ".json":
            return load_normalizer(path, method=method, **params)
        norm = get_normalizer(method, **params)
        if path.suffix.lower() in SLIDE_SUFFIXES:
            from ..slide import open_slide

            if not path.exists():
                raise ParameterError(f"target {path}: no such file")
            try:
                slide = open_slide(path)
            except SlideReadError as e:
                raise ParameterError(f"target {path}: {e}") from None
            return norm.fit(slide, name=name or str(path))
        return norm.fit(read_target_image(path), name=name or str(path))
    return get_normalizer(method, **params).fit(target, name=name)
