"""Work off the UI thread for the dock widgets, and how its failures are shown."""

from __future__ import annotations

from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer

from ...errors import StainFuserError

FEED_MS = 250


def notify_failure(exc: BaseException) -> None:
    """An expected failure as one line; anything else says it is unexpected."""
    if isinstance(exc, StainFuserError):
        show_error(" ".join(str(exc).split()))
    else:
        show_error(f"unexpected error: {type(exc).__name__}: {' '.join(str(exc).split())}")


class Cancelled(Exception):
    """Raised inside a whole-slide run's progress callback when the user cancels."""


class Failed:
    """An expected failure carried back from a worker thread as a value, so napari
    does not report it as a crash with a traceback."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def in_thread(fn, on_done, on_failed):
    """Run ``fn()`` in a napari thread worker; ``on_done(result)`` or ``on_failed(exc)``
    for an expected failure (a StainFuserError, a cancel) on the main thread. Anything
    else is a bug, and napari reports it as one."""

    @thread_worker
    def work():
        try:
            return fn()
        except (StainFuserError, Cancelled) as exc:
            return Failed(exc)

    def done(result):
        if isinstance(result, Failed):
            on_failed(result.exc)
        else:
            on_done(result)

    worker = work()
    worker.returned.connect(done)
    worker.start()
    return worker


class ProgressFeed:
    """A napari progress bar fed with Progress reports, at most once per FEED_MS.

    napari's bar runs the event loop on every change of its value or
    description (``QApplication.processEvents``), so a bar moved at the rate
    tiles land draws the canvas inside each report. The first report shows at
    once, later ones within FEED_MS, and the last one always.
    """

    def __init__(self, bar):
        self.bar = bar
        self._latest = None
        self._description = None
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(FEED_MS)
        self._timer.timeout.connect(self._show)

    def advance(self, p, description: str) -> None:
        self._latest = (p, description)
        if not self._timer.isActive():
            self._show()

    def _show(self) -> None:
        latest, self._latest = self._latest, None
        if latest is None or self.bar is None:
            return
        p, description = latest
        self._timer.start()  # the next report waits for it
        bar = self.bar
        if bar.total != max(p.total, 1):
            bar.total = max(p.total, 1)
        if description != self._description:
            self._description = description
            bar.set_description(description)
            if self.bar is None:  # closed inside: napari's bar processes events
                return
        if p.done != bar.n:
            bar.update(p.done - bar.n)  # the bar's value moves on update(), not on n

    def close(self) -> None:
        self._timer.stop()
        self._show()  # the last report, if it was still waiting
        bar, self.bar = self.bar, None
        if bar is not None:
            bar.close()
