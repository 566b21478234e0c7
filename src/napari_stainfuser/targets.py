"""Target stains: what the output should look like, in any of the forms a user has it.

A target is a picture (PNG, JPEG, ...), a stain preset (.json), another
slide (its tissue), or an H×W×3 uint8 array (for example a region of a
slide drawn in napari). :func:`check_target` checks one cheaply when a job is
described (a picture's header, a preset's content), :func:`fit_target` fits a
classical normalizer on it when the job is opened.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ParameterError, opt

# Whole-slide formats go through open_slide; everything else is decoded as a picture.
SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif", ".vms", ".mrxs", ".zarr", ".tif", ".tiff")
PICTURE_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr")


def target_kind(target) -> str:
    """'preset', 'slide', 'picture', 'array', 'arrays' or 'statistics'."""
    from .stainers import Statistics

    if isinstance(target, Statistics):
        return "statistics"
    if isinstance(target, (str, Path)):
        suffix = Path(target).suffix.lower()
        if suffix == ".json":
            return "preset"
        return "slide" if suffix in SLIDE_SUFFIXES or Path(target).is_dir() else "picture"
    if hasattr(target, "levels"):
        return "slide"
    if isinstance(target, (list, tuple)):
        return "arrays"
    return "array"


def check_picture(path: Path) -> tuple[int, int]:
    """(height, width) of a target picture from its header, or a one-line error."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode, (w, h) = im.mode, im.size
    except FileNotFoundError:
        raise ParameterError(f"{opt('target')} {path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        why = "not an image" if isinstance(e, UnidentifiedImageError) else f"unreadable ({e})"
        raise ParameterError(f"{opt('target')} {path}: {why}") from None
    if mode not in PICTURE_MODES:
        raise ParameterError(
            f"{opt('target')} {path}: expected an 8-bit RGB picture, got mode {mode!r}"
        )
    return h, w


def read_target_image(path) -> np.ndarray:
    """Decode a target picture (PNG, JPEG, ...) to H×W×3 uint8; alpha is dropped."""
    from PIL import Image

    path = Path(path)
    check_picture(path)
    try:
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise ParameterError(f"{opt('target')} {path}: cannot decode ({e})") from None
    return np.ascontiguousarray(image)


def check_array(target, name: str = "target") -> np.ndarray:
    a = np.asarray(target)
    if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8 or min(a.shape[:2]) < 1:
        raise ParameterError(
            f"{opt(name)}: expected an H×W×3 uint8 RGB image, got {a.shape} {a.dtype}"
        )
    return a


def check_target(method: str, target, classical: bool):
    """``target`` in the form a recipe keeps it (a path string, arrays, a slide,
    fitted statistics), checked for ``method``; one-line errors otherwise."""
    if target is None:
        raise ParameterError(f"{opt('target')}: {method} needs a target (picture, preset or array)")
    kind = target_kind(target)
    if not classical and kind not in ("picture", "array"):
        what = {"preset": "a stain preset describes a classical method"}.get(
            kind, f"a {kind} is not a picture"
        )
        raise ParameterError(f"{opt('target')}: {what}; {method} needs a target picture or array")
    if isinstance(target, (str, Path)):
        path = Path(target).expanduser().absolute()
        if not path.exists():
            raise ParameterError(f"{opt('target')} {path}: no such file")
        if kind == "preset":
            from .stain.presets import read_preset

            read_preset(path, method=method)
        elif kind == "picture":
            check_picture(path)
        return str(path)
    if kind == "slide":
        path = getattr(target, "path", None)
        return str(path) if path and Path(path).exists() else target
    if kind == "arrays":
        if not target:
            raise ParameterError(f"{opt('target')}: an empty list has no pixels")
        return tuple(check_array(t) for t in target)
    if kind == "array":
        return check_array(target)
    return target


def fit_target(method: str, target, *, name: str | None = None, **params):
    """A classical normalizer for ``method`` fitted on ``target``.

    target: a stain preset (.json path), a picture path (PNG, JPEG, ...), a
    slide path (fitted on its tissue), an H×W×3 uint8 array, a list of them,
    or a Slide.
    """
    from .stain import get_normalizer, load_normalizer

    kind = target_kind(target)
    if kind == "preset":
        return load_normalizer(target, method=method, **params)
    norm = get_normalizer(method, **params)
    if kind == "slide" and isinstance(target, (str, Path)):
        from .errors import SlideReadError
        from .slide import open_slide

        path = Path(target)
        if not path.exists():
            raise ParameterError(f"{opt('target')} {path}: no such file")
        try:
            slide = open_slide(path)
        except SlideReadError as e:
            raise ParameterError(f"{opt('target')} {path}: {e}") from None
        return norm.fit(slide, name=name or str(path))
    if kind == "picture":
        return norm.fit(read_target_image(target), name=name or str(target))
    if kind == "arrays":
        target = list(target)
    return norm.fit(target, name=name)
