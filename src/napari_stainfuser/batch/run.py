"""``run_job``: stain a whole slide from a :class:`~napari_stainfuser.job.SlideJob`
into a pyramidal OME-TIFF or OME-Zarr, resumably, here or on a dask cluster.

The run works in a hidden folder next to the output (see
:mod:`.output`), holding ``run.json`` (the job's fingerprint),
``pyramid.ome.zarr`` (the output pyramid, level 0 filled chunk by chunk,
extra outputs beside it) and, for stainers that need blending or
resampling, ``tiles.zarr`` (stained tiles). Every finished tile or chunk is
committed there as it completes, so a run killed at any point restarts with
``resume=True``, skips what is done and produces the same output as an
uninterrupted run. At the end the lower levels are built, OME-Zarr output
is renamed into place and OME-TIFF output is assembled from the zarr
(atomically, under a temporary name); the work folder is then removed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..atomic import write_json_atomic
from ..errors import ParameterError, SlideWriteError, StainFuserError, opt
from ..progress import TqdmProgress, Tracker, step
from ..slide.writer import ZarrPyramid, move_into_place, zarr_to_ome_tiff
from ..stainer import ExtraOutput
from ..tiling.store import TileCache
from .output import OutputSpec, claim
from .schedulers import InProcess, connect, parse_scheduler, torch_threads
from .units import Units, blend_groups, groups, is_direct, output_chunks, output_tile

FINGERPRINT_KEY = "napari_stainfuser_run"
# The pyramid behind an OME-TIFF is a scratch copy: favour speed.
_SCRATCH = ("zstd", 1)


def diff_fields(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the entries that differ between two nested dicts."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_fields(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def run_fingerprint(opened) -> dict:
    """What a run's output depends on: the job's identity and the output's chunking."""
    return {**opened.identity(), "output_tile": output_tile(opened.plan)}


def open_units(job, fingerprint: dict, pyramid_path: str, cache_path: str | None, opened=None):
    """The :class:`Units` of ``job`` over its stores, refusing an opening that
    does not reproduce ``fingerprint`` (a worker that sees another slide, say)."""
    opened = opened if opened is not None else job.open()
    ident = run_fingerprint(opened)
    if ident != fingerprint:
        what = ", ".join(diff_fields(fingerprint, ident)[:4])
        raise StainFuserError(
            f"the job opened differently here than where it was started (differs in {what}); "
            "every worker must see the same slide, target and weights at the same paths"
        )
    cache = None
    if cache_path is not None:
        plan = opened.plan
        cache = TileCache.open(
            cache_path, plan.grid.n_rows, plan.grid.n_cols, plan.tile, fingerprint,
            extras=tuple(e.name for e in opened.spec.extras),
        )  # fmt: skip
    return Units(opened, ZarrPyramid.open(pyramid_path), cache)


def _inputs(job) -> list[str]:
    paths = [job.slide] if isinstance(job.slide, str) else []
    target = getattr(job.stainer, "target", None)
    if isinstance(target, str):
        paths.append(target)
    return paths


def run_job(
    job,
    output: OutputSpec,
    *,
    resume: bool = False,
    overwrite: bool = False,
    scheduler=None,
    progress=None,
    connect_timeout: float = 5.0,
) -> Path:
    """Run ``job`` into ``output`` (see the module doc); returns the output path.

    Every check on the output (format, options, replacing, a run already
    writing it, a folder that cannot be written) happens before the slide is
    read; so does connecting to the cluster.
    """
    choice = parse_scheduler(scheduler)
    report = TqdmProgress() if progress is True else (progress or None)
    lock = claim(output, _inputs(job), resume=resume, overwrite=overwrite)
    try:
        cluster = connect(choice, connect_timeout)
        try:
            with torch_threads():
                return _run(job, output, cluster, report, resume, overwrite)
        finally:
            if cluster is not None:
                cluster.close()
    finally:
        lock.release()
        if isinstance(report, TqdmProgress):
            report.close()


def _run(job, output: OutputSpec, cluster, report, resume: bool, overwrite: bool) -> Path:
    opened = job.open(report)
    plan = opened.plan
    fingerprint = run_fingerprint(opened)
    work = output.work
    pyramid_path = work / "pyramid.ome.zarr"
    if resume and output.path.exists() and not pyramid_path.exists():
        return _already_done(output, work, fingerprint)

    run_json = work / "run.json"
    if work.exists():
        try:
            stored = json.loads(run_json.read_text()) if run_json.is_file() else {}
        except (OSError, ValueError):
            stored = {}
        old = stored.get("fingerprint")
        if old != fingerprint:
            what = ", ".join(diff_fields(old or {}, fingerprint)[:4]) or "no fingerprint"
            raise ParameterError(
                f"{opt('resume')}: {work.name} was started for another job (differs in {what}); "
                f"pass {opt('overwrite', True)} to start again"
            )
        replace = stored.get("overwrite", False) or overwrite
        stored_codec = tuple(stored.get("pyramid_compression", _SCRATCH))
    else:
        stored_codec = (output.compression, None) if output.format == "ome-zarr" else _SCRATCH
        try:
            work.mkdir()
        except OSError as e:
            raise SlideWriteError(f"{output.path}: cannot write: {e.strerror or e}") from None
        replace = overwrite
        record = {
            "fingerprint": fingerprint,
            "overwrite": replace,
            "pyramid_compression": stored_codec,
        }
        write_json_atomic(run_json, record)
    if not pyramid_path.exists():
        ZarrPyramid.create(
            pyramid_path, plan.shape, mpp=opened.source.level_mpp(opened.level),
            tile=fingerprint["output_tile"], compression=stored_codec[0],
            compression_level=stored_codec[1], name=_stem(output.path),
            extras=opened.spec.extras,
        )  # fmt: skip
    direct = is_direct(plan)
    cache_path = None if direct else str(work / "tiles.zarr")
    units = open_units(job, fingerprint, str(pyramid_path), cache_path, opened)
    if cluster is None:
        executor = InProcess(units, opened.spec.device)
    else:
        from .cluster import WorkerRun

        executor = cluster.start(
            WorkerRun(job, opened.state(), fingerprint, str(pyramid_path), cache_path)
        )
    _execute(executor, units, opened.batch_size, report)

    pyr = ZarrPyramid.open(pyramid_path)
    step(report, "pyramid")
    pyr.finalize()
    pyr.group.attrs[FINGERPRINT_KEY] = fingerprint
    pyr.provenance = opened.provenance()
    step(report, "write")
    if output.format == "ome-zarr":
        if stored_codec[0] != output.compression:
            pyramid_path = _recompress(pyr, work, output.compression)
        move_into_place(pyramid_path, output.path, overwrite=replace)
    else:
        zarr_to_ome_tiff(
            pyramid_path, output.path, compression=output.compression, quality=output.quality,
            overwrite=replace,
        )  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    step(report, "done")
    return output.path


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


def _execute(executor, units: Units, batch: int, report) -> None:
    plan = units.plan
    if units.direct:
        tiles = list(plan.grid.tiles())
        todo = [g for g in groups(tiles, batch) if not units.group_done("direct", g)]
        tracker = Tracker("stain", len(tiles), len(tiles) - sum(len(g) for g in todo), report)
        executor.map("direct", todo, tracker.add)
        return
    tissue_tiles = plan.tissue_tiles()
    todo = [g for g in groups(tissue_tiles, batch) if not units.group_done("stain", g)]
    done = len(tissue_tiles) - sum(len(g) for g in todo)
    tracker = Tracker("stain", len(tissue_tiles), done, report)
    executor.map("stain", todo, tracker.add)
    chunks = blend_groups(plan.shape, units.pyramid.tile)
    todo = [g for g in chunks if not units.group_done("blend", g)]
    n_chunks = len(output_chunks(plan.shape, units.pyramid.tile))
    tracker = Tracker("blend", n_chunks, n_chunks - sum(len(g) for g in todo), report)
    executor.map("blend", todo, tracker.add)


def _recompress(pyr: ZarrPyramid, work: Path, compression) -> Path:
    """A copy of a finished pyramid with another compression (a resume that changed it)."""
    import dask.array as da

    from ..slide._ome_zarr import as_aligned_dask

    dst = work / "recompressed.ome.zarr"
    shutil.rmtree(dst, ignore_errors=True)
    extras = [ExtraOutput(n, k) for n, k in pyr.extras.items()]
    new = ZarrPyramid.create(
        dst, pyr.shape, mpp=pyr.mpp, tile=pyr.tile, compression=compression, name=pyr.name,
        extras=extras,
    )  # fmt: skip
    new.write_level0(pyr.level(0))
    for name in pyr.extras:
        src = as_aligned_dask(pyr.extra_level(name, 0), pyr.tile)
        da.store(src, new.extra_levels[name][0], lock=False)
    new.finalize()
    new.group.attrs[FINGERPRINT_KEY] = pyr.group.attrs[FINGERPRINT_KEY]
    new.provenance = pyr.provenance
    return dst


def _already_done(output: OutputSpec, work: Path, fingerprint: dict) -> Path:
    """``resume`` on a finished output: fine if it is this job's, else refuse."""
    if output.format == "ome-zarr":
        try:
            stored = ZarrPyramid.open(output.path).group.attrs.get(FINGERPRINT_KEY)
        except Exception:
            stored = None
        if stored == fingerprint:
            shutil.rmtree(work, ignore_errors=True)
            return output.path
    raise SlideWriteError(
        f"{output.path}: already exists and there is no interrupted run of this job to resume "
        f"(pass {opt('overwrite', True)} to replace it)"
    )
