"""``normalize_slide``: stain a whole slide into a pyramidal OME-TIFF or OME-Zarr.

It describes the job (:class:`~napari_stainfuser.job.SlideJob`, which checks
every option), checks the output (:class:`.output.OutputSpec`), and runs it
(:func:`.run.run_job`). ``stainfuser normalize`` is this function.
"""

from __future__ import annotations

from pathlib import Path

from ..job import SlideJob
from .output import OutputSpec
from .run import run_job


def normalize_slide(
    slide,
    output,
    *,
    method: str | None = None,
    target=None,
    weights=None,
    stainer=None,
    sampler: str | None = None,
    steps: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    level: int = 0,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    scheduler=None,
    device: str = "cpu",
    batch_size: int | None = None,
    tissue: bool = True,
    window: str = "cosine",
    noise: str = "field",
    compression: str | None = "auto",
    quality: int = 90,
    mpp: float | None = None,
    progress=None,
    connect_timeout: float = 5.0,
    **stainer_params,
) -> Path:
    """Stain a whole slide (or one of its levels) and write a pyramid.

    Python::

        from napari_stainfuser import normalize_slide

        normalize_slide("slide.svs", "out.ome.tif", method="macenko", target="target.png")
        normalize_slide("slide.svs", "out.ome.zarr", method="stainfuser", target="t.png",
                        weights="ckpt/", sampler="dpm++", steps=10, tile=512, overlap=64,
                        seed=0, device="cuda", scheduler="local:2", resume=True, progress=True)

    This is what ``stainfuser normalize SLIDE --target T --method M -o OUT`` runs.

    Parameters
    ----------
    slide:
        Slide path, an opened Slide, or a Y×X×3 uint8 array (numpy or dask).
    output:
        ``*.ome.tif`` / ``*.ome.tiff`` or ``*.ome.zarr``. A stainer's extra
        outputs go into the OME-Zarr (a mask as an NGFF label image under
        ``labels/``, a float map under ``extras/``), or beside an OME-TIFF as
        ``OUT.<name>.ome.tif``.
    method, target, weights:
        The stainer (see :func:`napari_stainfuser.make_stainer`): classical
        methods are fitted to the target and to this slide. Alternatively
        pass a ready ``stainer``.
    sampler, steps:
        Diffusion sampler ("pndm", "ddim", "dpm++", "euler") and its number
        of steps; diffusion methods only.
    tile, overlap:
        Tile size (16-8192 px) and overlap at the stainer's working
        resolution (default: what the stainer prefers). Per-pixel stainers
        use no overlap.
    level:
        Pyramid level to stain (0 = full resolution).
    seed, noise:
        Diffusion noise: one field over the slide from ``seed`` ("field"), or
        fresh noise per tile ("per_tile", for comparison only).
    resume:
        Continue an interrupted run for the same ``output``; refused when the
        interrupted run was for another input, method or parameters (the
        output's compression and quality may change).
    overwrite:
        Replace an existing output (or discard an interrupted run). Never
        replaces the input or a folder that is not a zarr store.
    scheduler:
        The dask scheduler: None (this process), "local", "local:N",
        "tcp://host:port" or a distributed Client; see
        :mod:`napari_stainfuser.batch.schedulers`. The output does not depend
        on it.
    device, batch_size:
        Torch device and tiles per stainer call.
    tissue:
        Detect tissue once on a low-resolution overview and pass glass
        through unchanged (and never send it to the stainer).
    window:
        Blending window: "cosine", "linear" or "none".
    compression, quality:
        Output compression ("auto": JPEG q=90 for OME-TIFF, zstd for OME-Zarr).
    mpp:
        µm/px of level 0 when the file does not say (or says wrongly).
    progress:
        A callable receiving :class:`napari_stainfuser.progress.Progress`, or
        True for a tqdm bar.
    connect_timeout:
        Seconds to wait for a ``tcp://`` scheduler before giving up.
    stainer_params:
        Extra options for the stainer (e.g. ``lut``, ``max_pixels``,
        ``precision``).

    Returns the output path.
    """
    job = SlideJob.create(
        slide, method=method, target=target, weights=weights, stainer=stainer, device=device,
        seed=seed, sampler=sampler, steps=steps, level=level, tile=tile, overlap=overlap,
        window=window, noise=noise, tissue=tissue, batch_size=batch_size, mpp=mpp,
        **stainer_params,
    )  # fmt: skip
    out = OutputSpec.create(output, compression, quality)
    return run_job(
        job, out, resume=resume, overwrite=overwrite, scheduler=scheduler, progress=progress,
        connect_timeout=connect_timeout,
    )  # fmt: skip
