"""`stainfuser demo`: the main job end to end on an embedded synthetic slide.

No weights and no data files are needed. The same procedural tissue is
rendered twice, pixel-aligned: once in "lab A" stain (the source) and once in
"lab B" stain (the ground truth). A different region of lab B's slide is the
target stain. The source slide is written as a pyramidal OME-TIFF, normalized
toward the target as a whole slide (the same code path as `stainfuser
normalize`), and compared with the ground truth.
"""

import time
from pathlib import Path

import numpy as np

from ..atomic import write_png_atomic
from ..methods import CLASSICAL

# Lab A: Macenko's reference H&E vectors, hematoxylin strong, eosin faint.
# Lab B (ground truth and target): Ruifrok's vectors at nominal strength.
SOURCE_SCALE = (1.35, 0.6)
TARGET_SCALE = (1.0, 1.0)
MPP = 0.5
TARGET_SIZE = 2048
PANEL = 768


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="normalize an embedded synthetic slide and report accuracy (no weights needed)",
        description=__doc__,
    )
    p.add_argument(
        "--out", default="stainfuser-demo", help="output directory (default: %(default)s)"
    )
    p.add_argument("--size", type=int, default=4096, help="slide edge in px (default: %(default)s)")
    p.add_argument(
        "--method",
        default="macenko",
        choices=CLASSICAL,
        help="normalization method (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="tissue seed (default: %(default)s)")
    p.add_argument(
        "--ihc",
        action="store_true",
        help="instead: train a tiny virtual-IHC model on synthetic pairs within a fixed budget "
        "and stain an unseen synthetic slide (a synthetic-data demonstration of the pipeline, "
        "not a usable clinical model)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=150.0,
        help="--ihc: training time budget in seconds (default: %(default)s)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing demo outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import ParameterError

    if args.ihc:
        return _run_ihc(args)
    if args.size < 1024:
        raise ParameterError(f"--size must be at least 1024 px, got {args.size}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = demo(
        out,
        size=args.size,
        method=args.method,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print()
    print(result["table"])
    print()
    for name, path in result["files"].items():
        print(f"{name:<12} {path}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def _run_ihc(args) -> int:
    from ..errors import ParameterError
    from .demo_ihc import LABEL, demo_ihc

    if not 10 <= args.budget <= 3600:
        raise ParameterError(f"--budget must be in 10..3600 seconds, got {args.budget}")
    out = Path(args.out if args.out != "stainfuser-demo" else "stainfuser-demo-ihc")
    t0 = time.perf_counter()
    print(f"virtual IHC: a {LABEL}")
    result = demo_ihc(
        out, budget_s=args.budget, seed=args.seed, overwrite=args.overwrite,
        progress=not args.no_progress,
    )  # fmt: skip
    print()
    print(result["table"])
    dab = result["metrics"]["virtual_dab_mask_vs_truth"]
    print(f"virtual IHC's DAB mask vs the true mask: Dice {dab['dice']:.3f}")
    print()
    for name, path in result["files"].items():
        print(f"{name:<12} {path}")
    print(f"done in {time.perf_counter() - t0:.1f} s ({LABEL})")
    return 0


def demo(out: Path, size=4096, method="macenko", seed=0, overwrite=False, progress=True) -> dict:
    """Run the demo into `out`; returns the metrics, the table and the written files.

    Every phase reports through ``progress`` (True: bars and timed lines on
    stderr; a callable: :class:`~napari_stainfuser.progress.Progress` reports):
    "render" (the synthetic source slide), then the run's "open", "fit",
    "stain", "pyramid" and "write", then "metrics".
    """
    from dataclasses import replace

    from ..atomic import write_json_atomic
    from ..batch import normalize_slide
    from ..metrics import image_metrics
    from ..progress import TqdmProgress, step
    from ..slide import open_slide, write_pyramid
    from ..slide.synthetic import MACENKO_REFERENCE_HE, SyntheticTissue
    from ..stain import RUIFROK_HE

    report = TqdmProgress() if progress is True else (progress or None)

    tissue = SyntheticTissue(seed=seed, mpp=MPP)
    shape = (size, size)
    source = tissue.render_he(shape, stain_matrix=MACENKO_REFERENCE_HE, scale=SOURCE_SCALE)
    truth = tissue.render_he(shape, stain_matrix=RUIFROK_HE, scale=TARGET_SCALE)
    # The target is lab B's stain on tissue the source does not contain.
    target = tissue.render_he(
        (TARGET_SIZE, TARGET_SIZE),
        stain_matrix=RUIFROK_HE,
        scale=TARGET_SCALE,
        origin=(-TARGET_SIZE - 256, -TARGET_SIZE - 256),
    ).compute()

    files = {
        "source": out / "source.ome.tif",
        "preview": out / "source-preview.png",
        "target": out / "target.png",
        "normalized": out / f"normalized-{method}.ome.tif",
        "montage": out / "montage.png",
        "metrics": out / "metrics.json",
    }
    existing_outputs(files, out, overwrite)
    write_png_atomic(files["target"], target)

    def rendering(p):  # the source is rendered as it is written
        if report is not None and p.phase != "done":
            report(replace(p, phase="render") if p.phase == "write" else p)

    # Lossless, so the metrics measure the method and not JPEG.
    write_pyramid(
        source, files["source"], mpp=MPP, compression="zstd", overwrite=True, progress=rendering
    )
    write_png_atomic(files["preview"], open_slide(files["source"]).levels[-1].compute())
    normalize_slide(
        files["source"],
        files["normalized"],
        method=method,
        target=files["target"],
        overwrite=True,
        compression="zstd",
        progress=report,
    )
    step(report, "metrics")
    normalized = open_slide(files["normalized"]).levels[0].compute()
    source_px = open_slide(files["source"]).levels[0].compute()
    truth_px = truth.compute()

    metrics = {
        "before (source vs truth)": image_metrics(source_px, truth_px),
        f"after ({method} vs truth)": image_metrics(normalized, truth_px),
    }
    write_json_atomic(files["metrics"], metrics)
    y, x = _busiest_window(truth_px, PANEL)
    panels = [
        ("source (lab A)", source_px[y : y + PANEL, x : x + PANEL]),
        ("target stain (lab B)", target[:PANEL, :PANEL]),
        (f"{method} result", normalized[y : y + PANEL, x : x + PANEL]),
        ("ground truth (lab B)", truth_px[y : y + PANEL, x : x + PANEL]),
    ]
    _save_montage(panels, files["montage"])
    if isinstance(report, TqdmProgress):
        report.close()
    return {"metrics": metrics, "table": metrics_table(metrics), "files": files}


def metrics_table(metrics: dict) -> str:
    rows = ["| comparison | PSNR (dB) ↑ | SSIM ↑ | mean ΔE2000 ↓ |", "|---|---:|---:|---:|"]
    for name, m in metrics.items():
        rows.append(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['delta_e2000']:.2f} |")
    return "\n".join(rows)


def _busiest_window(img: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the window with the most tissue, on a coarse grid."""
    dark = (img.min(axis=-1) < 200).astype(np.float32)
    best, corner = -1.0, (0, 0)
    step = size // 2
    for y in range(0, max(1, img.shape[0] - size + 1), step):
        for x in range(0, max(1, img.shape[1] - size + 1), step):
            frac = float(dark[y : y + size, x : x + size].mean())
            if frac > best:
                best, corner = frac, (y, x)
    return corner


def _save_montage(panels, path: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    label_h, gap = 36, 8
    font = ImageFont.load_default(size=24)
    w = sum(p.shape[1] for _, p in panels) + gap * (len(panels) - 1)
    h = max(p.shape[0] for _, p in panels) + label_h
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for label, img in panels:
        canvas.paste(Image.fromarray(np.ascontiguousarray(img)), (x, label_h))
        draw.text((x + 6, 4), label, fill=(0, 0, 0), font=font)
        x += img.shape[1] + gap
    write_png_atomic(path, np.asarray(canvas))


def existing_outputs(files: dict, out, overwrite: bool) -> list[str]:
    """The demo outputs already in ``out``; refused unless ``overwrite``."""
    from ..errors import SlideWriteError

    existing = [str(p) for p in files.values() if p.exists()]
    if existing and not overwrite:
        raise SlideWriteError(
            f"{existing[0]}: exists ({len(existing)} demo output(s) in {out}); "
            "pass --overwrite to replace them"
        )
    return existing
