"""``SlideJob``: one whole-slide run, described in a small, frozen, picklable object.

A job says what to compute, not where or how fast: the slide, the stainer
recipe (method, target, weights, sampler, steps, options), the level, the
tiling (tile, overlap, window), the noise (seed, field or per tile), the
tissue switch, the batch size and the µm/px. Building one checks every one
of these (:mod:`.checks`), so a runner never starts work it would refuse.
:meth:`SlideJob.open` is the only place that fits the slide's statistics,
detects its tissue and builds its tile plans.

Every runner takes a job: :func:`~napari_stainfuser.batch.normalize_slide`
(in this process and on dask.distributed, where the job itself is what
travels to the workers), the lazy :class:`~napari_stainfuser.tiling.ResultPyramid`
that napari shows, and ``stainfuser normalize``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import ParameterError, opt
from ..tiling.grid import MAX_TILE, MIN_TILE, check_tiling
from ..tiling.noise import NOISE_MODES
from ..tiling.windows import WINDOWS
from .checks import MAX_BATCH, check_choice, check_int, check_mpp, check_slide, stainer_recipe


@dataclass(frozen=True, eq=False)
class SlideJob:
    """A whole-slide run (see the module docstring). Build it with :meth:`create`.

    slide: an absolute path (str), an object with ``.levels`` and ``.mpp``,
        or a Y×X×3 uint8 array.
    stainer: a :class:`~napari_stainfuser.stainers.StainerRecipe`, or a
        ready stainer (it then travels as its recipe, or pickled).
    level: the pyramid level to stain.
    tile, overlap: at the stainer's working resolution; None: the stainer's own.
    window: blending window of overlapping tiles: "cosine", "linear", "none".
    seed: the diffusion noise field's seed (and the stainer's sampling seed).
    noise: "field" (one field over the slide) or "per_tile" (for comparison).
    tissue: pass glass through unchanged and never stain it.
    batch_size: tiles per stainer call; None: the stainer's own.
    mpp: µm/px of level 0 when the file does not say (or says wrongly).
    """

    slide: Any
    stainer: Any
    level: int = 0
    tile: int | None = None
    overlap: int | None = None
    window: str = "cosine"
    seed: int = 0
    noise: str = "field"
    tissue: bool = True
    batch_size: int | None = None
    mpp: float | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "slide", check_slide(self.slide))
        stainer = self.stainer
        if stainer is None or not (
            hasattr(stainer, "build") or (hasattr(stainer, "spec") and hasattr(stainer, "stain"))
        ):
            raise ParameterError(
                f"{opt('stainer')}: expected a stainer or a stainer recipe, got "
                f"{type(stainer).__name__}"
            )
        set_(self, "level", check_int(self.level, "level", 0))
        tile, overlap = check_tiling(self.tile, self.overlap, min_tile=MIN_TILE, max_tile=MAX_TILE)
        set_(self, "tile", tile)
        set_(self, "overlap", overlap)
        set_(self, "window", check_choice(self.window, "window", WINDOWS))
        set_(self, "seed", check_int(self.seed, "seed", 0, (1 << 63) - 1))
        set_(self, "noise", check_choice(self.noise, "noise", NOISE_MODES))
        if not isinstance(self.tissue, bool):
            raise ParameterError(f"{opt('tissue')}: must be True or False, got {self.tissue!r}")
        if self.batch_size is not None:
            set_(self, "batch_size", check_int(self.batch_size, "batch_size", 1, MAX_BATCH))
        set_(self, "mpp", check_mpp(self.mpp))

    @classmethod
    def create(
        cls,
        slide,
        *,
        method: str | None = None,
        target=None,
        weights=None,
        stainer=None,
        device: str = "cpu",
        seed: int = 0,
        sampler: str | None = None,
        steps: int | None = None,
        level: int = 0,
        tile: int | None = None,
        overlap: int | None = None,
        window: str = "cosine",
        noise: str = "field",
        tissue: bool = True,
        batch_size: int | None = None,
        mpp: float | None = None,
        **options,
    ) -> SlideJob:
        """A checked job from the options a user gives (the same as ``normalize_slide``'s).

        Give ``method`` and ``target`` (plus ``weights``, ``sampler``,
        ``steps``, ``device`` and method ``options`` as they apply), or a
        ready ``stainer``.
        """
        if stainer is None:
            if method is None:
                raise ParameterError(f"{opt('method')}: give a method name or a stainer")
            stainer = stainer_recipe(
                method,
                target,
                weights,
                device,
                seed,
                {"sampler": sampler, "steps": steps, **options},
            )
        elif method is not None or target is not None:
            raise ParameterError(
                f"{opt('stainer')}: give either a ready stainer or {opt('method')} and "
                f"{opt('target')}, not both"
            )
        return cls(
            slide, stainer, level=level, tile=tile, overlap=overlap, window=window, seed=seed,
            noise=noise, tissue=tissue, batch_size=batch_size, mpp=mpp,
        )  # fmt: skip

    def __reduce__(self):
        # A live stainer travels as its recipe (its state as it is now), so a
        # worker rebuilds exactly what this process holds.
        from ..stainers import recipe_of

        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["stainer"] = recipe_of(state["stainer"]) or state["stainer"]
        return (_rebuild, (state,))

    def with_options(self, **changes) -> SlideJob:
        """A copy with some fields changed (checked again)."""
        return replace(self, **changes)

    @property
    def method(self) -> str | None:
        """The method name, when the stainer is a recipe."""
        return getattr(self.stainer, "method", None)

    def open(self, progress=None, state=None):
        """Fit, detect and plan: the :class:`~.open.OpenJob` every runner works from.

        state: what opening this job found in another process
        (:meth:`OpenJob.state`), to open it without reading the slide again.
        """
        from .open import OpenJob

        return OpenJob(self, progress, state)


def _rebuild(state: dict) -> SlideJob:
    return SlideJob(**state)


__all__ = ["MAX_BATCH", "NOISE_MODES", "WINDOWS", "SlideJob"]
