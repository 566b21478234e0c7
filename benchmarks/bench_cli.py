"""The command line as a user meets it: time to an argument error, and a real slide end to end.

1. **Argument errors** (claim: under 1 s). Each mistake is run as a fresh
   ``stainfuser normalize`` process; the anchor is ``python -c pass``, the
   interpreter's own start-up on the same machine.
2. **The real CMU slide end to end** with Macenko to OME-TIFF, in a fresh
   process: the import, then each phase the run reports (open: overview and
   tissue; fit: target and slide statistics, lookup table; stain; pyramid;
   write), each timed from the progress reports.

    python benchmarks/bench_cli.py
    python benchmarks/bench_cli.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).parents[1] / "tests" / "data"
CMU = DATA / "CMU-1-Small-Region.svs"
TARGET = DATA / "he" / "torchstain-target.png"

MISTAKES = {
    "--tile 1": ["--tile", "1"],
    "--quality 500": ["--quality", "500"],
    "--steps 0 (stainfuser)": ["--method", "stainfuser", "--steps", "0"],
    "--sampler with macenko": ["--sampler", "ddim"],
    "missing target": ["--target", str(DATA / "nothing.png")],
}

END_TO_END = """
import sys, time, json
t0 = time.perf_counter()
from napari_stainfuser.batch import normalize_slide
marks = {"import": time.perf_counter() - t0}
t1 = time.perf_counter()
last = ["start", t1]
def report(p):
    if p.phase != last[0]:
        now = time.perf_counter()
        marks[last[0]] = marks.get(last[0], 0.0) + now - last[1]
        last[0], last[1] = p.phase, now
normalize_slide(sys.argv[1], sys.argv[2], method="macenko", target=sys.argv[3], progress=report)
marks.pop("start", None)
marks["total"] = time.perf_counter() - t0
print(json.dumps(marks))
"""


def timed(cmd) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=False)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="runs per case; the median is shown")
    a = ap.parse_args()

    import json

    anchor = statistics.median(timed([sys.executable, "-c", "pass"]) for _ in range(a.repeats))
    print(f"time to an argument error (median of {a.repeats}; fresh process each)")
    print(f"{'case':<28}{'s':>7}")
    print(f"{'anchor: python -c pass':<28}{anchor:>7.2f}")
    with tempfile.TemporaryDirectory() as d:
        for name, flags in MISTAKES.items():
            args = ["normalize", str(CMU), "--target", str(TARGET), "-o", f"{d}/o.ome.zarr"]
            cmd = [sys.executable, "-m", "napari_stainfuser.cli", *args, *flags]
            t = statistics.median(timed(cmd) for _ in range(a.repeats))
            print(f"{name:<28}{t:>7.2f}")

        print(f"\nCMU-1-Small-Region.svs (2220 × 2967) with Macenko to OME-TIFF, seconds, "
              f"median of {a.repeats}")  # fmt: skip
        runs = []
        for i in range(a.repeats):
            out = f"{d}/cmu-{i}.ome.tif"
            r = subprocess.run(
                [sys.executable, "-c", END_TO_END, str(CMU), out, str(TARGET)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
        for phase in ("import", "open", "fit", "stain", "pyramid", "write", "total"):
            vals = [r.get(phase, 0.0) for r in runs]
            print(f"  {phase:<10}{statistics.median(vals):>7.2f}")


if __name__ == "__main__":
    main()
