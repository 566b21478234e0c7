"""The live layer in a real napari viewer: time from a pan to the first stained tile,
and the longest stall of the event loop while panning, next to napari showing the
source alone.

A QTimer probe fires every 10 ms on the UI thread; a stall is how much later than
10 ms a tick comes. Each pan drags the camera from one point on tissue to another
for about a second (25 steps), like a hand on the mouse, then rests for ``--dwell``
seconds.

- anchor: the same pans with napari showing the source alone (before any
  live result exists): what napari itself costs on this machine;
- ours: the same pans with the live result following the camera. For each pan,
  the time from the end of the drag to the first slice napari draws with a
  stained pixel of the new view (0 when the drag's last slice already had one:
  prefetch got there first), and the share of the view stained when the rest
  ends. Pans that needed new tiles are also reported on their own ("cold").

    python benchmarks/bench_napari_live.py --slide tests/data/CMU-1-Small-Region.svs \\
        --target tests/data/he/torchstain-target.png --method macenko --zoom 3 --json live.json
    python benchmarks/bench_napari_live.py --slide synthetic --method macenko   # the 24,576² sample

``--slide synthetic`` opens the plugin's synthetic sample, whose target (lab B)
comes with it. Without a display it runs itself again under ``xvfb-run``. The
JSON has ``first_tile_s`` (median over the pans), ``max_stall_ms``,
``anchor_max_stall_ms`` and ``filled_fraction`` (the minimum over the pans), and
beside them the cold pans, the 95th percentile of the stalls and how many were
over 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROBE_MS = 10


def _rerun_under_xvfb() -> None:
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        sys.exit("bench_napari_live: no display and no xvfb-run (bash scripts/install-system-deps)")
    cmd = [xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv]
    sys.exit(subprocess.call(cmd, env={**os.environ, "BENCH_UNDER_XVFB": "1"}))


class Probe:
    """Ticks every 10 ms on the UI thread and keeps the longest late tick."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(PROBE_MS)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.late = []

    def _tick(self):
        now = time.perf_counter()
        if self.last is not None:
            self.late.append((now - self.last) * 1e3 - PROBE_MS)
        self.last = now

    def start(self):
        self.last, self.late = None, []
        self.timer.start()

    def stop(self) -> dict:
        """The longest late tick, the 95th percentile and how many were over 100 ms."""
        self.timer.stop()
        late = sorted(self.late) or [0.0]
        return {
            "max": late[-1],
            "p95": late[int(0.95 * (len(late) - 1))],
            "over_100": sum(x > 100 for x in late),
            "ticks": len(late),
        }


def pump(seconds, until=None):
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        app.processEvents()
        if until is not None and until():
            return True
        time.sleep(0.002)
    return until() if until is not None else True


def drag(viewer, start, end, steps=25, step_s=0.04):
    for i in range(1, steps + 1):
        f = i / steps
        viewer.camera.center = (
            start[0] + f * (end[0] - start[0]),
            start[1] + f * (end[1] - start[1]),
        )
        pump(step_s)


def pan_path(source, n, seed=0):
    """n + 1 centres on tissue (world coordinates), each pan a drag from the last.

    Tissue: pixels of the source's coarsest level darker than glass; a pan that
    ends on glass has nothing to stain and would measure nothing."""
    import numpy as np

    from napari_stainfuser._napari.sources import layer_levels

    levels = layer_levels(source)  # the pixels themselves, not what napari shows now
    low = np.asarray(levels[-1][:, :, :3])
    h0, w0 = levels[0].shape[:2]
    ys, xs = np.nonzero(low.mean(axis=2) < 200)
    if len(ys) == 0:
        sys.exit("bench_napari_live: no tissue found on the slide's coarsest level")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(ys), size=n + 1)
    fy, fx = h0 / low.shape[0], w0 / low.shape[1]
    sy, sx = source.scale[-2:]
    ty, tx = source.translate[-2:]
    return [((ys[i] + 0.5) * fy * sy + ty, (xs[i] + 0.5) * fx * sx + tx) for i in pick]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--slide", required=True, help="slide path, or 'synthetic' for the sample")
    ap.add_argument("--target", help="target picture or preset (default: the sample's lab B)")
    ap.add_argument("--method", default="macenko")
    ap.add_argument("--pans", type=int, default=8)
    ap.add_argument("--dwell", type=float, default=2.5, help="seconds of rest after each pan")
    ap.add_argument(
        "--zoom", type=float, default=1.0, help="screen px per µm (1.0: about level 0-1)"
    )
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    if not os.environ.get("DISPLAY") and not os.environ.get("BENCH_UNDER_XVFB"):
        _rerun_under_xvfb()

    import napari

    from napari_stainfuser._napari._qt.normalize_widget import NormalizationWidget

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    if a.slide == "synthetic":
        viewer.open_sample("napari-stainfuser", "synthetic_he")
        source = viewer.layers["Synthetic H&E slide"]
    else:
        (source,) = viewer.open(a.slide, plugin="napari-stainfuser")
    widget = NormalizationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Stain normalization", area="right")
    if a.target:
        widget.kind.setCurrentIndex(3 if not a.target.endswith(".json") else 2)
        widget.target_file.edit.setText(a.target)
        widget.target_file.edit.editingFinished.emit()
    widget.method.setCurrentText(a.method)
    path = pan_path(source, a.pans)
    viewer.camera.center = path[0]
    viewer.camera.zoom = a.zoom
    pump(3)

    probe = Probe()
    # Anchor: napari and the source alone.
    probe.start()
    for i in range(a.pans):
        drag(viewer, path[i], path[i + 1])
        pump(a.dwell / 2)
    anchor = probe.stop()

    viewer.camera.center = path[0]
    pump(1)
    t0 = time.perf_counter()
    widget.live_button.click()
    if not pump(300, lambda: widget.live is not None):
        sys.exit(f"bench_napari_live: the live result did not start: {widget.status.text()}")
    live = widget.live
    opened_s = time.perf_counter() - t0
    pump(3, lambda: live.filled_fraction() >= 1.0)

    # What napari put on screen: each slice of the displayed level, and whether it
    # held a stained pixel. A slice is drawn in the same event-loop turn.
    slices = []
    for k, level in enumerate(live.levels):
        real_region = level.region

        def region(y0, y1, x0, x1, _k=k, _real=real_region):
            out = _real(y0, y1, x0, x1)
            slices.append((time.perf_counter(), _k, bool(out[..., 3].any())))
            return out

        level.region = region

    def first_shown(end):
        """Seconds from the end of a drag to a stained tile of the new view on screen."""
        k = live.displayed_level()
        mine = [(t, stained) for t, j, stained in slices if j == k]
        before = [stained for t, stained in mine if t <= end]
        if before and before[-1]:
            return 0.0, False  # already stained: the last slice of the drag showed it
        after = [t for t, stained in mine if t > end and stained]
        return (after[0] - end if after else float("inf")), True

    firsts, cold, filled = [], [], []
    probe.start()
    for i in range(a.pans):
        drag(viewer, path[i], path[i + 1])
        end = time.perf_counter()
        pump(a.dwell)
        first, was_cold = first_shown(end)
        firsts.append(first)
        if was_cold:
            cold.append(first)
        filled.append(live.filled_fraction())
    stall = probe.stop()
    widget.cancel()
    viewer.close()

    out = {
        "slide": a.slide,
        "method": a.method,
        "pans": a.pans,
        "zoom": a.zoom,
        "first_tile_s": statistics.median(firsts),
        "first_tile_s_each": firsts,
        "first_tile_cold_s": statistics.median(cold) if cold else None,
        "cold_pans": len(cold),
        "max_stall_ms": stall["max"],
        "p95_stall_ms": stall["p95"],
        "stalls_over_100ms": stall["over_100"],
        "anchor_max_stall_ms": anchor["max"],
        "anchor_p95_stall_ms": anchor["p95"],
        "anchor_stalls_over_100ms": anchor["over_100"],
        "filled_fraction": min(filled),
        "filled_each": filled,
        "live_start_s": opened_s,
    }
    print(f"{a.slide} with {a.method}, {a.pans} pans of ~1 s, {a.dwell} s rest, zoom {a.zoom}")
    print(f"  live result ready (open, fit, lookup table) after {opened_s:.1f} s")
    cold_s = f"{out['first_tile_cold_s']:.3f} s" if cold else "none"
    print(f"  pan to the first stained tile on screen: median {out['first_tile_s']:.3f} s, "
          f"max {max(firsts):.3f} s; over the {len(cold)} pans into unstained regions: "
          f"median {cold_s}")  # fmt: skip
    print(f"  event-loop stall (late 10 ms ticks): ours max {stall['max']:.0f} ms, "
          f"p95 {stall['p95']:.0f} ms, {stall['over_100']} of {stall['ticks']} over 100 ms")  # fmt: skip
    print(f"  anchor, napari with the source alone: max {anchor['max']:.0f} ms, "
          f"p95 {anchor['p95']:.0f} ms, {anchor['over_100']} of {anchor['ticks']} over 100 ms")  # fmt: skip
    print(f"  share of the view stained at the end of each pan: min {min(filled):.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
