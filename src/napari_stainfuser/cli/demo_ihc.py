"""``stainfuser demo --ihc``: the virtual-IHC pipeline end to end on synthetic data.

A SYNTHETIC-DATA DEMONSTRATION OF THE PIPELINE, NOT A USABLE CLINICAL MODEL.

The synthetic-slide generator renders the same procedural tissue twice,
pixel-aligned: in H&E, and in H-DAB for a marker (CD3: T cells among the
lymphocytes), together with the true mask of the marker-positive cells.
The demo

1. cuts training pairs from one synthetic slide (he/, ihc/, mask/);
2. trains the tiny virtual-IHC model on them for a fixed time budget
   (fixed seed), exactly as ``stainfuser train virtual-ihc`` does;
3. stains a synthetic H&E slide it has not seen (another seed) as a whole
   slide, exactly as ``stainfuser stain`` does, with K samples: the IHC,
   the mask and the uncertainty;
4. scores it against that slide's real synthetic IHC and true mask
   (``stainfuser evaluate``'s metrics) and writes a montage PNG.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

MARKER = "CD3"
MPP = 1.0
TRAIN_SEED, TEST_SEED = 11, 23
TRAIN_PAIRS = 96
PAIR_TILE = 128
DEMO_SLIDE = 384
DEMO_TILE = 128
# The coarse-mask defaults are for ~0.5 µm/px; at the demo's 1 µm/px a lymphocyte
# is about 40 px², so the smallest object kept is scaled down with it.
DAB_MASK = {"min_size": 10, "closing_radius": 1}
LABEL = "synthetic-data demonstration of the pipeline, not a usable clinical model"


def demo_ihc(
    out: Path, *, budget_s: float = 150.0, seed: int = 0, samples: int = 3, steps: int = 5,
    overwrite: bool = False, progress: bool = True,
) -> dict:  # fmt: skip
    """Run the demo into ``out`` (see the module docstring); returns metrics and files."""
    from ..atomic import write_json_atomic
    from ..batch import stain_slide
    from ..metrics.ihc import baseline_metrics, format_table, tile_metrics
    from ..slide import open_slide
    from ..slide.synthetic import SyntheticTissue
    from ..training.coarse_mask import CoarseMaskParams
    from ..training.ihc_data import write_synthetic_pairs
    from ..training.ihc_trainer import IHCTrainConfig, read_loss_log, train_virtual_ihc
    from .demo import existing_outputs

    out = Path(out)
    files = {
        "pairs": out / "pairs",
        "run": out / "run",
        "he": out / "he.png",
        "virtual_ihc": out / "virtual-ihc.ome.zarr",
        "montage": out / "montage.png",
        "metrics": out / "metrics.json",
    }
    existing = existing_outputs(files, out, overwrite)
    import shutil

    for p in existing:
        shutil.rmtree(p) if Path(p).is_dir() else Path(p).unlink()
    out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)

    t0 = time.perf_counter()
    write_synthetic_pairs(files["pairs"], TRAIN_PAIRS, tile=PAIR_TILE, marker=MARKER,
                          seed=TRAIN_SEED, mpp=MPP)  # fmt: skip
    say(f"pairs: {TRAIN_PAIRS} synthetic {MARKER} pairs in {time.perf_counter() - t0:.1f} s")

    cfg = IHCTrainConfig(
        pairs=[str(files["pairs"])], markers=[MARKER], out=str(files["run"]), steps=100_000,
        tile=64, batch_size=8, lr=2e-3, seed=seed, mpp=MPP, checkpoint_every=100_000,
        progress=progress,
        device="cpu",
    )  # fmt: skip
    t1 = time.perf_counter()
    checkpoint = train_virtual_ihc(cfg, budget_s=budget_s)
    log = read_loss_log(files["run"])
    trained_s = time.perf_counter() - t1
    say(f"trained {len(log)} steps in {trained_s:.0f} s (budget {budget_s:.0f} s)")

    tissue = SyntheticTissue(TEST_SEED, MPP)
    shape = (DEMO_SLIDE, DEMO_SLIDE)
    origin = _tissue_origin(tissue, DEMO_SLIDE)
    he = np.asarray(tissue.render_he(shape, chunks=DEMO_SLIDE, origin=origin))
    real, truth = tissue.render_ihc(shape, MARKER, chunks=DEMO_SLIDE, origin=origin)
    real, truth = np.asarray(real), np.asarray(truth)
    from ..training.tileio import write_png

    write_png(files["he"], he)
    stain_slide(
        he, files["virtual_ihc"], marker=MARKER, weights=checkpoint, samples=samples,
        steps=steps, seed=seed, mpp=MPP, tile=DEMO_TILE, overlap=32, overwrite=True,
        progress=progress or None,
    )  # fmt: skip
    import zarr

    slide = open_slide(files["virtual_ihc"])
    virtual = slide.levels[0].compute()
    group = zarr.open_group(str(files["virtual_ihc"]), mode="r")
    mask = np.asarray(group["labels/mask/0"]) > 0
    uncertainty = np.asarray(group["extras/uncertainty/0"]) if samples > 1 else None

    metrics = tile_metrics(
        real, virtual, predicted_mask=mask, true_mask=truth,
        mask_params=CoarseMaskParams(**DAB_MASK),
    )  # fmt: skip
    from ..training.coarse_mask import coarse_mask

    virtual_dab = coarse_mask(virtual, **DAB_MASK)
    from ..metrics.ihc import mask_metrics

    dab_vs_truth = mask_metrics(virtual_dab, truth)
    baselines = baseline_metrics(truth, prefix="mask")
    record = {
        "label": LABEL,
        "marker": MARKER,
        "training": {
            "steps": len(log),
            "seconds": round(trained_s, 1),
            "ihc_loss": [log[0]["ihc_loss"], log[-1]["ihc_loss"]],
            "mask_loss": [log[0]["mask_loss"], log[-1]["mask_loss"]],
        },  # fmt: skip
        "virtual_ihc": metrics,
        "virtual_dab_mask_vs_truth": dab_vs_truth,
        "baselines": baselines,
        "samples": samples,
        "steps": steps,
    }
    write_json_atomic(files["metrics"], _jsonable(record))
    panels = [("H&E (unseen)", he), ("virtual IHC", virtual), ("real IHC", real),
              ("predicted mask", _grey(mask)), ("true mask", _grey(truth))]  # fmt: skip
    if uncertainty is not None:
        panels.append(("uncertainty (DAB std)", _heat(uncertainty)))
    from .demo import _save_montage

    _save_montage(panels, files["montage"])
    rows = [{"name": "demo slide", **metrics}]
    table = format_table(rows, {k: v for k, v in baselines.items()})
    return {"metrics": record, "table": table, "files": files}


def _tissue_origin(tissue, size: int) -> tuple[int, int]:
    """The first window on a coarse walk with mostly tissue (the plane has gaps)."""
    for k in range(256):
        origin = (size * (k // 16), size * (k % 16))
        if np.asarray(tissue.tissue_mask((size, size), chunks=size, origin=origin)).mean() > 0.8:
            return origin
    return (0, 0)


def _grey(mask: np.ndarray) -> np.ndarray:
    return np.repeat(np.where(mask, 255, 0).astype(np.uint8)[..., None], 3, 2)


def _heat(values: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    top = float(np.quantile(values, 0.995)) or 1.0
    rgba = colormaps["magma"](np.clip(values / top, 0, 1))
    return (rgba[..., :3] * 255).astype(np.uint8)


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return _jsonable(v.item())
    return v
