"""The "Stain QA" widget's model: compare a source and its stained result in the view.

No Qt here. :meth:`QAModel.measure` reads the visible region of both layers
(the result's ready tiles only) and computes what the widget shows; it is
meant to run off the UI thread.

- **Structure kept**: SSIM between the source's and the result's hematoxylin,
  each unmixed with its own stain vectors (the source's and the target's
  fitted ones; Ruifrok's H&E for methods without vectors), over the view.
  1 is identical structure; higher is better.
- **Colour match**: ΔE2000 between the mean CIELAB colour of the result's
  tissue and of the target's tissue (and the source's, for comparison).
  Below about 2 a person cannot tell them apart; lower is better.
- **Seams**: for stainers whose tiles overlap, the seam score of the visible
  result (see :mod:`napari_stainfuser.metrics.seams`); 1 means the tile
  borders cannot be found, and farther from 1 in either direction is worse.
- **Stain plot**: the optical density of the visible pixels of source and
  result, projected on the plane of the target's two stain vectors, with the
  stain vectors of source, target and result drawn in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ParameterError
from .sources import layer_levels
from .viewport import View, level_geometries

PLOT_PIXELS = 4000


@dataclass
class QAReport:
    level: int
    box: tuple[int, int, int, int]
    filled: float  # share of the visible tissue that is stained so far
    ssim_hematoxylin: float | None = None
    delta_e_result: float | None = None
    delta_e_source: float | None = None
    seam_score: float | None = None
    # Stain plot: 2-D coordinates on the stain plane, and vectors (name -> 3 unit OD).
    points: dict = field(default_factory=dict)
    vectors: dict = field(default_factory=dict)
    basis: np.ndarray | None = None

    def lines(self) -> list[str]:
        """The measures, each with what it means and which way is better."""

        def f(v, fmt):
            return "n/a" if v is None else fmt.format(v)

        return [
            f"stained so far: {self.filled:.0%} of the visible tissue",
            f"structure kept (SSIM of hematoxylin, source vs result; 1 = same, higher is better): "
            f"{f(self.ssim_hematoxylin, '{:.3f}')}",
            f"colour match (ΔE2000 of mean tissue colour to the target; < 2 looks the same, "
            f"lower is better): result {f(self.delta_e_result, '{:.2f}')}, source "
            f"{f(self.delta_e_source, '{:.2f}')}",
            f"seams (score at tile borders; 1 = invisible): {f(self.seam_score, '{:.3f}')}",
        ]


class QAModel:
    """Compare ``source`` and ``result`` layers of ``viewer``."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.source: str | None = None
        self.result: str | None = None

    def results(self) -> list[str]:
        return [
            la.name
            for la in self.viewer.layers
            if (la.metadata or {}).get("napari_stainfuser") == "live result"
        ]

    def _layers(self):
        layers = self.viewer.layers
        if not self.result or self.result not in layers:
            raise ParameterError("result: choose a stained result layer")
        result = layers[self.result]
        name = self.source or (result.metadata or {}).get("source")
        if not name or name not in layers:
            raise ParameterError("source: the result's source layer is not in the viewer")
        return layers[name], result

    # -- comparing --------------------------------------------------------------------------

    def side_by_side(self, on: bool) -> None:
        """Source and result side by side with linked cameras (napari's grid), or stacked."""
        source, result = self._layers()
        canvas = self.viewer.canvas
        if on:
            for la in self.viewer.layers:
                la.visible = la is source or la is result
            result.opacity = 1.0
        # The result leaves glass transparent: on its own, over white, it looks like glass.
        canvas.background_color_override = "white" if on else None
        canvas.grid.enabled = bool(on)

    def blend(self, alpha: float) -> None:
        """Result over source at opacity ``alpha`` (0: source, 1: result)."""
        _, result = self._layers()
        result.visible = True
        result.opacity = float(np.clip(alpha, 0.0, 1.0))

    def flicker(self) -> bool:
        """Toggle the result's visibility; returns whether it is shown now."""
        _, result = self._layers()
        result.visible = not result.visible
        return result.visible

    # -- measuring the view ---------------------------------------------------------------------

    def view(self) -> View:
        cam = self.viewer.camera
        canvas = self.viewer.canvas.viewbox_size(self.viewer.layers)
        return View(tuple(cam.center[-2:]), float(cam.zoom), tuple(canvas))

    def pixels(self, live):
        """(level, box, source RGB, result RGBA) of the visible region now."""
        source, result = self._layers()
        k = int(result.data_level) if result.multiscale else 0
        levels = layer_levels(source)
        geoms = level_geometries(
            [lv.shape for lv in levels], source.scale[-2:], source.translate[-2:]
        )
        box = geoms[k].box(self.view())
        if box is None:
            raise ParameterError("view: the source is not on screen")
        y0, y1, x0, x1 = box
        src = levels[k][y0:y1, x0:x1]
        src = np.asarray(src.compute() if hasattr(src, "compute") else src)[..., :3]
        res = live.levels[k].region(y0, y1, x0, x1)
        return k, box, src, res

    def measure(self, live, target=None) -> QAReport:
        """The measures of the visible region (see the module docstring)."""
        from ..metrics import ssim
        from ..stain.deconvolution import rgb_to_stains
        from ..stain.lab import delta_e_ciede2000, rgb_to_lab

        k, box, src, res = self.pixels(live)
        plan = live.pyramid.levels[k].plan
        tissue = res[..., 3] == 255
        report = QAReport(k, box, live.levels[k].filled_fraction(*box))
        if not tissue.any():
            return report
        out = np.where(tissue[..., None], res[..., :3], src)
        if min(src.shape[:2]) > 16 and report.filled >= 1.0:
            # Each image unmixed with its own stain vectors (the source's and the target's,
            # when the method has them), so the measure is the structure, not the colour.
            src_m, res_m = _stain_matrices(live.pyramid.stainer)
            h_src = rgb_to_stains(src, src_m)[..., 0].numpy()
            h_res = rgb_to_stains(out, res_m)[..., 0].numpy()
            rng = float(max(h_src.max(), h_res.max()) - min(h_src.min(), h_res.min())) or 1.0
            report.ssim_hematoxylin = ssim(h_src, h_res, data_range=rng)
        if target is not None:
            t_lab = _mean_tissue_lab(target)
            if t_lab is not None:
                for attr, img in (
                    ("delta_e_result", res[..., :3][tissue]),
                    ("delta_e_source", src[tissue]),
                ):
                    lab = rgb_to_lab(np.asarray(img).reshape(-1, 3)).double().mean(0, keepdim=True)
                    setattr(report, attr, float(delta_e_ciede2000(lab, t_lab)[0]))
        if plan.overlap and report.filled >= 1.0:
            from ..metrics.seams import grid_lines, seam_score

            g = plan.grid
            sy, iy = grid_lines(plan.shape[0], g.tile, g.overlap, plan.factor)
            sx, ix = grid_lines(plan.shape[1], g.tile, g.overlap, plan.factor)
            y0, y1, x0, x1 = box
            inside = [b - y0 for b in sy if y0 < b < y1], [b - x0 for b in sx if x0 < b < x1]
            refs = [b - y0 for b in iy if y0 < b < y1], [b - x0 for b in ix if x0 < b < x1]
            if (inside[0] or inside[1]) and (refs[0] or refs[1]):
                report.seam_score = seam_score(
                    out, inside[0], inside[1], tissue, refs[0] or None, refs[1] or None
                )
        self._stain_plot(report, live, src[tissue], res[..., :3][tissue], out)
        return report

    def _stain_plot(self, report: QAReport, live, src_px, res_px, result_image) -> None:
        from ..stain.density import rgb_to_od
        from ..stain.matrices import RUIFROK_HE

        stainer = live.pyramid.stainer
        vectors = {}
        for name, state in (("source", getattr(stainer, "source_state", None)),
                            ("target", getattr(stainer, "target_state", None))):  # fmt: skip
            if state is not None and "stain_matrix" in state:
                vectors[name] = state["stain_matrix"].cpu().numpy()
        try:
            from ..stain import get_normalizer

            fitted = get_normalizer("macenko", max_pixels=50_000).fit(result_image)
            vectors["result"] = fitted.target_state["stain_matrix"].cpu().numpy()
        except Exception:  # too little tissue on screen to estimate
            pass
        plane = np.asarray(vectors.get("target", RUIFROK_HE), np.float64)
        basis, _ = np.linalg.qr(plane.T)  # 3×2 orthonormal, spanning the two stains
        basis *= np.sign(plane.sum(0) @ basis)  # axes pointing the way optical density grows
        report.basis = basis
        rng = np.random.default_rng(0)
        for name, px in (("source", src_px), ("result", res_px)):
            if len(px) == 0:
                continue
            pick = px[rng.choice(len(px), min(PLOT_PIXELS, len(px)), replace=False)]
            od = rgb_to_od(np.asarray(pick).reshape(-1, 3)).double().numpy()
            report.points[name] = od @ basis
        # Unit vectors, drawn as long as the bulk of the pixels reach.
        reach = max(
            (float(np.percentile(np.linalg.norm(p, axis=1), 95)) for p in report.points.values()),
            default=1.0,
        )
        report.vectors = {name: reach * (np.asarray(v) @ basis) for name, v in vectors.items()}

    # -- exporting -----------------------------------------------------------------------------

    def export(self, live, path) -> Path:
        """A before/after PNG of the current view at the displayed resolution."""
        from PIL import Image, ImageDraw

        from ..atomic import write_png_atomic

        _, _, src, res = self.pixels(live)
        tissue = res[..., 3:] == 255
        after = np.where(tissue, res[..., :3], src)
        gap = np.full((src.shape[0], 8, 3), 255, np.uint8)
        panel = np.concatenate([src, gap, after], axis=1)
        canvas = Image.new("RGB", (panel.shape[1], panel.shape[0] + 28), "white")
        canvas.paste(Image.fromarray(panel), (0, 28))
        draw = ImageDraw.Draw(canvas)
        draw.text((6, 6), "before", fill=(0, 0, 0))
        draw.text((src.shape[1] + 14, 6), "after", fill=(0, 0, 0))
        path = Path(path)
        write_png_atomic(path, np.asarray(canvas))
        return path


def _stain_matrices(stainer):
    """(source, result) stain matrices: the fitted ones, else Ruifrok's H&E."""
    out = []
    for attr in ("source_state", "target_state"):
        state = getattr(stainer, attr, None)
        m = None if state is None else state.get("stain_matrix")
        out.append("he" if m is None else m.cpu().numpy())
    return tuple(out)


def _mean_tissue_lab(target):
    """Mean CIELAB (1×3 float64) of a target picture's tissue, or None (a preset)."""
    import torch

    from ..stain.lab import rgb_to_lab
    from ..stain.sampling import tissue_pixels

    if isinstance(target, (str, Path)):
        if Path(target).suffix.lower() == ".json":
            return None
        from ..targets import read_target_image

        target = read_target_image(target)
    px = tissue_pixels(np.asarray(target), max_pixels=200_000)
    if len(px) == 0:
        return None
    return rgb_to_lab(torch.from_numpy(px)).double().mean(0, keepdim=True)
