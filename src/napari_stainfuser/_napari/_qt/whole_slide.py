"""A dock widget's whole-slide run: its worker, progress bar, status line and Open button.

Both dock widgets start batch runs the same way: the run goes to a napari
thread worker, its progress reports come back through a queued signal, and
Cancel makes the next report raise, which stops the run at a tile group
boundary. The output folder keeps what was done, so the same output again
continues the run.
"""

from __future__ import annotations

from pathlib import Path

from napari.utils import progress as napari_progress
from napari.utils.notifications import show_info
from qtpy.QtCore import QObject, Signal

from .threads import Cancelled, ProgressFeed, in_thread

RESUME_HINT = "cancelled: run Whole slide… again on the same output to continue it"


class WholeSlideRun(QObject):
    """Start, report, cancel and finish one widget's whole-slide runs.

    what: the words that name the run in the progress bar ("stain
    normalization", "virtual IHC"); status: the widget's status label;
    open_button: shown on success; on_failed(exc): the widget's way of showing
    an expected failure. One run at a time: a cancelled run writes until its
    next tile group, and a second run into the same output meanwhile would
    race it.
    """

    progressed = Signal(object)  # a Progress, from the worker thread

    def __init__(self, what: str, status, open_button, on_failed):
        super().__init__()
        self.what = what
        self.status = status
        self.open_button = open_button
        self.on_failed = on_failed
        self.worker = None
        self.bar = None
        self.cancelled = False
        self.closed = False
        self.result_path: Path | None = None
        self.progressed.connect(self._progress)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, out, run) -> bool:
        """``run(report)`` in a thread worker; it returns the written path. ``out`` is
        the run's OutputSpec (its work folder says whether this continues a run).
        False, with the reason in the status line, while an earlier run still runs."""
        if self.running:
            self.status.setText(
                "a whole-slide run is still stopping or running; start again when it has ended"
            )
            return False
        self.cancelled = False
        resuming = out.work.exists()

        def report(p):
            if self.cancelled:
                raise Cancelled
            self.progressed.emit(p)

        self.bar = ProgressFeed(napari_progress(total=0, desc=f"{self.what}: whole slide"))
        self.worker = in_thread(lambda: run(report), self._done, self._failed)
        self.open_button.setVisible(False)
        self.status.setText(f"whole slide → {out.path.name}{' (resumed)' if resuming else ''} …")
        return True

    def cancel(self) -> None:
        """Stop at the next tile group; the output can be continued."""
        self.cancelled = True

    def close(self) -> None:
        """The dock is going away: stop the run, and touch none of its widgets again."""
        self.cancelled = self.closed = True

    def _progress(self, p) -> None:
        if self.worker is None or self.closed:
            return  # a report queued before the run ended, or the dock is gone
        self.status.setText(
            f"whole slide: {p.phase} {p.done}/{p.total}" if p.total else f"whole slide: {p.phase}"
        )
        # napari's bar processes events: _done may run inside.
        if self.bar is not None:
            self.bar.advance(p, f"{self.what}: {p.phase}")

    def _close_bar(self) -> None:
        bar, self.bar = self.bar, None
        if bar is not None:
            bar.close()

    def _done(self, path) -> None:
        self.worker = None
        self._close_bar()
        self.result_path = Path(path)
        if self.closed:
            return
        self.open_button.setText(f"Open {self.result_path.name}")
        self.open_button.setVisible(True)
        self.status.setText(f"wrote {path}")
        show_info(f"wrote {path}")

    def _failed(self, exc) -> None:
        self.worker = None
        self._close_bar()
        if self.closed:
            return
        if isinstance(exc, Cancelled):
            self.status.setText(RESUME_HINT)
            return
        self.on_failed(exc)
