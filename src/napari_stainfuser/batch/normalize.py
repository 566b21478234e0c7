"""``normalize_slide``: stain a whole slide into a pyramidal OME-TIFF or OME-Zarr.

The run works in a hidden directory next to the output,
``.<output name>.stainfuser-run/``, holding ``run.json`` (the fingerprint of
the job), ``pyramid.ome.zarr`` (the output pyramid, level 0 filled chunk by
chunk) and, for stainers that need blending or resampling, ``tiles.zarr``
(stained tiles). Every finished tile or chunk is committed there as it
completes, so a run killed at any point restarts with ``resume=True``, skips
what is done and produces the same output as an uninterrupted run. At the
end the lower levels are built, OME-Zarr output is renamed into place and
OME-TIFF output is assembled from the zarr (atomically, under a temporary
name); the work directory is then removed.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

from ..errors import ParameterError, SlideWriteError, StainEstimationError
from ..slide.writer import (
    DEFAULT_COMPRESSION,
    ZarrPyramid,
    move_into_place,
    output_format,
    zarr_to_ome_tiff,
)
from ..stainers import _check_method, make_stainer, portable, stainer_identity, warm_up
from ..tiling.plan import TilePlan
from ..tiling.store import TileCache
from ..tiling.tissue import detect_tissue
from .progress import BatchProgress, TqdmProgress, Tracker
from .schedulers import InProcess, connect, default_threads, parse_scheduler, torch_threads
from .source import SlideSource, open_source
from .units import OpenRun, RunContext, blend_groups, groups, output_chunks

FORMAT_VERSION = 1
# Output chunk (and OME-TIFF tile) edge when it cannot simply be the stainer's tile.
OUTPUT_TILE = 512
FINGERPRINT_KEY = "napari_stainfuser_run"


def work_dir(output: Path) -> Path:
    """Where an (interrupted) run for ``output`` keeps its state."""
    return output.parent / f".{output.name}.stainfuser-run"


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _diff(old: dict, new: dict, prefix="") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def _check_early(tile, overlap) -> None:
    for name, v in (("tile", tile), ("overlap", overlap)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ParameterError(f"{name}: must be an integer, got {v!r}")
    if tile is not None and tile < 1:
        raise ParameterError(f"tile: must be positive, got {tile}")
    if tile is not None and overlap is not None and overlap >= tile:
        raise ParameterError(f"overlap: {overlap} must be smaller than the tile size {tile}")


def normalize_slide(
    slide,
    output,
    *,
    method: str | None = None,
    target=None,
    weights=None,
    stainer=None,
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

        from napari_stainfuser.batch import normalize_slide

        normalize_slide("slide.svs", "out.ome.tif", method="macenko", target="target.png")
        normalize_slide("slide.svs", "out.ome.zarr", method="stainfuser", target="t.png",
                        weights="ckpt/", tile=512, overlap=64, seed=0, device="cuda",
                        scheduler="local:2", resume=True, progress=True)

    This is what ``stainfuser normalize SLIDE --target T --method M -o OUT`` runs.

    Parameters
    ----------
    slide:
        Slide path, an opened Slide, or a Y×X×3 uint8 array (numpy or dask).
    output:
        ``*.ome.tif`` / ``*.ome.tiff`` or ``*.ome.zarr``.
    method, target, weights:
        Build the stainer with :func:`napari_stainfuser.stainers.make_stainer`
        (classical methods are fitted to the target and to this slide).
        Alternatively pass a ready ``stainer``.
    tile, overlap:
        Tile size and overlap at the stainer's working resolution (default:
        what the stainer prefers). Per-pixel stainers use no overlap.
    level:
        Pyramid level to stain (0 = full resolution).
    seed, noise:
        Diffusion noise: one field over the slide from ``seed`` ("field"), or
        fresh noise per tile ("per_tile", for comparison only).
    resume:
        Continue an interrupted run for the same ``output``; refused when the
        interrupted run was for another input, method or parameters.
    overwrite:
        Replace an existing output (or discard an interrupted run).
    scheduler:
        None (this process), "local", "local:N", "tcp://host:port" or a
        distributed Client; see :mod:`napari_stainfuser.batch.schedulers`.
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
        A callable receiving :class:`BatchProgress`, or True for a tqdm bar.
    connect_timeout:
        Seconds to wait for a ``tcp://`` scheduler before giving up.
    stainer_params:
        Extra options for :func:`make_stainer` (e.g. ``steps``, ``lut``).

    Returns the output path.
    """
    output = Path(output).absolute()
    fmt = output_format(output)
    choice = parse_scheduler(scheduler)
    _check_early(tile, overlap)
    if stainer is None:
        if method is None:
            raise ParameterError("method: give a method name or a stainer")
        _check_method(method)
    if not output.parent.is_dir():
        raise SlideWriteError(f"{output}: directory {output.parent} does not exist")
    work = work_dir(output)
    if work.exists() and not resume:
        if not overwrite:
            raise SlideWriteError(
                f"{output}: an interrupted run left {work.name}; pass resume=True to continue it "
                "or overwrite=True to start again"
            )
        shutil.rmtree(work)
    if output.exists() and not (overwrite or resume):
        raise SlideWriteError(f"{output}: already exists (pass overwrite=True to replace it)")

    report = TqdmProgress() if progress is True else (progress or None)
    cluster = connect(choice, connect_timeout)
    try:
        with torch_threads():
            return _run(
                slide, output, fmt, work, cluster, report, method=method, target=target,
                weights=weights, stainer=stainer, tile=tile, overlap=overlap, level=level,
                seed=seed, resume=resume, overwrite=overwrite, device=device,
                batch_size=batch_size, tissue=tissue, window=window, noise=noise,
                compression=compression, quality=quality, mpp=mpp,
                stainer_params=stainer_params,
            )  # fmt: skip
    finally:
        if cluster is not None:
            cluster.close()
        if isinstance(report, TqdmProgress):
            report.close()


def _run(slide, output, fmt, work, cluster, report, **o) -> Path:
    src = open_source(slide, o["mpp"])
    level = src.check_level(o["level"])
    overview = _with_overview(src)
    stainer = o["stainer"]
    if stainer is None:
        # No slide here: the next step fits the slide statistics, and it also
        # copes with a slide that is all glass.
        stainer = make_stainer(
            o["method"], o["target"], o["weights"], device=o["device"], seed=o["seed"],
            **o["stainer_params"],
        )  # fmt: skip
    stainer = _with_slide_statistics(stainer, overview)
    warm_up(stainer)
    switch = detect_tissue(overview) if o["tissue"] else None
    image = src.levels[level]
    plan = TilePlan(
        image, stainer.spec, tile=o["tile"], overlap=o["overlap"], mpp=src.level_mpp(level),
        tissue=switch, seed=o["seed"], noise=o["noise"], window=o["window"],
    )  # fmt: skip
    batch = int(o["batch_size"] or stainer.spec.batch_size)
    if batch < 1:
        raise ParameterError(f"batch_size: must be positive, got {batch}")
    direct = plan.per_pixel and plan.factor == 1.0 and plan.tile % 16 == 0
    out_tile = plan.tile if direct else OUTPUT_TILE
    compression = o["compression"]
    if compression == "auto":
        compression = DEFAULT_COMPRESSION[fmt]
    zarr_compression = compression if fmt == "ome-zarr" else "zstd"

    fingerprint = {
        "format": FORMAT_VERSION,
        "input": src.identity(),
        "level": level,
        "stainer": stainer_identity(stainer),
        "plan": plan.describe(),
        # Batches change a model's arithmetic; per-pixel output cannot depend on them.
        "batch_size": None if plan.per_pixel else batch,
        "output": {"format": fmt, "tile": out_tile, "compression": compression,
                   "quality": o["quality"] if compression == "jpeg" else None},
    }  # fmt: skip
    fingerprint = json.loads(json.dumps(fingerprint))

    if o["resume"] and output.exists() and not (work / "pyramid.ome.zarr").exists():
        return _already_done(output, fmt, work, fingerprint)

    pyramid_path = work / "pyramid.ome.zarr"
    cache_path = None if direct else work / "tiles.zarr"
    run_json = work / "run.json"
    if work.exists():
        stored = json.loads(run_json.read_text()) if run_json.is_file() else {}
        old = stored.get("fingerprint")
        if old != fingerprint:
            what = ", ".join(_diff(old or {}, fingerprint)[:4]) or "no fingerprint"
            raise ParameterError(
                f"resume: {work.name} was started for another job (differs in {what}); "
                "pass overwrite=True to start again"
            )
        replace = stored.get("overwrite", False) or o["overwrite"]
    else:
        work.mkdir()
        replace = o["overwrite"]
        _write_json(run_json, {"fingerprint": fingerprint, "overwrite": replace})
    if not pyramid_path.exists():
        ZarrPyramid.create(
            pyramid_path, plan.shape, mpp=src.level_mpp(level), tile=out_tile,
            compression=zarr_compression, compression_level=None if fmt == "ome-zarr" else 1,
            name=output.name.split(".")[0],
        )  # fmt: skip

    ctx = RunContext(
        level=src.level_ref(level), level_mpp=src.level_mpp(level), factory=portable(stainer),
        tile=o["tile"], overlap=o["overlap"], seed=o["seed"], noise=o["noise"],
        window=o["window"], tissue=switch, pyramid_path=str(pyramid_path),
        cache_path=None if cache_path is None else str(cache_path),
        cache_fingerprint=fingerprint,
    )  # fmt: skip
    here = OpenRun(
        stainer, plan, ZarrPyramid.open(pyramid_path),
        None if cache_path is None else TileCache.open(
            cache_path, plan.grid.n_rows, plan.grid.n_cols, plan.tile, fingerprint
        ),
    )  # fmt: skip
    executor = (
        InProcess(here, default_threads(o["device"])) if cluster is None else cluster.start(ctx)
    )
    _execute(executor, here, plan, direct, batch, out_tile, report)

    pyr = ZarrPyramid.open(pyramid_path)
    _phase(report, "pyramid")
    pyr.finalize()
    pyr.group.attrs[FINGERPRINT_KEY] = fingerprint
    if fmt == "ome-zarr":
        move_into_place(pyramid_path, output, overwrite=replace)
    else:
        _phase(report, "assemble")
        zarr_to_ome_tiff(
            pyramid_path, output, compression=compression, quality=o["quality"], overwrite=replace
        )
    shutil.rmtree(work, ignore_errors=True)
    _phase(report, "done")
    return output


def _with_overview(src: SlideSource) -> SlideSource:
    """``src`` with its low-resolution overview read into memory once.

    Slide statistics and the tissue mask are both computed on the same
    overview (:func:`~napari_stainfuser.stain.tissue.slide_overview`); reading
    it once instead of twice saves a pass over a level of up to 2048² px.
    """
    from ..stain.tissue import DEFAULT_MAX_SIDE, slide_overview

    image, idx, _ = slide_overview(src, DEFAULT_MAX_SIDE)
    levels = [*src.levels[:idx], image, *src.levels[idx + 1 :]]
    return SlideSource(levels, src.mpp, src.path)


def _with_slide_statistics(stainer, src):
    """A classical normalizer without slide statistics would estimate them per
    tile, so its output would depend on the tiling: fit a copy on this slide."""
    from ..stain.base import StainNormalizer

    if isinstance(stainer, StainNormalizer) and stainer.source_state is None:
        stainer = portable(stainer)()
        name = src.path or "slide"
        try:
            stainer.fit_source(src, name=name)
        except StainEstimationError as e:
            # Glass only (or nearly): nothing to re-stain. As for a blank tile,
            # treat it as already in the target's stain, so it passes through.
            warnings.warn(f"{e}; treating it as already in the target stain", stacklevel=3)
            stainer.source_state = stainer.target_state
            stainer.source_name = f"{name} (no tissue)"
    return stainer


def _phase(report, name: str) -> None:
    if report is not None:
        report(BatchProgress(name, 0, 0, 0.0, 0.0))


def _execute(executor, run: OpenRun, plan: TilePlan, direct: bool, batch: int, out_tile, report):
    if direct:
        tiles = list(plan.grid.tiles())
        done = sum(run.chunk_done(*rc) for rc in tiles)
        todo = [g for g in groups(tiles, batch) if not all(run.chunk_done(*rc) for rc in g)]
        tracker = Tracker("stain", len(tiles), done, report)
        executor.map("direct", todo, lambda n: tracker.add(n))
        return
    tissue_tiles = plan.tissue_tiles()
    stain_groups = groups(tissue_tiles, batch)
    todo = [g for g in stain_groups if not all(run.cache.has(*rc) for rc in g)]
    done = len(tissue_tiles) - sum(len(g) for g in todo)
    tracker = Tracker("stain", len(tissue_tiles), done, report)
    executor.map("stain", todo, lambda n: tracker.add(n))
    chunks = blend_groups(plan.shape, out_tile)
    todo = [g for g in chunks if not all(run.chunk_done(*ij) for ij in g)]
    n_chunks = len(output_chunks(plan.shape, out_tile))
    tracker = Tracker("blend", n_chunks, n_chunks - sum(len(g) for g in todo), report)
    executor.map("blend", todo, lambda n: tracker.add(n))


def _already_done(output: Path, fmt: str, work: Path, fingerprint: dict) -> Path:
    """``resume`` on a finished output: fine if it is this job's, else refuse."""
    if fmt == "ome-zarr":
        try:
            stored = ZarrPyramid.open(output).group.attrs.get(FINGERPRINT_KEY)
        except Exception:
            stored = None
        if stored == fingerprint:
            shutil.rmtree(work, ignore_errors=True)
            return output
    raise SlideWriteError(
        f"{output}: already exists and there is no interrupted run of this job to resume "
        "(pass overwrite=True to replace it)"
    )
