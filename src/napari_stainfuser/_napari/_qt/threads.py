"""Work off the UI thread for the dock widgets, and how its failures are shown."""

from __future__ import annotations

from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error

from ...errors import StainFuserError


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


def advance(bar, p, description: str) -> None:
    """Move a napari progress bar (if any) to a Progress report."""
    if bar is not None:
        bar.total = max(p.total, 1)
        bar.n = p.done
        bar.set_description(description)
        bar.refresh()
