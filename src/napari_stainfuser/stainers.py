"""Build a fitted stainer from a method name and a target, and move it between processes.

Python::

    from napari_stainfuser import make_stainer

    # Classical: fit the target (picture, stain preset .json, slide or array),
    # then the slide's own statistics once, on a tissue sample.
    norm = make_stainer("macenko", "target.png", slide="slide.svs")

    # StainFuser: weights from a path, $STAINFUSER_WEIGHTS or the local
    # Hugging Face cache (never downloaded); the target is a picture or array.
    sf = make_stainer("stainfuser", "target.png", weights="ckpt/", device="cuda", seed=0,
                      sampler="dpm++", steps=10)

    out = norm.stain(tiles)   # B×3×H×W uint8 -> StainResult

A :class:`StainerRecipe` is the small, picklable description of a stainer
that a whole-slide job carries to dask workers. :func:`recipe_of` derives it
from a live stainer at the moment it is asked, from the stainer's current
state (a classical normalizer's fitted statistics, StainFuser's weights and
target), so a recipe can never describe an older state of the stainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .fingerprint import array_digest, file_digest
from .methods import CLASSICAL, DIFFUSION, VIRTUAL_IHC
from .stainer import Stainer


@dataclass(frozen=True, eq=False)
class Statistics:
    """A classical normalizer's fitted statistics as plain arrays (what travels)."""

    target: dict
    target_name: str | None = None
    source: dict | None = None
    source_name: str | None = None

    @classmethod
    def of(cls, norm) -> Statistics:
        def arrays(state):
            return None if state is None else {k: v.cpu().numpy() for k, v in state.items()}

        return cls(
            arrays(norm.target_state), norm.target_name, arrays(norm.source_state), norm.source_name
        )

    def apply(self, norm) -> None:
        import torch

        def tensors(state):
            return {
                k: torch.as_tensor(np.asarray(v), dtype=torch.float64) for k, v in state.items()
            }

        norm.target_state = tensors(self.target)
        norm.target_name = self.target_name
        if self.source is not None:
            norm.source_state = tensors(self.source)
            norm.source_name = self.source_name


@dataclass(frozen=True, eq=False)
class StainerRecipe:
    """Everything needed to build a stainer in any process.

    method: a name from :data:`napari_stainfuser.methods.METHODS`.
    target: a picture, preset or slide path (str), an H×W×3 uint8 array, a
        list of arrays, or :class:`Statistics` already fitted.
    weights: the resolved checkpoint path (diffusion methods).
    options: method options as sorted (name, value) pairs: ``steps``,
        ``sampler``, ``precision``, ... for StainFuser; ``lut``,
        ``max_pixels``, method parameters for the classical methods.
    """

    method: str
    target: Any = None
    weights: str | None = None
    device: str = "cpu"
    seed: int = 0
    options: tuple = field(default=())

    @property
    def params(self) -> dict:
        return dict(self.options)

    @property
    def classical(self) -> bool:
        return self.method in CLASSICAL

    def build(self) -> Stainer:
        """A stainer fitted to the target (not yet to any slide)."""
        if self.classical:
            if isinstance(self.target, Statistics):
                from .stain import get_normalizer

                norm = get_normalizer(
                    self.method, device=self.device, seed=self.seed, **self.params
                )
                self.target.apply(norm)
                return norm
            from .targets import fit_target

            return fit_target(
                self.method, self.target, device=self.device, seed=self.seed, **self.params
            )
        if self.method == VIRTUAL_IHC:
            from .diffusion.virtual_ihc import VirtualIHC

            return VirtualIHC.load(self.weights, device=self.device, seed=self.seed, **self.params)
        from .diffusion import StainFuser

        image = _picture(self.target)
        sf = StainFuser.load(self.weights, device=self.device, seed=self.seed, **self.params)
        sf.set_target(image)
        return sf

    def __call__(self) -> Stainer:
        return self.build()


def _picture(target) -> np.ndarray:
    if isinstance(target, (str, Path)):
        from .targets import read_target_image

        return read_target_image(target)
    return np.asarray(target)


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
        $STAINFUSER_WEIGHTS and the local Hugging Face cache.
    slide:
        The slide (path, Slide or array) that will be stained. Classical
        methods fit its stain statistics once on a tissue sample whose size
        does not depend on any tiling, exactly as a whole-slide job does
        (:class:`napari_stainfuser.job.SlideJob` is what fits them).
    device, seed:
        Torch device; seed for pixel sampling (classical) or for noise when no
        noise field is given (StainFuser).
    params:
        Normalizer options (``lut``, ``max_pixels``, method parameters) or
        StainFuser options (``steps``, ``sampler``, ``tile_size``,
        ``overlap``, ``mpp``, ``batch_size``, ``precision``).
    """
    from .job.checks import stainer_recipe

    recipe = stainer_recipe(method, target, weights, device, seed, params)
    if slide is None:
        return recipe.build()
    from .job import SlideJob

    return SlideJob.create(slide, stainer=recipe, tissue=False).open().stainer


def warm_up(stainer) -> None:
    """Do a stainer's one-off setup now rather than inside the first tile.

    Classical normalizers with slide statistics build a 256³ lookup table on
    first use (seconds); a worker does it once when it joins, so the first
    tile is not slower than the rest and tiles/s reflect steady state.
    """
    from .stain.base import StainNormalizer

    if isinstance(stainer, StainNormalizer) and stainer.source_state is not None:
        stainer.prepare()


def recipe_of(stainer) -> StainerRecipe | None:
    """The recipe of ``stainer`` as it is now, or None if it cannot be rebuilt from one."""
    if isinstance(stainer, StainerRecipe):
        return stainer
    from .stain.base import StainNormalizer

    if isinstance(stainer, StainNormalizer):
        from .stain.registry import valid_params

        params = {
            k: getattr(stainer, k)
            for k in valid_params(type(stainer))
            if hasattr(stainer, k) and k not in ("device", "seed")
        }
        return StainerRecipe(
            stainer.name, Statistics.of(stainer), None, str(stainer.device), int(stainer.seed),
            tuple(sorted(params.items())),
        )  # fmt: skip
    make = getattr(stainer, "recipe", None)
    return make() if callable(make) else None


def portable(stainer):
    """A picklable zero-argument callable that returns ``stainer`` or an identical copy.

    Stainers with a recipe travel as it (classical: the fitted statistics;
    StainFuser: weights path and target, loaded once per worker). Any other
    stainer must be picklable itself.
    """
    recipe = recipe_of(stainer)
    return recipe if recipe is not None else _Given(stainer)


@dataclass
class _Given:
    stainer: Any

    def __call__(self) -> Stainer:
        return self.stainer


def stainer_identity(stainer) -> dict:
    """What identifies a stainer's output pixels, for resume fingerprints."""
    spec = stainer.spec
    base = {"per_pixel": spec.per_pixel, "mpp": spec.mpp}
    own = getattr(stainer, "identity", None)
    if callable(own) and not isinstance(stainer, StainerRecipe):
        return {**base, **own()}  # a stainer that says what identifies it (a distilled one)
    from .stain.base import StainNormalizer

    if isinstance(stainer, StainNormalizer):
        st = Statistics.of(stainer)
        return {
            **base,
            "method": stainer.name,
            "params": {k: _jsonable(v) for k, v in stainer.get_params().items()},
            "target": {k: array_digest(v) for k, v in (st.target or {}).items()},
            "source": {k: array_digest(v) for k, v in (st.source or {}).items()},
        }
    recipe = recipe_of(stainer)
    if recipe is not None and recipe.method in DIFFUSION:
        w = Path(recipe.weights) if recipe.weights else None
        return {
            **base,
            "method": recipe.method,
            "weights": None if w is None else (file_digest(w) if w.is_file() else str(w)),
            "target": array_digest(_picture(recipe.target)),
            "seed": recipe.seed,
            "params": {k: _jsonable(v) for k, v in recipe.options},
            "device": recipe.device,
        }
    ident = {**base, "class": f"{type(stainer).__module__}.{type(stainer).__qualname__}"}
    for attr in ("steps", "sampler", "seed", "device"):
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
