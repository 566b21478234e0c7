"""Classical stain normalization throughput on a 2048² region of the real CMU slide.

One run prints, side by side:
* raw decode of the region's JPEG tiles straight from the file (tifffile reads
  the bytes, imagecodecs decodes, on all cores) — the anchor a slide pass
  cannot beat;
* torchstain's Macenko and Reinhard (torch backend) normalizing the region;
* each of our methods: fit on the target, fit_source on the region (slide-level
  statistics), the one-off 256³ lookup-table build, then the steady-state
  transform; and, for reference, the per-image path (source statistics
  estimated from the region itself, as torchstain does).

Run: python benchmarks/bench_stain.py [--repeats 5]
"""

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_stainfuser.stain import get_normalizer, read_target_image

ROOT = Path(__file__).resolve().parents[1]
SLIDE = ROOT / "tests" / "data" / "CMU-1-Small-Region.svs"
TARGET = ROOT / "tests" / "data" / "he" / "torchstain-target.png"
SIZE = 2048
MP = SIZE * SIZE / 1e6


def decode_region(tif: tifffile.TiffFile, pool: ThreadPoolExecutor) -> np.ndarray:
    """Read and decode the level-0 tiles covering [0:SIZE, 0:SIZE]."""
    page = tif.pages[0]
    th, tw = page.tilelength, page.tilewidth
    ntx = -(-page.imagewidth // tw)
    rows, cols = -(-SIZE // th), -(-SIZE // tw)
    out = np.empty((rows * th, cols * tw, 3), np.uint8)
    fh = tif.filehandle
    jobs = []
    for r in range(rows):
        for c in range(cols):
            i = r * ntx + c
            fh.seek(page.dataoffsets[i])
            jobs.append((r, c, i, fh.read(page.databytecounts[i])))

    def decode(job):
        r, c, i, data = job
        tile = page.decode(data, i, jpegtables=page.jpegtables)[0]
        out[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile.reshape(th, tw, 3)

    list(pool.map(decode, jobs))
    return out[:SIZE, :SIZE]


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls (after one warm-up call) and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def once(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    print(f"CPU cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, "
          f"load average: {os.getloadavg()[0]:.1f}")
    pool = ThreadPoolExecutor(os.cpu_count() or 1)
    with tifffile.TiffFile(SLIDE) as tif:
        t_dec, region = timed(lambda: decode_region(tif, pool), args.repeats)
        assert np.array_equal(region, tif.pages[0].asarray()[:SIZE, :SIZE])
    region = np.ascontiguousarray(region)
    target = read_target_image(TARGET)
    decode_mps = MP / t_dec
    rows = [("raw decode (tifffile + imagecodecs)", decode_mps, "")]

    import torchstain

    chw = torch.from_numpy(region).permute(2, 0, 1).contiguous()
    ts = {}
    for name, cls in (("macenko", "MacenkoNormalizer"), ("reinhard", "ReinhardNormalizer")):
        norm = getattr(torchstain.normalizers, cls)(backend="torch")
        norm.fit(torch.from_numpy(target).permute(2, 0, 1).contiguous())
        call = (lambda n=norm: n.normalize(chw, stains=False)) if name == "macenko" else (
            lambda n=norm: n.normalize(chw)
        )
        t, _ = timed(call, max(1, args.repeats // 2))
        ts[name] = MP / t
        rows.append((f"torchstain {name} (torch backend)", MP / t, ""))

    fits = []
    for method in ("macenko", "reinhard", "vahadane", "ruifrok"):
        norm = get_normalizer(method)
        t_fit, _ = once(lambda n=norm: n.fit(target))
        t_fit_region, _ = once(lambda m=method: get_normalizer(m).fit(region))
        t_per_image, _ = timed(lambda n=norm: n.transform(region), max(1, args.repeats // 2))
        t_src, _ = once(lambda n=norm: n.fit_source(region))
        t_lut, _ = once(lambda n=norm: n.transform(region[:1, :1]))
        t_tr, out = timed(lambda n=norm: n.transform(region), args.repeats)
        assert out.shape == region.shape and out.dtype == np.uint8
        notes = [f"{MP / t_tr / decode_mps:.2f}× decode"]
        if method in ts:
            notes.append(f"{MP / t_tr / ts[method]:.1f}× torchstain")
        rows.append((f"ours {method}, slide-level stats (lookup table)", MP / t_tr, ", ".join(notes)))
        rows.append((f"ours {method}, per-image stats (direct)", MP / t_per_image, ""))
        fits.append((method, t_fit, t_fit_region, t_src, t_lut))

    print(f"\nTransform throughput on a {SIZE}×{SIZE} region of {SLIDE.name} "
          f"(median of {args.repeats}):\n")
    print("| what | MP/s | relative |")
    print("|---|---:|---|")
    for what, mps, note in rows:
        print(f"| {what} | {mps:.1f} | {note} |")
    print("\nOne-off costs (s):\n")
    print("| method | fit on target (587×441) | fit on the 2048² region | fit_source (2048²) "
          "| lookup-table build |")
    print("|---|---:|---:|---:|---:|")
    for method, a, b, c, d in fits:
        print(f"| {method} | {a:.2f} | {b:.2f} | {c:.2f} | {d:.2f} |")


if __name__ == "__main__":
    main()
