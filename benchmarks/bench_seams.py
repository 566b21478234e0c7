"""Seam scores of tiled runs: what blending and the consistent noise field buy.

Seam score = mean |gradient| across tile borders / mean |gradient| across
lines in the middle of the tiles (1.0: borders cannot be detected; see
``napari_stainfuser.metrics.seams``). Measured on tissue of the real CMU
slide and on a synthetic slide:

- every classical stainer (per-pixel: no overlap, nothing to blend);
- the tiny random StainFuser test model (128² tiles, 32 px overlap), with
  and without blending, with one noise field or independent noise per tile
  (the anchor: what the official WSI script does).

Scores below one for blended per-tile noise are a seam too: averaging two
unrelated textures makes a smoother band. ``|log score|`` ranks both kinds.

    python benchmarks/bench_seams.py
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import zarr

from napari_stainfuser.batch import normalize_slide
from napari_stainfuser.metrics.seams import grid_lines, seam_score
from napari_stainfuser.slide import open_slide
from napari_stainfuser.slide.synthetic import synthetic_he
from napari_stainfuser.stainers import make_stainer

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
TARGET = DATA / "he" / "torchstain-target.png"
WEIGHTS = DATA / "stainfuser-reference" / "checkpoint.safetensors"


def score(image, tile, overlap):
    (sy, ry), (sx, rx) = (grid_lines(image.shape[k], tile, overlap) for k in (0, 1))
    return seam_score(image, sy, sx, inside_y=ry, inside_x=rx)


def run(image, work, name, **kw):
    out = normalize_slide(image, work / f"{name}.ome.zarr", mpp=0.5, tissue=False, **kw)
    return np.asarray(zarr.open_group(str(out), mode="r")["0"][:]).transpose(1, 2, 0)


def main():
    work = Path(tempfile.mkdtemp(prefix="bench-seams-"))
    cmu = open_slide(DATA / "CMU-1-Small-Region.svs").levels[0].compute()
    inputs = {
        "CMU (whole slide)": cmu,
        "synthetic 1536²": synthetic_he((1536, 1536), seed=9).compute(),
    }
    crops = {
        "CMU crop 768×1024": cmu[1536:2304, 512:1536],
        "synthetic 768×1024": synthetic_he((768, 1024), seed=9).compute(),
    }
    try:
        print("classical stainers, tile 128, no overlap (per-pixel)")
        print(f"{'method':<10}" + "".join(f"{k:>22}" for k in inputs))
        print(f"{'(input)':<10}" + "".join(f"{score(v, 128, 0):>22.3f}" for v in inputs.values()))
        for m in ("macenko", "reinhard", "ruifrok", "vahadane"):
            row = []
            for name, img in inputs.items():
                st = make_stainer(m, TARGET, slide=img, lut=False, max_pixels=20000)
                row.append(score(run(img, work, f"{m}-{name[:3]}", stainer=st, tile=128), 128, 0))
            print(f"{m:<10}" + "".join(f"{v:>22.3f}" for v in row))

        print("\ntiny StainFuser (random weights), tile 128, overlap 32, 2 steps")
        sf = make_stainer("stainfuser", TARGET, weights=WEIGHTS, steps=2)
        cases = [
            ("cosine", "field"),
            ("none", "field"),
            ("cosine", "per_tile"),
            ("none", "per_tile"),
        ]
        print(
            f"{'blending':<10}{'noise':<10}"
            + "".join(f"{k:>22}" for k in crops)
            + f"{'|log| mean':>12}"
        )
        for window, noise in cases:
            row = [
                score(run(img, work, f"sf-{window}-{noise}-{name[:3]}", stainer=sf, tile=128,
                          overlap=32, window=window, noise=noise), 128, 32)
                for name, img in crops.items()
            ]  # fmt: skip
            dev = sum(abs(math.log(v)) for v in row) / len(row)
            print(
                f"{window:<10}{noise:<10}" + "".join(f"{v:>22.3f}" for v in row) + f"{dev:>12.3f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
