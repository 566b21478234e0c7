"""Opening a slide without a pyramid for normalization: the overview, in bounded memory.

Normalizing a slide needs its low-resolution overview (tissue detection and
slide statistics). A slide that stores no pyramid has to be read whole for
it: every level-0 tile is decoded once, in strips, halved as the lazy levels
halve, and dropped. Tiles that were never written (byte count 0) are
background and are not read at all.

Cases, each in a fresh process (time and peak RSS):

- a ``--size``² JPEG-tiled TIFF without a pyramid, every tile a real 256² H&E
  tile of the CMU slide: ``open_slide``, then the overview; the anchor is
  decoding every tile of the file once with tifffile's decoder on 2 threads
  (what the overview cannot avoid);
- a 200,000² TIFF of empty tiles (5 MB on disk): open and overview.

    python benchmarks/bench_overview.py                 # 100,000² (writes ~2.5 GB, long)
    python benchmarks/bench_overview.py --size 30000    # quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
DATA = HERE.parent / "tests" / "data"

OVERVIEW = """
import json, sys, time

def peak_mb():  # VmHWM: this process's own peak (ru_maxrss keeps the parent's across exec)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024

t0 = time.perf_counter()
from napari_stainfuser.job import open_source
t1 = time.perf_counter()
src = open_source(sys.argv[1])
t2 = time.perf_counter()
image, level = src.overview(2048)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "open": t2 - t1, "overview": t3 - t2,
                  "rss_mb": peak_mb(),
                  "shape": list(image.shape)}))
"""

DECODE_ALL = """
import json, sys, time

def peak_mb():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024

from concurrent.futures import ThreadPoolExecutor
import tifffile
t0 = time.perf_counter()
with tifffile.TiffFile(sys.argv[1]) as tif:
    page = tif.pages[0]
    fh = tif.filehandle
    jobs = list(zip(page.dataoffsets, page.databytecounts))
    def decode(job):
        off, n = job
        fh_data = open(sys.argv[1], "rb")
        fh_data.seek(off)
        data = fh_data.read(n)
        fh_data.close()
        return page.decode(data, 0, jpegtables=page.jpegtables)[0].shape
    page.decode(None, 0, jpegtables=page.jpegtables)
    with ThreadPoolExecutor(2) as pool:
        for _ in pool.map(decode, jobs, chunksize=64):
            pass
print(json.dumps({"decode_all": time.perf_counter() - t0,
                  "rss_mb": peak_mb()}))
"""


def run(code: str, path: Path) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=100_000, help="edge of the flat TIFF (px)")
    ap.add_argument("--keep", help="folder to keep the written TIFF in (default: a temporary one)")
    a = ap.parse_args()

    import tifffile

    sys.path.insert(0, str(HERE.parent / "tests" / "cli"))
    from bad_input_cases import sparse_tiff

    from napari_stainfuser.slide import open_slide

    tile = np.ascontiguousarray(
        np.asarray(open_slide(DATA / "CMU-1-Small-Region.svs").levels[0][1200:1456, 800:1056])
    )
    folder = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench-overview-"))
    folder.mkdir(parents=True, exist_ok=True)
    flat = folder / f"flat-{a.size}.tif"
    n = (-(-a.size // 256)) ** 2
    if not flat.exists():
        t = time.perf_counter()
        tifffile.imwrite(
            flat, (tile for _ in range(n)), shape=(a.size, a.size, 3), dtype=np.uint8,
            tile=(256, 256), photometric="rgb", compression="jpeg",
            compressionargs={"level": 90}, bigtiff=True, metadata=None,
        )  # fmt: skip
        print(f"wrote {flat} ({flat.stat().st_size / 1e9:.2f} GB, {n:,} tiles) "
              f"in {time.perf_counter() - t:.0f} s")  # fmt: skip
    ours = run(OVERVIEW, flat)
    anchor = run(DECODE_ALL, flat)
    empty = run(OVERVIEW, sparse_tiff(folder / "empty-200000.tif", 200_000, 200_000))
    mp = a.size * a.size / 1e6
    print(f"\n{a.size:,}² JPEG-tiled TIFF without a pyramid ({mp:,.0f} MP), 2 CPU cores")
    print(f"{'':34}{'s':>8}{'MP/s':>8}{'peak RSS MB':>13}")
    print(f"{'anchor: decode every tile once':34}{anchor['decode_all']:>8.1f}"
          f"{mp / anchor['decode_all']:>8.1f}{anchor['rss_mb']:>13.0f}")  # fmt: skip
    print(f"{'ours: open_slide':34}{ours['open']:>8.2f}")
    print(f"{'ours: overview for normalization':34}{ours['overview']:>8.1f}"
          f"{mp / ours['overview']:>8.1f}{ours['rss_mb']:>13.0f}")  # fmt: skip
    print(f"overview / anchor time: {ours['overview'] / anchor['decode_all']:.2f}; "
          f"overview shape {ours['shape']}")  # fmt: skip
    print(f"\n200,000² TIFF of empty tiles: open {empty['open']:.2f} s, "
          f"overview {empty['overview']:.2f} s, peak RSS {empty['rss_mb']:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
