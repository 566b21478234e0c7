"""Progress of any run: one report type for batch runs, the engine and the widgets.

Every runner calls a ``progress(Progress)`` callback: ``normalize_slide`` and
``stainfuser normalize`` (a tqdm bar, :class:`TqdmProgress`), the live layer
in napari (``napari.utils.progress``), and :class:`~napari_stainfuser.engine.Engine`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

# What each phase counts. Phases without units are single steps.
UNITS = {"overview": "row", "stain": "tile", "blend": "chunk", "write": "row", "render": "row"}
STEPS = {
    "open": "opening the slide and the stainer (target, weights)",
    "fit": "detecting tissue and fitting the slide's stain statistics",
    "pyramid": "building the lower pyramid levels",
    "write": "writing the output",
    "metrics": "measuring against the ground truth",
}


@dataclass(frozen=True)
class Progress:
    """One progress report.

    phase: "open" (the slide's headers, the stainer: target and weights;
        "overview" counts the rows of a slide without a pyramid as its
        overview is read), "fit" (tissue, slide statistics), "stain"
        (tiles through the stainer), "blend" (output chunks assembled from
        stained tiles), "pyramid" (lower levels), "write" (OME-TIFF assembly
        or the final rename), "done"; the demo adds "render".
    done, total: units of this phase; ``done`` counts work a resumed run
        found finished too.
    rate: units per second over this session's work in the phase.
    elapsed_s: seconds since the phase started.
    failed, cancelled: tiles that failed or were cancelled (the engine).
    what: what the tiles are for: "slide" (a whole-slide run), "visible",
        "prefetch" (a live layer).
    """

    phase: str
    done: int = 0
    total: int = 0
    rate: float = 0.0
    elapsed_s: float = 0.0
    failed: int = 0
    cancelled: int = 0
    what: str = "slide"

    @property
    def pending(self) -> int:
        """Units still to do (neither done nor failed)."""
        return max(0, self.total - self.done - self.failed)

    @property
    def eta_s(self) -> float | None:
        if self.rate <= 0:
            return None
        return self.pending / self.rate


class Tracker:
    """Counts one phase and forwards reports to a callback."""

    def __init__(self, phase: str, total: int, done: int, callback: Callable | None, what="slide"):
        self.phase, self.total, self.done, self.what = phase, total, done, what
        self._start_done = done
        self._t0 = time.perf_counter()
        self._cb = callback
        self.report()

    def add(self, n: int) -> None:
        self.done += n
        self.report()

    def report(self) -> None:
        if self._cb is None:
            return
        dt = time.perf_counter() - self._t0
        rate = (self.done - self._start_done) / dt if dt > 0 else 0.0
        self._cb(Progress(self.phase, self.done, self.total, rate, dt, what=self.what))


def step(callback: Callable | None, phase: str) -> None:
    """Report the start of a phase that has no units."""
    if callback is not None:
        callback(Progress(phase))


class TqdmProgress:
    """A progress callback that draws a tqdm bar per counted phase and a line per step."""

    def __init__(self, **tqdm_kw):
        self._bar = None
        self._phase = None
        self._kw = tqdm_kw
        self._t0 = time.perf_counter()

    def __call__(self, p: Progress) -> None:
        from tqdm.auto import tqdm

        if p.phase != self._phase:
            self.close()
            self._phase = p.phase
            if p.phase in UNITS and p.total:
                self._bar = tqdm(
                    total=p.total, initial=p.done, unit=UNITS[p.phase], desc=p.phase,
                    file=sys.stderr, **self._kw,
                )  # fmt: skip
            elif p.phase in STEPS:
                # stderr, like the bars: stdout stays for results.
                t = time.perf_counter() - self._t0
                tqdm.write(f"[{t:6.1f} s] {STEPS[p.phase]} ...", file=sys.stderr)
            return
        if self._bar is not None:
            self._bar.update(p.done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
