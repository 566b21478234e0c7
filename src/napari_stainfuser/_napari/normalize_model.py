"""The "Stain normalization" widget's model: its state, its checks, the job it builds.

No Qt here (the widget in ``_qt/`` binds to this), so every choice a user can
make is testable without a window; the napari viewer is only read.

Target kinds:

- ``"layer"``: another image layer: its visible area, or all of it if small;
- ``"region"``: a rectangle drawn on a Shapes layer over an image layer;
- ``"preset"``: a saved stain preset (.json);
- ``"file"``: an image file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ParameterError
from ..methods import CLASSICAL, DIFFUSION, METHODS, SAMPLERS
from .sources import (
    is_rgb_image,
    layer_slide,
    rectangle_box,
    region_pixels,
    visible_pixels,
)
from .viewport import View

TARGET_KINDS = ("layer", "region", "preset", "file")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
THUMB = 96
LIVE_BATCH = 2


@dataclass
class TargetSummary:
    """What the widget shows of a target: a thumbnail and the fitted stain."""

    thumbnail: np.ndarray | None
    method: str
    # (label, RGB colour of the stain at unit concentration, numbers) per stain.
    stains: list[tuple[str, tuple[int, int, int], str]] = field(default_factory=list)


class NormalizationModel:
    """State of the normalization widget over a napari ``viewer``."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.source: str | None = None
        self.target_kind = "file"
        self.target_layer: str | None = None
        self.target_shapes: str | None = None
        self.target_path: str | None = None
        self.method = "macenko"
        self.weights: str | None = None
        self.steps = 20
        self.sampler = "pndm"
        self.seed = 0
        self.precision = "auto"
        # Fast (distilled): StainFuser distilled into a per-pixel map on the source first.
        self.distilled = False
        self.distill_tiles = 64
        self.device = "cpu"

    # -- what can be chosen ---------------------------------------------------------

    def image_layers(self, exclude_results: bool = True) -> list[str]:
        names = []
        for layer in self.viewer.layers:
            if not is_rgb_image(layer):
                continue
            if exclude_results and (layer.metadata or {}).get("napari_stainfuser") == "live result":
                continue
            names.append(layer.name)
        return names

    def shapes_layers(self) -> list[str]:
        return [la.name for la in self.viewer.layers if type(la).__name__ == "Shapes"]

    @staticmethod
    def methods() -> tuple[str, ...]:
        return METHODS

    @staticmethod
    def samplers() -> tuple[str, ...]:
        return SAMPLERS

    def diffusion(self) -> bool:
        """Whether the diffusion options (weights, steps, sampler, seed, precision) apply."""
        return self.method in DIFFUSION

    def can_save_preset(self) -> bool:
        return self.method in CLASSICAL

    def result_name(self) -> str:
        return f"{self.source} · {self.method}"

    # -- checks and the pieces of a job ---------------------------------------------------

    def _layer(self, name, what: str):
        if not name or name not in self.viewer.layers:
            raise ParameterError(f"{what}: choose a layer (there is no layer {name!r})")
        return self.viewer.layers[name]

    def source_layer(self):
        return self._layer(self.source, "source")

    def view(self) -> View:
        cam = self.viewer.camera
        canvas = self.viewer.canvas.viewbox_size(self.viewer.layers)
        return View(tuple(cam.center[-2:]), float(cam.zoom), tuple(canvas))

    def target(self):
        """The target as a job takes it: an array (from a layer) or a path."""
        kind = self.target_kind
        if kind not in TARGET_KINDS:
            raise ParameterError(
                f"target: kind {kind!r} is unknown; valid: {', '.join(TARGET_KINDS)}"
            )
        if kind == "layer":
            layer = self._layer(self.target_layer, "target")
            if not is_rgb_image(layer):
                raise ParameterError(f"target: layer {layer.name!r} is not an RGB image")
            return visible_pixels(layer, self.view())
        if kind == "region":
            layer = self._layer(self.target_layer, "target")
            shapes = self._layer(self.target_shapes, "target region")
            return region_pixels(layer, rectangle_box(shapes))
        path = self.target_path
        if not path:
            raise ParameterError(
                f"target: choose a {'stain preset' if kind == 'preset' else 'picture'} file"
            )
        if kind == "preset" and Path(path).suffix.lower() != ".json":
            raise ParameterError(f"target {path}: a stain preset is a .json file")
        return str(path)

    def stainer_options(self) -> dict:
        if not self.diffusion():
            return {}
        opts = {"weights": self.weights, "steps": self.steps, "sampler": self.sampler}
        if self.precision != "auto":
            opts["precision"] = self.precision
        return opts

    def job(self, target=None, live: bool = False):
        """The :class:`~napari_stainfuser.job.SlideJob` of the current choices (checked).

        live: for a live layer. Per-pixel methods then stain LIVE_BATCH tiles per
        call: a pan waits for the batch in progress, and a lookup table gains
        nothing from bigger batches.
        """
        from ..job import SlideJob

        slide = layer_slide(self.source_layer())
        batch = LIVE_BATCH if live and self.method in CLASSICAL else None
        return SlideJob.create(
            slide, method=self.method, target=self.target() if target is None else target,
            device=self.device, seed=self.seed, batch_size=batch, **self.stainer_options(),
        )  # fmt: skip

    def prepare(self, job, live: bool = False):
        """The job as it runs: with "fast (distilled)", StainFuser is first distilled
        into a per-pixel map on the source's tissue (seconds to minutes: call it off
        the UI thread) and the job stains through that map."""
        if not (self.distilled and self.diffusion()):
            return job
        from ..distillation import distilled_job

        return distilled_job(
            job, tiles=self.distill_tiles, batch_size=LIVE_BATCH if live else None
        )[0]

    # -- what the widget shows of a target ------------------------------------------------

    def summary(self, target=None) -> TargetSummary:
        """Thumbnail and fitted stain of the target (classical methods fit it here)."""
        target = self.target() if target is None else target
        thumb = None
        if isinstance(target, np.ndarray):
            thumb = _thumbnail(target)
        elif Path(target).suffix.lower() != ".json":
            from ..targets import read_target_image

            thumb = _thumbnail(read_target_image(target))
        if self.method not in CLASSICAL:
            return TargetSummary(thumb, self.method)
        from ..targets import fit_target

        norm = fit_target(self.method, target)
        return TargetSummary(thumb, self.method, stain_rows(norm))

    def save_preset(self, path, target=None) -> Path:
        """Fit the current classical method on the target and save it as a preset."""
        if not self.can_save_preset():
            raise ParameterError(
                f"method: {self.method} has no stain preset (classical methods do)"
            )
        from ..targets import fit_target

        target = self.target() if target is None else target
        return fit_target(self.method, target).save(path)


def _thumbnail(image: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil(max(image.shape[:2]) / THUMB)))
    return np.ascontiguousarray(image[::step, ::step, :3])


def stain_rows(norm) -> list[tuple[str, tuple[int, int, int], str]]:
    """Each fitted stain as (label, colour, numbers) for display."""
    state = {k: v.cpu().numpy() for k, v in norm.target_state.items()}
    rows = []
    io = float(norm.io)
    if "stain_matrix" in state:
        for name, vec, cmax in zip(
            ("hematoxylin", "eosin"),
            state["stain_matrix"],
            state["max_concentrations"],
            strict=True,
        ):
            rows.append(
                (
                    name,
                    _colour(vec, io),
                    f"OD ({vec[0]:.2f}, {vec[1]:.2f}, {vec[2]:.2f}), 99th pct {cmax:.2f}",
                )
            )
    elif "mean" in state:
        for i, ch in enumerate(("L*", "a*", "b*")):
            rows.append(
                (ch, (128, 128, 128), f"mean {state['mean'][i]:.1f}, std {state['std'][i]:.1f}")
            )
    else:  # Ruifrok: fixed vectors, fitted amounts
        from ..stain.matrices import stain_matrix

        m = stain_matrix(norm.stains)
        labels = (
            ("hematoxylin", "eosin", "DAB")[: len(m)]
            if len(m) != 2 or norm.stains != "hdab"
            else ("hematoxylin", "DAB")
        )
        for name, vec, cmax in zip(labels, m, state["max_concentrations"], strict=False):
            rows.append((name, _colour(vec, io), f"fixed OD vector, 99th pct {cmax:.2f}"))
    return rows


def _colour(od_vector, io: float) -> tuple[int, int, int]:
    rgb = io * np.exp(-np.asarray(od_vector, dtype=np.float64))
    return tuple(int(v) for v in np.clip(np.round(rgb), 0, 255))
