"""Build a fitted stainer from a method name and a target, and move it between processes.

Python::

    from napari_stainfuser.stainers import make_stainer

    # Classical: fit the target (picture, stain preset .json, slide or array),
    # then the slide's own statistics once, on a tissue sample.
    norm = make_stainer("macenko", "target.png", slide="slide.svs")

    # StainFuser: weights from a path, $STAINFUSER_WEIGHTS or the local
    # Hugging Face cache (never downloaded); the target is a picture or array.
    sf = make_stainer("stainfuser", "target.png", weights="ckpt/", device="cuda", seed=0)

    out = norm.stain(tiles)   # B×3×H×W uint8 -> StainResult

Every stainer made here remembers how it was made (a :class:`StainerRecipe`),
so a dask worker can rebuild an identical copy once (:func:`portable`) and a
resumed run can check it is continuing the same job (:func:`stainer_identity`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ParameterError
from .fingerprint import array_digest, file_digest
from .stainer import Stainer

CLASSICAL = ("macenko", "reinhard", "ruifrok", "vahadane")
METHODS = (*CLASSICAL, "stainfuser")

# Stainers built here -> how they were built.
_RECIPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _check_method(method) -> str:
    key = str(method).strip().lower()
    if key not in METHODS:
        raise ParameterError(f"method: {method!r} is unknown; valid: {', '.join(METHODS)}")
    return key


def _describe_target(target) -> Any:
    if isinstance(target, (str, Path)):
        p = Path(target)
        return {"path": str(p.resolve()), "digest": file_digest(p)} if p.is_file() else str(p)
    if hasattr(target, "levels"):
        return {"slide": str(getattr(target, "path", ""))}
    return {"array": array_digest(target)}


def _slide_input(slide):
    """A slide path -> opened slide; a Slide or an array passes through."""
    if isinstance(slide, (str, Path)):
        from .slide import open_slide

        return open_slide(slide)
    return slide


def _stainfuser_target(target) -> np.ndarray:
    if isinstance(target, (str, Path)):
        p = Path(target)
        if p.suffix.lower() == ".json":
            raise ParameterError(
                f"target {p}: a stain preset describes a classical method; "
                "stainfuser needs a target picture"
            )
        from .stain.registry import read_target_image

        return read_target_image(p)
    if hasattr(target, "levels"):
        raise ParameterError("target: stainfuser needs a target picture or array, not a slide")
    return np.asarray(target)


@dataclass
class StainerRecipe:
    """Everything needed to rebuild a stainer in another process.

    For classical methods the fitted statistics travel with the recipe
    (``state``), so workers neither refit nor reread the slide.
    """

    method: str
    target: Any = None
    weights: str | None = None
    device: str = "cpu"
    seed: int = 0
    params: dict = field(default_factory=dict)
    state: dict | None = None

    def build(self) -> Stainer:
        if self.method in CLASSICAL:
            from .stain import get_normalizer

            norm = get_normalizer(self.method, **self.params)
            st = self.state
            norm.target_state = {k: _tensor(v) for k, v in st["target"].items()}
            norm.target_name = st["target_name"]
            if st["source"] is not None:
                norm.source_state = {k: _tensor(v) for k, v in st["source"].items()}
                norm.source_name = st["source_name"]
            stainer = norm
        else:
            stainer = _load_stainfuser(
                self.target, self.weights, self.device, self.seed, self.params
            )
        _RECIPES[stainer] = self
        return stainer

    def __call__(self) -> Stainer:
        return self.build()


def _tensor(v):
    import torch

    return torch.as_tensor(np.asarray(v), dtype=torch.float64)


def _load_stainfuser(target, weights, device, seed, params) -> Stainer:
    from .diffusion import StainFuser

    image = _stainfuser_target(target)  # a bad target fails before gigabytes are read
    sf = StainFuser.load(weights, device=device, seed=seed, **params)
    sf.set_target(image)
    return sf


def _classical_state(norm) -> dict:
    def arrays(state):
        return None if state is None else {k: v.cpu().numpy() for k, v in state.items()}

    return {
        "target": arrays(norm.target_state),
        "target_name": norm.target_name,
        "source": arrays(norm.source_state),
        "source_name": norm.source_name,
    }


def make_stainer(
    method: str,
    target,
    weights: str | Path | None = None,
    slide=None,
    device: str = "cpu",
    seed: int = 0,
    **params,
) -> Stainer:
    """A fitted stainer for ``method``, ready for :meth:`stain`.

    method:
        'macenko', 'reinhard', 'vahadane', 'ruifrok' or 'stainfuser'.
    target:
        What the output should look like: a picture path (PNG, JPEG, TIFF), a
        stain preset (.json, classical methods), a slide path or Slide
        (classical methods fit on its tissue), or an H×W×3 uint8 array.
    weights:
        StainFuser checkpoint file or directory; None looks in
        $STAINFUSER_WEIGHTS and the local Hugging Face cache. Ignored by the
        classical methods.
    slide:
        The slide (path, Slide or array) that will be stained. Classical
        methods fit its stain statistics once on a tissue sample whose size
        does not depend on any tiling, so every tile uses the same numbers.
    device, seed:
        Torch device; seed for pixel sampling (classical) or for noise when no
        noise field is given (StainFuser).
    params:
        Passed on: normalizer options (``lut``, ``max_pixels``, ``tile_size``,
        ``batch_size``, method parameters) or StainFuser options (``steps``,
        ``scheduler``, ``tile_size``, ``overlap``, ``mpp``, ``batch_size``,
        ``precision``).
    """
    key = _check_method(method)
    if target is None:
        raise ParameterError(f"target: {key} needs a target (picture, preset or array)")
    if key in CLASSICAL:
        from .stain import fit_target

        norm = fit_target(key, target, device=device, seed=seed, **params)
        if slide is not None:
            s = _slide_input(slide)
            norm.fit_source(s, name=str(getattr(s, "path", "")) or None)
        recipe = StainerRecipe(key, None, None, str(device), int(seed), dict(params))
        recipe.state = _classical_state(norm)
        recipe.target = _describe_target(target)
        _RECIPES[norm] = recipe
        return norm
    weights = None if weights is None else str(weights)
    recipe = StainerRecipe(key, target, weights, str(device), int(seed), dict(params))
    return recipe.build()


def warm_up(stainer) -> None:
    """Do a stainer's one-off setup now rather than inside the first tile.

    Classical normalizers with slide statistics build a 256³ lookup table on
    first use (seconds); a worker does it once when it joins, so the first
    tile is not slower than the rest and tiles/s reflect steady state.
    """
    from .stain.base import StainNormalizer

    if isinstance(stainer, StainNormalizer) and stainer.source_state is not None:
        stainer.transform(np.zeros((1, 1, 3), np.uint8))


def recipe_of(stainer) -> StainerRecipe | None:
    """How ``stainer`` was made, if it came from :func:`make_stainer`."""
    try:
        return _RECIPES.get(stainer)
    except TypeError:
        return None


def portable(stainer):
    """A picklable zero-argument callable that returns ``stainer`` or an identical copy.

    Stainers from :func:`make_stainer` travel as their recipe (classical: the
    fitted statistics; StainFuser: weights path and target, loaded once per
    worker). Any other stainer must be picklable itself.
    """
    recipe = recipe_of(stainer)
    if recipe is not None:
        return recipe
    from .stain.base import StainNormalizer

    if isinstance(stainer, StainNormalizer):
        from .stain.registry import valid_params

        params = {
            k: getattr(stainer, k) for k in valid_params(type(stainer)) if hasattr(stainer, k)
        }
        recipe = StainerRecipe(stainer.name, None, None, str(stainer.device), stainer.seed, params)
        recipe.state = _classical_state(stainer)
        return recipe
    return _Given(stainer)


@dataclass
class _Given:
    stainer: Any

    def __call__(self) -> Stainer:
        return self.stainer


def stainer_identity(stainer) -> dict:
    """What identifies a stainer's output, for resume fingerprints."""
    spec = stainer.spec
    base = {"per_pixel": spec.per_pixel, "mpp": spec.mpp}
    recipe = recipe_of(stainer)
    from .stain.base import StainNormalizer

    if isinstance(stainer, StainNormalizer):
        st = _classical_state(stainer)
        return {
            **base,
            "method": stainer.name,
            "params": {k: _jsonable(v) for k, v in stainer.get_params().items()},
            "target": {k: array_digest(v) for k, v in (st["target"] or {}).items()},
            "source": {k: array_digest(v) for k, v in (st["source"] or {}).items()},
        }
    if recipe is not None and recipe.method == "stainfuser":
        w = Path(recipe.weights) if recipe.weights else None
        return {
            **base,
            "method": "stainfuser",
            "weights": None if w is None else (file_digest(w) if w.is_file() else str(w)),
            "target": _describe_target(recipe.target),
            "seed": recipe.seed,
            "params": {k: _jsonable(v) for k, v in recipe.params.items()},
            "device": recipe.device,
        }
    ident = {**base, "class": f"{type(stainer).__module__}.{type(stainer).__qualname__}"}
    for attr in ("steps", "scheduler", "seed", "device"):
        if hasattr(stainer, attr):
            ident[attr] = _jsonable(getattr(stainer, attr))
    latents = getattr(stainer, "target_latents", None)
    if latents is not None and hasattr(latents, "cpu"):
        ident["target_latents"] = array_digest(latents.detach().cpu().numpy())
    return ident


def _jsonable(v):
    if isinstance(v, (np.ndarray, list, tuple)):
        return np.asarray(v).tolist()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)
