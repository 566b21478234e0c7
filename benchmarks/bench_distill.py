"""Distilled stainer: whole-slide throughput next to Macenko's, the one-off cost of
distilling, its colour error, and a projection for a 100,000² slide.

In one run, on the same slide, each to OME-Zarr in this process:

- anchor: Macenko fitted to the target and the slide (a 256³ lookup table);
- ours: the distilled stainer (the teacher's colours through a 256³ lookup table);
  the one-off distillation (teacher tiles + fit) is timed on its own.

Both stainers are fitted and their tables built before the runs are timed.

The teacher is Vahadane fitted to the target (runs anywhere), or StainFuser with
``--weights`` (``--steps``, ``--tile``, ``--overlap`` as for the CLI). The
projection for a 100,000² slide with the same share of tissue uses the measured
rates; for full StainFuser it needs its tiles/s (``--sf-tiles-per-s``, from
``bench_diffusion_gpu.py`` on a GPU), else it says it was not measured.

    python benchmarks/bench_distill.py
    python benchmarks/bench_distill.py --weights tests/data/stainfuser-reference-v2/checkpoint.safetensors \\
        --steps 2 --tile 64 --overlap 16 --tiles 8
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).parents[1] / "tests" / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--slide", default=str(DATA / "CMU-1-Small-Region.svs"))
    ap.add_argument("--target", default=str(DATA / "he" / "torchstain-target.png"))
    ap.add_argument("--weights", help="StainFuser weights: distil StainFuser instead of Vahadane")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--tile", type=int)
    ap.add_argument("--overlap", type=int)
    ap.add_argument("--tiles", type=int, default=64, help="teacher tiles (default: 64)")
    ap.add_argument("--sf-tiles-per-s", type=float, help="full StainFuser's measured tiles/s")
    a = ap.parse_args()

    import numpy as np

    import napari_stainfuser as sf

    slide = sf.open_slide(a.slide)
    h, w = slide.levels[0].shape[:2]
    mp = h * w / 1e6
    tmp = Path(tempfile.mkdtemp(prefix="bench-distill-"))
    try:
        if a.weights:
            teacher = sf.make_stainer(
                "stainfuser", a.target, weights=a.weights, steps=a.steps, batch_size=2
            )
            name = f"StainFuser ({Path(a.weights).name}, {a.steps} steps)"
        else:
            teacher = sf.make_stainer("vahadane", a.target, slide=slide)
            name = "Vahadane"
        t0 = time.perf_counter()
        student = sf.distill(teacher, slide, tiles=a.tiles, tile=a.tile, overlap=a.overlap)
        t_distill = time.perf_counter() - t0
        rep = student.report

        def run(label, **kw):
            out = tmp / f"{label}.ome.zarr"
            t = time.perf_counter()
            sf.normalize_slide(slide, out, progress=False, **kw)
            return time.perf_counter() - t, out

        # Both fitted and with their lookup tables built: the runs time the slide alone.
        macenko = sf.make_stainer("macenko", a.target, slide=slide).prepare()
        student.prepare()
        t_mac, _ = run("macenko", stainer=macenko)
        t_dis, out_dis = run("distilled", stainer=student)
        tissue = float(np.mean(np.asarray(sf.open_slide(out_dis).levels[-1]).mean(-1) < 220))

        print(f"{Path(a.slide).name}: {w} × {h} px ({mp:.1f} MP), teacher {name}, 2 CPU cores")
        print(f"  distillation (teacher on {rep['tiles']['fit'] + rep['tiles']['held_out']} "
              f"tissue tiles, then the fit): {t_distill:.1f} s")  # fmt: skip
        for part in ("fit", "held_out"):
            r = rep[part]
            print(f"  ΔE2000 to the teacher, {part.replace('_', '-')} tiles: median "
                  f"{r['median']:.2f}, 95th percentile {r['p95']:.2f}, mean {r['mean']:.2f}")  # fmt: skip
        print(f"  anchor: Macenko whole slide  {t_mac:6.2f} s  {mp / t_mac:6.2f} MP/s")
        print(f"  ours: distilled whole slide  {t_dis:6.2f} s  {mp / t_dis:6.2f} MP/s"
              f"   ({t_mac / t_dis:.2f}× Macenko's rate, target ≥ 0.9×)")  # fmt: skip
        big = 1e10 / 1e6
        print(f"  projection, 100,000² slide ({tissue:.0%} tissue as here):")
        print(f"    distilled: {t_distill:.0f} s once + {big / (mp / t_dis) / 60:.0f} min")
        if a.sf_tiles_per_s:
            n = 1e10 * tissue / (448 * 448)
            print(f"    full StainFuser at {a.sf_tiles_per_s:g} tiles/s: "
                  f"{n / a.sf_tiles_per_s / 3600:.1f} h ({n:,.0f} tiles of 512² at 448 px steps)")  # fmt: skip
        else:
            print("    full StainFuser: not measured here (give --sf-tiles-per-s from "
                  "bench_diffusion_gpu.py on a GPU)")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
