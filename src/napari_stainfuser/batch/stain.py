"""``stain_slide``: virtual IHC of a whole H&E slide, with its cell mask and uncertainty.

The same runner as :func:`~napari_stainfuser.batch.normalize_slide` (one
:class:`~napari_stainfuser.job.SlideJob`, the tiler, resume, dask), with the
virtual-IHC stainer. ``stainfuser stain`` is this function.
"""

from __future__ import annotations

from pathlib import Path

from ..job import SlideJob
from ..methods import VIRTUAL_IHC
from .output import OutputSpec
from .run import run_job


def stain_slide(
    slide,
    output,
    *,
    marker: str | None = None,
    weights=None,
    samples: int = 1,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int = 0,
    tile: int | None = None,
    overlap: int | None = None,
    level: int = 0,
    device: str = "cpu",
    batch_size: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    scheduler=None,
    tissue: bool = True,
    window: str = "cosine",
    compression: str | None = "auto",
    quality: int = 90,
    mpp: float | None = None,
    progress=None,
    connect_timeout: float = 5.0,
) -> Path:
    """Turn an H&E slide into a virtual IHC of ``marker`` and write a pyramid.

    Python::

        from napari_stainfuser import stain_slide

        stain_slide("he.svs", "cd3.ome.zarr", marker="CD3", weights="run/",
                    samples=4, steps=10, sampler="ddim", seed=0)

    Outputs:

    * ``*.ome.zarr``: the virtual IHC pyramid; the cell mask as an NGFF label
      image ``labels/mask``; with ``samples > 1`` the per-pixel spread of the
      samples (DAB density, and the mask probability) as float images
      ``extras/uncertainty`` and ``extras/mask_uncertainty``.
    * ``*.ome.tif``: the IHC in that file, the mask in ``OUT.mask.ome.tif``
      and the uncertainties in ``OUT.uncertainty.ome.tif`` and
      ``OUT.mask_uncertainty.ome.tif``.

    Parameters
    ----------
    marker:
        One of the markers the checkpoint was trained on (its only one by default).
    weights:
        A training run folder, a checkpoint folder, or ``$STAINFUSER_IHC_WEIGHTS``.
    samples:
        K samples with different noise per pixel; the IHC and the mask are
        their mean, the uncertainty their spread.
    steps, sampler:
        Few-step sampling: "ddim" or "dpm++", 10 steps by default.
    seed:
        The slide's noise field: the same seed gives the same slide, on any
        tiling, scheduler or after a resume.

    The other parameters are :func:`~napari_stainfuser.batch.normalize_slide`'s.
    The mask probability is blended across overlapping tiles before it is
    thresholded at one half.
    """
    options = {"marker": marker, "samples": samples, "steps": steps, "sampler": sampler}
    job = SlideJob.create(
        slide, method=VIRTUAL_IHC, weights=weights, device=device, seed=seed, level=level,
        tile=tile, overlap=overlap, window=window, tissue=tissue, batch_size=batch_size,
        mpp=mpp, **options,
    )  # fmt: skip
    out = OutputSpec.create(output, compression, quality)
    return run_job(
        job, out, resume=resume, overwrite=overwrite, scheduler=scheduler, progress=progress,
        connect_timeout=connect_timeout,
    )  # fmt: skip
