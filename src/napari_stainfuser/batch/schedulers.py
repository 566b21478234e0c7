"""Where the units of a run execute: this process, or a dask cluster.

``scheduler`` (dask's word for it) takes:

- ``None`` or ``"threads"``: this process. Tiles are read by loader threads,
  stained by the :class:`~napari_stainfuser.engine.Engine` (the same device
  worker the napari layer uses) and written by writer threads;
- ``"local"`` or ``"local:N"``: a ``dask.distributed.LocalCluster`` of N
  single-threaded worker processes (default: one per CPU core);
- ``"tcp://host:port"``: an existing dask scheduler (its workers must see the
  slide and the output directory at the same paths);
- a ``distributed.Client``.

On a cluster what travels is the job's description (see :mod:`.cluster`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from ..errors import ParameterError, opt

_LOCAL = re.compile(r"^local(?::(\d+))?$")


@dataclass(frozen=True)
class SchedulerChoice:
    kind: str  # "threads", "local", "address", "client"
    workers: int | None = None
    address: str | None = None
    client: object = None


def parse_scheduler(scheduler) -> SchedulerChoice:
    """Validate a ``scheduler`` value (see module doc); ParameterError if malformed."""
    if scheduler is None or scheduler in ("threads", "sync"):
        return SchedulerChoice("threads")
    if isinstance(scheduler, str):
        s = scheduler.strip()
        m = _LOCAL.match(s)
        if m:
            n = int(m.group(1)) if m.group(1) else (os.cpu_count() or 1)
            if n < 1:
                raise ParameterError(f"{opt('scheduler')}: {scheduler!r} needs at least one worker")
            return SchedulerChoice("local", workers=n)
        if re.match(r"^(tcp|tls|ucx|inproc)://[^/\s]+$", s):
            return SchedulerChoice("address", address=s)
        raise ParameterError(
            f"{opt('scheduler')}: {scheduler!r} is not understood; use local, local:N or "
            "tcp://host:port"
        )
    if hasattr(scheduler, "submit") and hasattr(scheduler, "register_plugin"):
        return SchedulerChoice("client", client=scheduler)
    raise ParameterError(
        f"{opt('scheduler')}: expected a string or a dask Client, got {type(scheduler).__name__}"
    )


# Intra-op threads torch uses for a unit, here and on every dask worker. A
# model's floating-point reductions depend on how many threads share them, so
# fixing the number is what makes a distributed run reproduce a
# single-process one bit for bit. Parallelism comes from running units side
# by side instead.
TORCH_THREADS = 1


@contextlib.contextmanager
def torch_threads(n: int = TORCH_THREADS):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def device_workers(device: str) -> int:
    """Device threads in this process: one per GPU, one per CPU core on a CPU."""
    if str(device).startswith(("cuda", "mps")):
        return 1
    return max(1, min(8, os.cpu_count() or 1))


class InProcess:
    """Run units here: loader threads read, the engine stains, writer threads commit."""

    def __init__(self, units, device: str):
        self.units = units
        self.workers = device_workers(device)

    def map(self, kind: str, items: Sequence, on_done: Callable[[int], None]) -> None:
        if kind == "blend":
            self._pool_map(self.units.blend, items, on_done)
            return
        from ..engine import BACKGROUND, Engine

        units = self.units
        limit = 2 * self.workers + 2  # groups in flight: enough to keep every stage busy
        with (
            Engine(
                units.stainer, workers=self.workers, loaders=2, name="stainfuser-batch"
            ) as engine,
            ThreadPoolExecutor(2, thread_name_prefix="stainfuser-write") as writer,
        ):
            pending: deque[Future] = deque()
            for n, group in enumerate(items):
                box: dict = {}

                def load(group=group, box=box):
                    box["loaded"] = units.load(kind, group)
                    return box["loaded"].items

                stained = engine.submit_group((kind, n), load, len(group), BACKGROUND)
                pending.append(writer.submit(_commit, units, kind, group, box, stained))
                while len(pending) >= limit:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        pending.remove(f)
                        on_done(f.result())
            for f in pending:
                on_done(f.result())

    def _pool_map(self, fn, items, on_done) -> None:
        pending: deque = deque()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="stainfuser-blend") as pool:
            for item in items:
                pending.append(pool.submit(fn, item))
                while len(pending) >= 2 * self.workers:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        pending.remove(f)
                        on_done(f.result())
            for f in pending:
                on_done(f.result())

    def close(self) -> None:
        pass


def _commit(units, kind, group, box, stained: Future) -> int:
    outputs = stained.result()  # raises the stainer's error here, in the caller's map
    return units.commit(kind, group, box["loaded"], outputs)


def connect(choice: SchedulerChoice, connect_timeout: float = 5.0):
    """The cluster for ``choice`` (an :class:`.cluster.OnCluster`), or None: run in this process."""
    if choice.kind == "threads":
        return None
    from .cluster import connect as connect_cluster

    return connect_cluster(choice, connect_timeout)
