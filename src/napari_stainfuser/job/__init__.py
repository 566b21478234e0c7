"""One whole-slide job: described (:class:`SlideJob`), then opened (:class:`OpenJob`).

Names load on first use, so describing and checking a job needs neither
torch nor dask.
"""

from importlib import import_module

_LAZY = {
    "SlideJob": ".spec",
    "OpenJob": ".open",
    "SlideSource": ".source",
    "open_source": ".source",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
