"""Classical stain normalization throughput on a 2048² region of the real CMU slide.

One run prints, side by side:
* raw decode of the region's JPEG tiles straight from the file (tifffile reads
  the bytes, imagecodecs decodes, on all cores) — the anchor a slide pass
  cannot beat;
* torchstain's Macenko and Reinhard (torch backend) normalizing the region;
* each of our methods: fit on the target, fit_source on the region (slide-level
  statistics), the one-off 256³ lookup-table build, then the steady-state
  transform (on an H×W×3 array, and on the B×3×H×W tensor that slide passes
  hand to stainers); and, for reference, the per-image path (source statistics
  estimated from the region itself, as torchstain does).

Everything is timed in interleaved rounds (decode, ours, torchstain, repeat),
so the ratios compare runs made under the same machine load.

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

from napari_stainfuser.stain import get_normalizer
from napari_stainfuser.targets import read_target_image

ROOT = Path(__file__).resolve().parents[1]
SLIDE = ROOT / "tests" / "data" / "CMU-1-Small-Region.svs"
TARGET = ROOT / "tests" / "data" / "he" / "torchstain-target.png"
SIZE = 2048
MP = SIZE * SIZE / 1e6
METHODS = ("macenko", "reinhard", "vahadane", "ruifrok")


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


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    print(
        f"CPU cores: {os.cpu_count()}, torch threads: {threads}, "
        f"load average at start: {os.getloadavg()[0]:.1f}"
    )

    pool = ThreadPoolExecutor(os.cpu_count() or 1)
    tif = tifffile.TiffFile(SLIDE)
    region = np.ascontiguousarray(decode_region(tif, pool))
    assert np.array_equal(region, tif.pages[0].asarray()[:SIZE, :SIZE])
    target = read_target_image(TARGET)

    import torchstain

    chw = torch.from_numpy(region).permute(2, 0, 1).contiguous()
    ts_calls = {}
    for name, cls in (("macenko", "MacenkoNormalizer"), ("reinhard", "ReinhardNormalizer")):
        norm = getattr(torchstain.normalizers, cls)(backend="torch")
        norm.fit(torch.from_numpy(target).permute(2, 0, 1).contiguous())
        if name == "macenko":
            ts_calls[name] = lambda n=norm: n.normalize(chw, stains=False)
        else:
            ts_calls[name] = lambda n=norm: n.normalize(chw)

    # One-off costs, and the fitted normalizers.
    ours, costs = {}, []
    for method in METHODS:
        norm = get_normalizer(method)
        t_fit = seconds(lambda n=norm: n.fit(target))
        t_fit_region = seconds(lambda m=method: get_normalizer(m).fit(region))
        t_per_image = seconds(lambda n=norm: n.transform(region))
        t_src = seconds(lambda n=norm: n.fit_source(region))
        t_lut = seconds(lambda n=norm: n.prepare())
        out = norm.transform(region)
        assert out.shape == region.shape and out.dtype == np.uint8
        ours[method] = norm
        costs.append((method, t_fit, t_fit_region, t_src, t_lut, MP / t_per_image))

    # Interleaved rounds: every contender is timed once per round, so a change
    # of machine load between rounds hits all of them alike; ratios are taken
    # within a round.
    times: dict[str, list[float]] = {}

    def record(key, fn):
        times.setdefault(key, []).append(seconds(fn))

    for _ in range(args.repeats):
        record("decode", lambda: decode_region(tif, pool))
        for method, norm in ours.items():
            record(method, lambda n=norm: n.transform(region))
        # The stainer path slide passes use: a 1×3×H×W uint8 tensor.
        record("macenko-torch", lambda: ours["macenko"].transform(chw[None]))
        for name, call in ts_calls.items():
            # torchstain's speed depends on torch's thread count (OpenMP
            # barriers on a busy machine): time both, its better one is the anchor.
            for n_threads in sorted({1, threads}):
                torch.set_num_threads(n_threads)
                record(f"ts-{name}-{n_threads}", call)
            torch.set_num_threads(threads)
    tif.close()

    def mps(key):
        return MP / statistics.median(times[key])

    def ts_best(name, i):
        return min(times[f"ts-{name}-{n}"][i] for n in sorted({1, threads}))

    def paired(method, anchor):
        return statistics.median(anchor(i) / times[method][i] for i in range(args.repeats))

    print(
        f"\nTransform throughput on a {SIZE}×{SIZE} region of {SLIDE.name} "
        f"(median of {args.repeats} interleaved rounds; ratios paired within a round):\n"
    )
    print("| what | MP/s | ours ÷ decode | ours ÷ torchstain (its best) |")
    print("|---|---:|---:|---:|")
    print(
        f"| raw decode (tifffile + imagecodecs, {os.cpu_count()} threads) | {mps('decode'):.1f} | | |"
    )
    for name in ts_calls:
        for n in sorted({1, threads}):
            print(
                f"| torchstain {name} (torch backend, {n} thread(s)) | {mps(f'ts-{name}-{n}'):.1f} | | |"
            )
    for method in ours:
        vs_decode = paired(method, lambda i: times["decode"][i])
        vs_ts = (
            f"{paired(method, lambda i, m=method: ts_best(m, i)):.1f}×"
            if method in ts_calls
            else ""
        )
        print(
            f"| ours {method}, slide-level statistics (lookup table) | {mps(method):.1f} "
            f"| {vs_decode:.2f}× | {vs_ts} |"
        )
    print(
        f"| ours macenko, 1×3×H×W torch tensor (the stainer path) | {mps('macenko-torch'):.1f} "
        f"| {paired('macenko-torch', lambda i: times['decode'][i]):.2f}× | |"
    )
    print("\nOne-off costs (s) and the per-image path:\n")
    print(
        "| method | fit on target (587×441) | fit on the 2048² region | fit_source (2048²) "
        "| lookup-table build | per-image transform (MP/s) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for method, a, b, c, d, e in costs:
        print(f"| {method} | {a:.2f} | {b:.2f} | {c:.2f} | {d:.2f} | {e:.1f} |")
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
