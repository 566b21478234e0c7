"""Building and reading the lazy lower levels of a slide without a pyramid: ours vs the anchor.

Anchor: the previous `downsample2x`, reconstructed here — halve each chunk with
``map_blocks`` (summing four doubly strided views) and ``rechunk`` the result
back up to the parent's chunk size. Ours: `pyramid.downsample2x`, one graph
layer per level with one task per output chunk reading the 2×2 parent chunks
under it, halved row pairs first. Both give the same pixels (checked on every
region read below).

Cases, each timed best-of-``--rounds`` in this one run:

- build: `build_pyramid` on a lazy ``--size``² × 3 ``da.zeros`` with
  ``--tile``² chunks (no pixel is computed);
- read: ``--regions`` 512² regions of levels 1–3, computed through dask, on a
  level 0 wrapped like the reader wraps TIFF tiles (``lazy_level``), whose
  tiles cost one copy to serve, so the time is dask plus halving;
- ``--tiff``: write a ``--size``² zlib tiled TIFF without a pyramid, then time
  ``open_slide`` on it and one 512² ``read_region`` of level 1 (writing a
  100,000² file takes ~2 minutes and ~40 MB).

    python benchmarks/bench_pyramid_build.py [--size 100000] [--tile 256] [--rounds 3] [--tiff]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from napari_stainfuser.slide import pyramid
from napari_stainfuser.slide._readutil import lazy_level
from napari_stainfuser.slide.pyramid import MIN_LEVEL_SIZE


def _anchor_halve_block(block: np.ndarray) -> np.ndarray:
    b = block.astype(np.uint16)
    s = b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def _anchor_even_chunks(chunks: tuple[int, ...], size: int) -> tuple[int, ...]:
    if all(c % 2 == 0 for c in chunks):
        return chunks
    step = max(2, chunks[0] + chunks[0] % 2)
    out = [step] * (size // step)
    if size % step:
        out.append(size % step)
    return tuple(out)


def anchor_downsample2x(level: da.Array, target_chunk: int | None = None) -> da.Array:
    """The previous implementation: per-chunk halving, then rechunk up to `target_chunk`."""
    h, w = (level.shape[0] // 2) * 2, (level.shape[1] // 2) * 2
    x = level[:h, :w]
    x = x.rechunk(
        (_anchor_even_chunks(x.chunks[0], h), _anchor_even_chunks(x.chunks[1], w), x.chunks[2])
    )
    out_chunks = (
        tuple(c // 2 for c in x.chunks[0]),
        tuple(c // 2 for c in x.chunks[1]),
        x.chunks[2],
    )
    out = x.map_blocks(_anchor_halve_block, chunks=out_chunks, dtype=np.uint8)
    tc = target_chunk or level.chunks[0][0]
    tc_x = target_chunk or level.chunks[1][0]
    if out.chunks[0][0] < tc or out.chunks[1][0] < tc_x:
        out = out.rechunk((tc, tc_x, out.chunks[2]))
    return out


def anchor_build_pyramid(level0: da.Array, min_size: int = MIN_LEVEL_SIZE) -> list[da.Array]:
    levels = [level0]
    while max(levels[-1].shape[:2]) > min_size and min(levels[-1].shape[:2]) >= 2:
        levels.append(anchor_downsample2x(levels[-1], target_chunk=level0.chunks[0][0]))
    return levels


BUILDERS = {"anchor (map_blocks+rechunk)": anchor_build_pyramid, "ours": pyramid.build_pyramid}


class PatternSource:
    """A ``size``² × 3 uint8 level 0 read like TIFF tiles: a random 509² pattern repeated.

    509 is prime, so no two tiles (nor any two regions read below) line up with
    the pattern the same way; serving a tile costs one copy, like a cheap decode.
    """

    dtype = np.dtype(np.uint8)
    ndim = 3
    period = 509

    def __init__(self, size: int, tile: int):
        self.shape = (size, size, 3)
        pattern = np.random.default_rng(0).integers(0, 256, (self.period, self.period, 3), np.uint8)
        reps = -(-(self.period + tile) // self.period)
        self.tiled = np.tile(pattern, (reps, reps, 1))

    def __getitem__(self, index):
        ys, xs = index[:2]
        y0, x0 = ys.start % self.period, xs.start % self.period
        return self.tiled[y0 : y0 + ys.stop - ys.start, x0 : x0 + xs.stop - xs.start].copy()


def best_of(rounds: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_build(size: int, tile: int, rounds: int) -> None:
    level0 = da.zeros((size, size, 3), dtype=np.uint8, chunks=(tile, tile, 3))
    print(f"\nbuild_pyramid on a lazy {size:,}² × 3 da.zeros, {tile}² chunks (best of {rounds})")
    for label, build in BUILDERS.items():
        t, levels = best_of(rounds, lambda b=build: b(level0))
        layers = len(levels[-1].dask.layers) - len(level0.dask.layers)
        chunks = sorted({lv.chunks[0][0] for lv in levels})
        print(
            f"  {label:28s} {t * 1e3:9.1f} ms   {len(levels)} levels, "
            f"{layers} graph layers, chunk sizes {chunks}"
        )


def bench_read(size: int, tile: int, rounds: int, n_regions: int) -> None:
    level0 = lazy_level(PatternSource(size, tile), (tile, tile, 3), "bench-pattern", size, tile)
    pyramids = {label: build(level0) for label, build in BUILDERS.items()}
    rng = np.random.default_rng(0)
    print(f"\n512² region reads through dask (median over {n_regions} regions, best of {rounds})")
    for k in (1, 2, 3):
        h, w = pyramids["ours"][k].shape[:2]
        spots = [
            (int(rng.integers(0, h - 512)), int(rng.integers(0, w - 512))) for _ in range(n_regions)
        ]
        times: dict[str, list[float]] = {label: [] for label in pyramids}
        for y, x in spots:
            outs = []
            for label, levels in pyramids.items():
                t, out = best_of(
                    rounds, lambda lv=levels[k], y=y, x=x: lv[y : y + 512, x : x + 512].compute()
                )
                times[label].append(t)
                outs.append(out)
            np.testing.assert_array_equal(outs[0], outs[1])
        line = "   ".join(
            f"{label} {statistics.median(v) * 1e3:8.1f} ms" for label, v in times.items()
        )
        print(f"  level {k}: {line}")


def bench_tiff(size: int, tile: int, rounds: int) -> None:
    import tifffile

    from napari_stainfuser.slide import reader

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flat.tif"
        block = np.full((tile, tile, 3), 200, np.uint8)
        n_tiles = (-(-size // tile)) ** 2
        t = time.perf_counter()
        tifffile.imwrite(
            path,
            (block for _ in range(n_tiles)),
            shape=(size, size, 3),
            dtype=np.uint8,
            tile=(tile, tile),
            photometric="rgb",
            compression="zlib",
            compressionargs={"level": 1},
            metadata=None,
            bigtiff=True,
        )
        print(
            f"\nopen_slide on a {size:,}² tiled TIFF without a pyramid ({n_tiles:,} tiles, "
            f"written in {time.perf_counter() - t:.0f} s; best of {rounds})"
        )
        original = reader.build_pyramid
        try:
            for label, build in BUILDERS.items():
                reader.build_pyramid = build
                t_open, slide = best_of(rounds, lambda: reader.open_slide(path))
                y = x = size // 4
                t_read, region = best_of(
                    rounds,
                    lambda s=slide, y=y, x=x: s.read_region(
                        y=y, x=x, height=512, width=512, level=1
                    ),
                )
                assert (region == 200).all()
                print(
                    f"  {label:28s} open {t_open * 1e3:9.1f} ms   "
                    f"level-1 512² read_region {t_read * 1e3:8.1f} ms"
                )
        finally:
            reader.build_pyramid = original


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=100_000)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--regions", type=int, default=5)
    p.add_argument("--tiff", action="store_true", help="also time open_slide on a real TIFF")
    args = p.parse_args()
    # The first compute imports dask's scheduler machinery; keep that out of the timings.
    da.ones((2, 2), chunks=1).sum().compute()
    print(f"dask {dask.__version__}, numpy {np.__version__}")
    bench_build(args.size, args.tile, args.rounds)
    bench_read(args.size, args.tile, args.rounds, args.regions)
    if args.tiff:
        bench_tiff(args.size, args.tile, args.rounds)


if __name__ == "__main__":
    main()
