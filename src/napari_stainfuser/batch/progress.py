"""Progress of a batch run: tiles done, tiles per second, time left."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchProgress:
    """One progress report.

    phase: "stain" (tiles through the stainer), "blend" (output chunks
        assembled from stained tiles), "pyramid" (lower levels), "assemble"
        (OME-TIFF written), "done".
    done, total: units of this phase (tiles, or output chunks for "blend");
        ``done`` counts work found finished by a resumed run too.
    rate: units per second over this session's work in the phase.
    """

    phase: str
    done: int
    total: int
    rate: float
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        if self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)


class Tracker:
    """Counts one phase and forwards reports to a callback."""

    def __init__(self, phase: str, total: int, done: int, callback: Callable | None):
        self.phase, self.total, self.done = phase, total, done
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
        self._cb(BatchProgress(self.phase, self.done, self.total, rate, dt))


class TqdmProgress:
    """A progress callback that draws a tqdm bar per phase (tiles, tiles/s, ETA)."""

    UNITS = {"stain": "tile", "blend": "chunk"}
    STEPS = {"pyramid": "building the lower pyramid levels", "assemble": "writing the OME-TIFF"}

    def __init__(self, **tqdm_kw):
        self._bar = None
        self._phase = None
        self._kw = tqdm_kw

    def __call__(self, p: BatchProgress) -> None:
        from tqdm.auto import tqdm

        if p.phase != self._phase:
            self.close()
            self._phase = p.phase
            if p.phase in self.UNITS:
                self._bar = tqdm(
                    total=p.total, initial=p.done, unit=self.UNITS[p.phase], desc=p.phase,
                    **self._kw,
                )  # fmt: skip
            elif p.phase in self.STEPS:
                # stderr, like the bars: stdout stays for results.
                tqdm.write(self.STEPS[p.phase] + " ...", file=sys.stderr)
            return
        if self._bar is not None:
            self._bar.update(p.done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
