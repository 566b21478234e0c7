"""Latency of one visible 512² tile through the engine, idle and busy.

What a viewer feels: the time from requesting one tile that just came into
view to holding its stained pixels (read, stain, done), with Macenko.

- idle engine: nothing else queued;
- busy engine: ``--backlog`` tiles of background prefetch already queued.
  Ours requests the visible tile at VISIBLE priority, so it jumps the queue
  and waits at most for the batch already on the device. The anchor is the
  same engine with the request at the backlog's own priority (first in,
  first out), which is what a queue without priorities gives.

    python benchmarks/bench_latency.py
    python benchmarks/bench_latency.py --backlog 100 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from napari_stainfuser.engine import BACKGROUND, VISIBLE, Engine
from napari_stainfuser.slide.synthetic import SyntheticTissue
from napari_stainfuser.stainers import make_stainer
from napari_stainfuser.tiling.lazy import StainedLevel
from napari_stainfuser.tiling.memory import ResultStore
from napari_stainfuser.tiling.plan import TilePlan

TILE = 512


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=20480, help="synthetic slide edge (px)")
    ap.add_argument("--backlog", type=int, default=100, help="background tiles queued when busy")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    image = SyntheticTissue(0, 0.5).render_he((a.size, a.size), chunks=TILE)
    target = SyntheticTissue(7, 0.5).render_he((1024, 1024), scale=1.4).compute()
    norm = make_stainer("macenko", target, slide=image[:4096, :4096].compute())
    norm.transform(np.zeros((1, 1, 3), np.uint8))  # build the lookup table up front
    plan = TilePlan(image, norm.spec, tile=TILE)
    n = plan.grid.n_cols
    tiles = iter(plan.grid.tiles())  # every request a fresh, never computed tile

    def run(busy: bool, jump: bool) -> float:
        with Engine(norm) as engine:
            level = StainedLevel(plan, engine, ResultStore())
            if busy:
                for _ in range(a.backlog):
                    r, c = next(tiles)
                    level.tile_future(r, c, BACKGROUND)
                time.sleep(0.5)  # the device is well into the backlog
            r, c = next(tiles)
            t0 = time.perf_counter()
            level.tile_future(r, c, VISIBLE if jump else BACKGROUND).result()
            dt = time.perf_counter() - t0
            engine.cancel()
        return dt

    assert a.backlog * a.repeats * 2 + 3 * a.repeats < n * plan.grid.n_rows, "slide too small"
    rows = {
        "idle engine": [run(False, True) for _ in range(a.repeats)],
        "busy, anchor (FIFO)": [run(True, False) for _ in range(a.repeats)],
        "busy, ours (VISIBLE jumps)": [run(True, True) for _ in range(a.repeats)],
    }
    print(f"one visible {TILE}² tile, Macenko (lookup table), backlog {a.backlog} tiles, "
          f"median of {a.repeats}")  # fmt: skip
    print(f"{'case':<30}{'median s':>10}{'max s':>9}")
    for name, v in rows.items():
        print(f"{name:<30}{statistics.median(v):>10.3f}{max(v):>9.3f}")


if __name__ == "__main__":
    main()
