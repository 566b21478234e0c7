"""The "Virtual IHC" widget's model: its state, its checks, the one job it builds.

No Qt here (the widget in ``_qt/`` binds to this), so every choice is testable
without a window; the napari viewer is only read.

Live results and whole-slide runs take the same options from :meth:`options`,
so what the live layers show is what ``stain_slide`` writes for the same
choices (on the same device and torch thread count).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ParameterError
from ..methods import IHC_SAMPLERS, VIRTUAL_IHC
from .sources import is_rgb_image, layer_mpp, layer_slide

# QSettings key of the weights folder (beside the normalization widget's StainFuser weights).
WEIGHTS_KEY = "virtual-ihc/weights"
# Inference tile edges offered; None: the checkpoint's own (256 px or its training tile).
TILES = (None, 128, 256, 512, 1024)
UNCERTAINTY_COLORMAP = "magma"


class VirtualIHCModel:
    """State of the virtual-IHC widget over a napari ``viewer``."""

    def __init__(self, viewer):
        from ..diffusion.virtual_ihc import DEFAULT_STEPS

        self.viewer = viewer
        self.source: str | None = None
        self.weights: str | None = None
        self.marker: str | None = None
        self.steps = DEFAULT_STEPS
        self.samples = 1
        self.seed = 0
        self.sampler = IHC_SAMPLERS[0]
        self.device = "cpu"
        self.tile: int | None = None

    # -- what can be chosen ---------------------------------------------------------

    def image_layers(self) -> list[str]:
        """RGB image layers, live results (of either widget) left out."""
        return [
            la.name
            for la in self.viewer.layers
            if is_rgb_image(la) and (la.metadata or {}).get("napari_stainfuser") != "live result"
        ]

    def markers(self) -> tuple[str, ...]:
        """The markers the weights folder's checkpoint declares (reads its config only)."""
        from ..diffusion.ihc_config import find_checkpoint, read_config

        if not self.weights:
            raise ParameterError("weights: choose a virtual-IHC checkpoint or training run folder")
        return read_config(find_checkpoint(self.weights))[0].markers

    @staticmethod
    def samplers() -> tuple[str, ...]:
        return IHC_SAMPLERS

    @staticmethod
    def devices() -> list[tuple[str, str]]:
        from ..devices import available_devices

        return available_devices()

    # -- names of what it shows -------------------------------------------------------

    def result_name(self) -> str:
        return f"{self.source} · virtual IHC ({self.marker})"

    def extra_names(self) -> dict[str, str]:
        """Extra output -> layer name, for the extras a live result shows."""
        names = {"mask": f"{self.source} · {self.marker} mask"}
        if self.samples > 1:
            names["uncertainty"] = f"{self.source} · {self.marker} uncertainty"
        return names

    # -- checks and the job ---------------------------------------------------------------

    def source_layer(self):
        name = self.source
        if not name or name not in self.viewer.layers:
            raise ParameterError(f"source: choose an H&E layer (there is no layer {name!r})")
        return self.viewer.layers[name]

    def options(self) -> dict:
        """What both a live result and a whole-slide run are built from: the source
        layer read here (on the UI thread), the rest checked by the job."""
        if not self.weights:
            raise ParameterError("weights: choose a virtual-IHC checkpoint or training run folder")
        if not self.marker:
            known = self.markers()  # a folder that is no checkpoint says so first
            raise ParameterError(f"marker: choose one of {', '.join(known)}")
        layer = self.source_layer()
        slide = layer_slide(layer)
        opts = {
            "slide": slide, "marker": self.marker, "weights": self.weights,
            "samples": self.samples, "steps": self.steps, "sampler": self.sampler,
            "seed": self.seed, "device": self.device, "tile": self.tile,
        }  # fmt: skip
        # A file and a LayerSlide carry their µm/px; a plain array does not, but a
        # layer in µm says it, and a checkpoint trained at some µm/px needs it.
        if not isinstance(slide, str) and not hasattr(slide, "mpp"):
            opts["mpp"] = layer_mpp(layer)
        return opts

    def job(self, options: dict | None = None):
        """The checked :class:`~napari_stainfuser.job.SlideJob` of ``options`` (default:
        the current choices). Reads no layer, so it may run off the UI thread."""
        from ..job import SlideJob

        opts = dict(self.options() if options is None else options)
        return SlideJob.create(opts.pop("slide"), method=VIRTUAL_IHC, **opts)

    @staticmethod
    def whole_slide(output, options: dict, progress=None) -> Path:
        """``stain_slide`` of ``options`` (those :meth:`job` takes) into ``output``; a run
        interrupted on the same output is continued. Blocks: call it off the UI thread."""
        from ..batch.output import OutputSpec
        from ..batch.stain import stain_slide

        out = OutputSpec.create(output)
        opts = dict(options)
        return stain_slide(
            opts.pop("slide"), out.path, resume=out.work.exists(), progress=progress, **opts
        )

    # -- a finished run's files as layers ---------------------------------------------------

    @staticmethod
    def result_extra_layers(path) -> list[tuple]:
        """LayerData of the cell mask (labels) and uncertainty maps an OME-Zarr output
        holds beside its IHC; none for an OME-TIFF (see :meth:`extra_files`)."""
        import dask.array as da

        from ..slide.writer import ZarrPyramid

        path = Path(path)
        if not path.is_dir():
            return []
        pyr = ZarrPyramid.open(path)
        stem = path.name.split(".")[0]
        layers = []
        for name, kind in pyr.extras.items():
            levels = [da.from_zarr(a) for a in pyr.extra_levels[name]]
            kwargs = {
                "name": f"{stem} {name.replace('_', ' ')}",
                "multiscale": len(levels) > 1,
                "metadata": {"path": str(path), "extra": name},
            }
            if pyr.mpp:
                kwargs.update(scale=(pyr.mpp, pyr.mpp), units=("um", "um"))
            data = levels if len(levels) > 1 else levels[0]
            if kind == "labels":
                layers.append((data, kwargs, "labels"))
            else:
                # Additive: zero spread (and glass) adds nothing over the IHC.
                style = {"colormap": UNCERTAINTY_COLORMAP, "blending": "additive", "visible": False}
                layers.append((data, {**kwargs, **style}, "image"))
        return layers

    @staticmethod
    def extra_files(path) -> list[Path]:
        """The mask and uncertainty files written beside an OME-TIFF output."""
        from ..slide.writer import extra_path

        path = Path(path)
        if not path.name.lower().endswith((".ome.tif", ".ome.tiff")):
            return []
        names = ("mask", "uncertainty", "mask_uncertainty")
        return [p for p in (extra_path(path, n) for n in names) if p.exists()]
