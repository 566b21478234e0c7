"""Memory and throughput of a whole-slide batch run, next to a pure read-and-write pass.

A lazy synthetic H&E slide (default 40,000 × 40,000 px, 1.6 gigapixels) is
written to OME-Zarr twice, each time in a fresh process so that peak RSS is
that pass's own:

- anchor: read the slide and write it (``write_pyramid``: level 0 streamed,
  lower levels built), nothing else;
- ours:   ``normalize_slide`` with Macenko: tissue detection, slide-level
  statistics, tiles through the stainer, committed tile by tile, pyramid.

Claims checked: ours peaks below 2 GB RSS, and its throughput is at least
half of the anchor's. Both passes render the same procedural slide, so the
rendering cost (a stand-in for decoding a scanner's JPEG tiles) is in both.

    python benchmarks/bench_tiler_memory.py                 # 40,000² (long)
    python benchmarks/bench_tiler_memory.py --size 8192     # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MPP = 0.5


def synthetic_slide(size: int, seed: int = 0):
    """A slide-like object: the same procedural tissue rendered at each level's own µm/px."""
    from napari_stainfuser.slide.synthetic import SyntheticTissue

    levels, k = [], 0
    while True:
        mpp = MPP * 2**k
        side = size // 2**k
        if mpp > 5.0 or side < 256:
            break
        levels.append(SyntheticTissue(seed, mpp).render_he((side, side), chunks=512))
        k += 1

    class Slide:
        pass

    s = Slide()
    s.levels, s.mpp, s.path = levels, MPP, None
    return s


def child(kind: str, size: int, out: str, method: str) -> None:
    slide = synthetic_slide(size)
    t0 = time.perf_counter()
    if kind == "anchor":
        from napari_stainfuser.slide import write_pyramid

        write_pyramid(slide.levels[0], out, mpp=MPP, tile=512, compression="zstd")
    else:
        from napari_stainfuser.batch import normalize_slide
        from napari_stainfuser.slide.synthetic import SyntheticTissue

        # Another lab's stain: the same tissue model rendered 40 % stronger elsewhere.
        target = SyntheticTissue(7, MPP).render_he((1024, 1024), scale=1.4).compute()
        normalize_slide(slide, out, method=method, target=target, tile=512, compression="zstd")
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb}))


def run_child(kind, size, out, method):
    cmd = [sys.executable, __file__, "--child", kind, "--size", str(size), "--method", method,
           "--out", str(out)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{kind} pass failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=40000, help="slide edge in px (default 40000)")
    ap.add_argument("--method", default="macenko")
    ap.add_argument("--workdir", help="where to write the outputs (default: a temp dir)")
    ap.add_argument("--child", choices=["anchor", "ours"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.size, a.out, a.method)
        return
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-tiler-"))
    work.mkdir(parents=True, exist_ok=True)
    mp = a.size * a.size / 1e6
    results = {}
    try:
        for kind in ("anchor", "ours"):
            out = work / f"{kind}.ome.zarr"
            shutil.rmtree(out, ignore_errors=True)
            results[kind] = run_child(kind, a.size, out, a.method)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    anchor, ours = results["anchor"], results["ours"]
    ra, ro = mp / anchor["seconds"], mp / ours["seconds"]
    print(f"synthetic slide {a.size:,} × {a.size:,} px ({mp:,.0f} MP), {os.cpu_count()} CPU cores")
    print(f"{'pass':<34}{'time s':>10}{'MP/s':>9}{'peak RSS MB':>13}")
    print(
        f"{'anchor: read + write OME-Zarr':<34}{anchor['seconds']:>10.1f}{ra:>9.2f}{anchor['peak_rss_mb']:>13.0f}"
    )
    print(
        f"{'ours: ' + a.method + ' -> OME-Zarr':<34}{ours['seconds']:>10.1f}{ro:>9.2f}{ours['peak_rss_mb']:>13.0f}"
    )
    print(f"throughput ratio ours/anchor: {ro / ra:.2f} (target >= 0.5)")
    print(f"peak RSS of ours: {ours['peak_rss_mb']:.0f} MB (target < 2000)")


if __name__ == "__main__":
    main()
