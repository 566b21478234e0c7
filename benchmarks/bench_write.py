"""Write throughput and peak RSS of `write_pyramid` on a lazily generated slide.

Each case runs in a fresh subprocess so its peak RSS (ru_maxrss) is its own:

- ``generate``: compute every chunk of the slide and discard it. This is the
  anchor: the cost of producing level 0, which every write pays too.
- ``ome-tiff``: write_pyramid to .ome.tif (default JPEG q=90).
- ``ome-zarr``: write_pyramid to .ome.zarr (default lossless zstd).

The target (issue 2, §5) is a peak below 1.5 GB RSS for a 30,000² slide.

    python benchmarks/bench_write.py                  # 30,000² (several minutes)
    python benchmarks/bench_write.py --size 8192      # quick
    python benchmarks/bench_write.py --generator noise  # cheap level 0: isolates the writer
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RSS_TARGET_MB = 1500


def _noise_block(block_info=None, seed=0):
    # Seeded per chunk position, so it does not depend on scheduling order.
    (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
    rng = np.random.default_rng([seed, y0, x0])
    yy = np.arange(y0, y1, dtype=np.int32)[:, None, None]
    xx = np.arange(x0, x1, dtype=np.int32)[None, :, None]
    base = (160 + (yy // 9 + xx // 13) % 64).astype(np.uint8)
    return base + rng.integers(0, 32, (y1 - y0, x1 - x0, 3), dtype=np.uint8)


def make_slide(size: int, chunks: int, generator: str):
    """(lazy Y×X×3 uint8 dask array, description of what generated it)."""
    import dask.array as da

    if generator == "synthetic":
        from napari_stainfuser.slide.synthetic import synthetic_he

        return synthetic_he((size, size), seed=0, chunks=chunks), "slide.synthetic.synthetic_he"
    shape = (size, size, 3)
    c = da.core.normalize_chunks((chunks, chunks, 3), shape)
    return da.map_blocks(_noise_block, dtype=np.uint8, chunks=c), "seeded per-chunk noise"


def _child(args) -> None:
    slide, what = make_slide(args.size, args.chunks, args.generator)
    start = time.perf_counter()
    out_bytes = 0
    if args.case == "generate":
        # Same row strips as the writer uses, each chunk reduced to one pixel.
        # (One compute over the whole graph would also work but lets dask run
        # generator tasks far ahead of their reductions: GBs of RSS at 30k².)
        from napari_stainfuser.slide._ome_zarr import row_strips

        row_bytes = slide.shape[1] * 3
        for y0, y1 in row_strips(slide.chunks[0], row_bytes):
            strip = slide[y0:y1]
            strip.map_blocks(lambda b: b[:1, :1], chunks=(1, 1, 3), dtype=np.uint8).compute()
    else:
        from napari_stainfuser import write_pyramid

        ext = {"ome-tiff": ".ome.tif", "ome-zarr": ".ome.zarr"}[args.case]
        target = Path(args.out) / f"bench{ext}"
        write_pyramid(slide, target, mpp=0.5, tile=args.tile, overwrite=True)
        out_bytes = sum(p.stat().st_size for p in [target, *target.rglob("*")] if p.is_file())
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "bytes": out_bytes, "what": what}))


def _run_case(case: str, args, out: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        case,
        "--size",
        str(args.size),
        "--tile",
        str(args.tile),
        "--chunks",
        str(args.chunks),
        "--generator",
        args.generator,
        "--out",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"{case} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=30000, help="side of the square slide (px)")
    p.add_argument("--tile", type=int, default=512, help="output tile size")
    p.add_argument("--chunks", type=int, default=512, help="dask chunk size of the slide")
    p.add_argument(
        "--generator",
        choices=["synthetic", "noise"],
        default="synthetic",
        help="synthetic H&E (slide.synthetic) or cheap seeded noise",
    )
    p.add_argument("--out", help="directory for the outputs (default: a temporary one)")
    p.add_argument(
        "--cases", default="generate,ome-tiff,ome-zarr", help="comma-separated subset to run"
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.case = args.child
        _child(args)
        return

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_write_"))
    out.mkdir(parents=True, exist_ok=True)
    mp = args.size**2 / 1e6
    print(
        f"slide {args.size}×{args.size} ({mp:.0f} MP), chunks {args.chunks}, tile {args.tile}, "
        f"generator {args.generator}, output in {out}"
    )
    rows = {}
    try:
        for case in args.cases.split(","):
            rows[case] = r = _run_case(case, args, out)
            print(f"  ran {case}: {r['seconds']:.1f} s", flush=True)
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    gen = rows["generate"]["seconds"] if "generate" in rows else float("nan")
    print(f"level 0 from: {next(iter(rows.values()))['what']}")
    print(
        f"{'case':<10} {'seconds':>8} {'MP/s':>7} {'writer-only MP/s':>17} {'peak RSS MB':>12} "
        f"{'output MB':>10}"
    )
    for case, r in rows.items():
        s = r["seconds"]
        # Writer-only: time beyond generating level 0, which the anchor measures.
        extra = s - gen
        writer = f"{mp / extra:.1f}" if case != "generate" and extra > 0 else "-"
        size = f"{r['bytes'] / 1e6:.0f}" if r["bytes"] else "-"
        print(f"{case:<10} {s:8.1f} {mp / s:7.1f} {writer:>17} {r['peak_mb']:12.0f} {size:>10}")
    worst = max((r["peak_mb"] for c, r in rows.items() if c != "generate"), default=0.0)
    verdict = "PASS" if worst < RSS_TARGET_MB else "FAIL"
    print(f"peak RSS target < {RSS_TARGET_MB} MB: {verdict} (worst {worst:.0f} MB)")


if __name__ == "__main__":
    main()
