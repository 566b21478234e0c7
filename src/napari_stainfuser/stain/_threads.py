"""A small worker pool for per-pixel CPU work.

torch's own intra-op parallelism (OpenMP) spins at a barrier after every
operation. Per-pixel colour maps are long chains of cheap element-wise
operations, and on a small, shared CPU those barriers cost more than the
arithmetic: measured on the 2-core CI machine under load, a 1 M-element
multiply-add went from ~3 ms on one thread to ~130 ms on two. So this pool's
workers set torch to one thread each (the setting is per OS thread) and we
parallelise over independent pixel chunks instead, which needs no barrier.
numpy's ``take`` releases the GIL and runs here too.
"""

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()
_local = threading.local()


def _init_worker() -> None:
    torch.set_num_threads(1)
    _local.in_pool = True


def n_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=n_workers(),
                thread_name_prefix="stainfuser-px",
                initializer=_init_worker,
            )
        return _pool


def in_pool() -> bool:
    return getattr(_local, "in_pool", False)


def single_threaded(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run ``fn`` on one pool worker (torch single-threaded) and wait for it."""
    if in_pool():
        return fn(*args, **kwargs)
    return _executor().submit(fn, *args, **kwargs).result()


def run_all(fn: Callable[[T], object], items: Iterable[T]) -> None:
    """Call ``fn`` on every item, spread over the workers; re-raises the first error."""
    items = list(items)
    if in_pool():
        for it in items:
            fn(it)
        return
    for f in [_executor().submit(fn, it) for it in items]:
        f.result()
