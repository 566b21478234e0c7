"""``OpenJob``: a job with its slide opened, its stainer fitted and its tiles planned.

This is the only place that fits slide statistics, detects tissue and builds
tile plans. A dask worker is sent the job's description together with what
opening it found (:meth:`OpenJob.state`: the fitted statistics as they are
now, and the tissue mask), so no worker reads the slide's overview again;
it opens the job from them and checks that its fingerprint
(:meth:`OpenJob.identity`) equals the one the client computed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import StainEstimationError, opt
from ..fingerprint import array_digest, file_digest
from ..progress import step
from ..stainers import portable, stainer_identity, warm_up
from .source import SlideSource, open_source

# Bump when anything changes the pixels a job produces for the same identity.
FORMAT_VERSION = 2


class OpenJob:
    """A :class:`~.spec.SlideJob` ready to run.

    source: the slide's levels, µm/px and reader.
    level: the level the job stains.
    stainer: the stainer, fitted to the target and (classical methods) to
        this slide's tissue.
    tissue: the slide's :class:`~napari_stainfuser.tiling.TissueSwitch`, or None.
    plan: the :class:`~napari_stainfuser.tiling.TilePlan` of ``level``.
    batch_size: tiles per stainer call.
    """

    def __init__(self, job, progress=None, state: OpenedState | None = None):
        from ..devices import resolve_device
        from ..tiling.tissue import TissueSwitch, detect_tissue

        self.job = job
        step(progress, "open")
        device = getattr(job.stainer, "device", None)
        if device is not None:
            resolve_device(device)  # refuse a missing GPU before anything is read
        self.source = open_source(job.slide, job.mpp)
        self.level = self.source.check_level(job.level)
        if state is None:
            # The stainer first: a bad target or bad weights fail before the slide is read.
            stainer = job.stainer.build() if hasattr(job.stainer, "build") else job.stainer
            overview = _with_overview(self.source, progress)
            step(progress, "fit")
            self.tissue = detect_tissue(overview) if job.tissue else None
            self.stainer = _with_slide_statistics(stainer, overview)
            _warn_if_resolution_unknown(self.source, self.level, self.stainer.spec.mpp)
        else:
            # What this job's opening found elsewhere: the mask as prepared, the
            # stainer as fitted (its recipe carries the slide statistics).
            self.tissue = None if state.mask is None else TissueSwitch(state.mask, 0, False)
            self.stainer = state.stainer()
        warm_up(self.stainer)
        self.batch_size = int(job.batch_size or self.stainer.spec.batch_size)
        self.plan = self.plan_for(self.level)

    @property
    def spec(self):
        return self.stainer.spec

    def plan_for(self, level: int, native_coarse: bool = False):
        """The tile plan of ``level``.

        native_coarse: a level much coarser than the stainer's working µm/px
        is stained at its own resolution (a preview) instead of being
        resampled up to the working resolution, which would cost as much as
        level 0.
        """
        from ..tiling.plan import TilePlan

        job, spec = self.job, self.stainer.spec
        mpp = self.source.level_mpp(level)
        if native_coarse and level > 0 and mpp and spec.mpp and mpp > 1.5 * spec.mpp:
            mpp = None
        return TilePlan(
            self.source.reader(level), spec, tile=job.tile, overlap=job.overlap, mpp=mpp,
            tissue=self.tissue, seed=job.seed, noise=job.noise, window=job.window,
        )  # fmt: skip

    def identity(self) -> dict:
        """Everything that decides the output pixels, as plain JSON values.

        Two processes that opened the same job have equal identities; a
        resumed run must have the identity of the run it continues.
        """
        import json

        spec = self.stainer.spec
        ident = {
            "format": FORMAT_VERSION,
            "input": self.source.identity(),
            "level": self.level,
            "stainer": stainer_identity(self.stainer),
            "plan": self.plan.describe(),
            # Batches change a model's arithmetic; per-pixel output cannot depend on them.
            "batch_size": None if spec.per_pixel else self.batch_size,
            "extras": [e.describe() for e in spec.extras],
        }
        return json.loads(json.dumps(ident))

    def provenance(self) -> dict:
        """How the output is made, as a JSON object recorded in the output file
        (see :mod:`napari_stainfuser.slide.provenance`)."""
        import json

        from ..slide.provenance import software
        from ..stainers import StainerRecipe, recipe_of, stainer_identity

        job, stainer = self.job, self.stainer
        ident = stainer_identity(stainer)
        recipe = job.stainer if isinstance(job.stainer, StainerRecipe) else recipe_of(stainer)
        weights = None
        if recipe is not None and recipe.weights:
            w = Path(recipe.weights)  # the identity has its digest (a folder: its path)
            weights = {"name": w.name, "digest": ident.get("weights") if w.is_file() else None}
        diffusion = recipe is not None and not recipe.classical
        record = {
            "software": software(),
            "method": ident.get("method") or (recipe.method if recipe else None),
            "parameters": ident.get("params", {}),
            "target": _target_record(recipe.target if recipe is not None else None),
            "weights": weights,
            "seed": job.seed,
            "sampler": getattr(stainer, "sampler", None) if diffusion else None,
            "steps": getattr(stainer, "steps", None) if diffusion else None,
            "preprocess": getattr(stainer, "preprocess", None) if diffusion else None,
            "input": {
                **self.source.identity(),
                "mpp": self.source.level_mpp(0),
                "magnification": getattr(self.source.slide, "magnification", None),
            },
            "level": self.level,
            "tile": self.plan.tile,
            "overlap": self.plan.tile - self.plan.grid.step,
            "window": job.window,
            "tissue": job.tissue,
        }
        return json.loads(json.dumps(record, default=str))

    def state(self) -> OpenedState:
        """What opening found, to open the same job elsewhere without reading the slide."""
        mask = None if self.tissue is None else self.tissue.mask
        return OpenedState(portable(self.stainer), mask)


@dataclass(frozen=True, eq=False)
class OpenedState:
    """The results of opening a job: the fitted stainer (as it travels) and the tissue mask."""

    stainer: object  # a zero-argument callable (a recipe, or the stainer wrapped)
    mask: object  # the prepared H×W bool mask of the slide overview, or None


def _with_overview(src: SlideSource, progress=None) -> SlideSource:
    """``src`` with its low-resolution overview read into memory once.

    Slide statistics and the tissue mask are both computed on the same
    overview (what :func:`~napari_stainfuser.stain.tissue.slide_overview`
    would read); reading it once instead of twice saves a pass over a level
    of up to 2048² px, and a slide without a pyramid is read in strips
    (:meth:`SlideSource.overview`).
    """
    from ..stain.tissue import DEFAULT_MAX_SIDE

    image, idx = src.overview(DEFAULT_MAX_SIDE, progress)
    levels = [*src.levels[:idx], image, *src.levels[idx + 1 :]]
    return SlideSource(levels, src.mpp, src.path)


def _warn_if_resolution_unknown(src: SlideSource, level: int, work_mpp: float | None):
    """A model trained at one µm/px sees a slide without one at its own pixel
    size, which is right only by chance: say so, once, before the run."""
    if work_mpp and src.level_mpp(level) is None:
        name = Path(src.path).name if src.path else "the slide"
        warnings.warn(
            f"{name} does not record its µm/px, so it is stained at its own pixel size, "
            f"but the method works at {work_mpp:g} µm/px; give the slide's µm/px with "
            f"{opt('mpp')} if they differ",
            UnknownResolutionWarning,
            stacklevel=3,
        )


class UnknownResolutionWarning(UserWarning):
    """The slide has no µm/px, and the stainer works at a fixed one."""


def _with_slide_statistics(stainer, src: SlideSource):
    """A classical normalizer without slide statistics would estimate them per
    tile, so its output would depend on the tiling: fit a copy on this slide."""
    from ..stain.base import StainNormalizer

    if not isinstance(stainer, StainNormalizer) or stainer.source_state is not None:
        return stainer
    fitted = portable(stainer)()  # a copy: the caller's object stays as it was
    name = src.path or "slide"
    try:
        fitted.fit_source(src, name=name)
    except StainEstimationError as e:
        # Glass only (or nearly): nothing to re-stain. As for a blank tile,
        # treat it as already in the target's stain, so it passes through.
        warnings.warn(f"{e}; treating it as already in the target stain", stacklevel=4)
        fitted.source_state = fitted.target_state
        fitted.source_name = f"{name} (no tissue)"
    return fitted


def _target_record(target) -> dict | None:
    """What the output's stain came from: its kind, file name and a digest."""
    if target is None:
        return None
    from ..targets import target_kind

    try:
        kind = target_kind(target)
    except Exception:
        kind = type(target).__name__
    if isinstance(target, (str, Path)):
        p = Path(target)
        return {"kind": kind, "name": p.name, "digest": file_digest(p) if p.is_file() else None}
    if isinstance(target, np.ndarray):
        return {"kind": kind, "shape": list(target.shape), "digest": array_digest(target)}
    if isinstance(target, tuple):
        return {"kind": kind, "digest": [array_digest(np.asarray(t)) for t in target]}
    stats = getattr(target, "target", None)  # fitted statistics (a preset, a slide)
    if isinstance(stats, dict):
        digests = {k: array_digest(np.asarray(v)) for k, v in stats.items() if v is not None}
        return {"kind": kind, "name": getattr(target, "target_name", None), "digest": digests}
    path = getattr(target, "path", None)  # an opened slide
    return {"kind": kind, "name": Path(path).name if path else None, "digest": None}
