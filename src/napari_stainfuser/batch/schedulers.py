"""Where the units of a batch run execute: this process, or a dask cluster.

``scheduler`` takes:

- ``None`` or ``"threads"``: this process, a few threads (I/O and compute overlap);
- ``"local"`` or ``"local:N"``: a ``dask.distributed.LocalCluster`` of N
  single-threaded worker processes (default: one per CPU core);
- ``"tcp://host:port"``: an existing dask scheduler (its workers must see the
  slide and the output directory at the same paths);
- a ``distributed.Client``.

On a cluster each worker builds the stainer once, in a worker plugin, and
keeps it for all its units; units are plain tasks that write their own output
chunks, which never overlap, so no locking is needed. A worker that dies has
its units rescheduled elsewhere by dask; since units are deterministic and
commits are atomic, the output is unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from ..errors import ParameterError, StainFuserError
from .units import UNITS, OpenRun, RunContext

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
                raise ParameterError(f"scheduler: {scheduler!r} needs at least one worker")
            return SchedulerChoice("local", workers=n)
        if re.match(r"^(tcp|tls|ucx|inproc)://[^/\s]+$", s):
            return SchedulerChoice("address", address=s)
        raise ParameterError(
            f"scheduler: {scheduler!r} is not understood; use local, local:N or tcp://host:port"
        )
    if hasattr(scheduler, "submit") and hasattr(scheduler, "register_plugin"):
        return SchedulerChoice("client", client=scheduler)
    raise ParameterError(
        f"scheduler: expected a string or a dask Client, got {type(scheduler).__name__}"
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


def default_threads(device: str) -> int:
    """Units run side by side in this process: a few per GPU, one per CPU core on CPU."""
    if str(device).startswith("cuda"):
        return 2
    return max(1, min(8, os.cpu_count() or 1))


class InProcess:
    """Run units on a thread pool here, with a bounded number in flight."""

    def __init__(self, run: OpenRun, threads: int = 2):
        self.run = run
        self.threads = max(1, int(threads))

    def map(self, kind: str, items: Sequence, on_done: Callable[[int], None]) -> None:
        with torch_threads():
            self._map(kind, items, on_done)

    def _map(self, kind: str, items: Sequence, on_done: Callable[[int], None]) -> None:
        fn = UNITS[kind]
        pending: deque = deque()
        with ThreadPoolExecutor(self.threads, thread_name_prefix="stainfuser-batch") as pool:
            for item in items:
                pending.append(pool.submit(fn, self.run, item))
                while len(pending) >= 2 * self.threads:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        pending.remove(f)
                        on_done(f.result())
            for f in pending:
                on_done(f.result())

    def close(self) -> None:
        pass


try:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # distributed is optional; only cluster runs need it
    _WorkerPlugin = object


class StainerPlugin(_WorkerPlugin):
    """Builds the run (stainer included) once when a worker joins, and keeps it."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.run = None

    def setup(self, worker):
        import torch

        torch.set_num_threads(TORCH_THREADS)
        self.run = self.ctx.open()

    def teardown(self, worker):
        self.run = None


def _remote(kind: str, item, plugin: str) -> int:
    from distributed import get_worker

    p = get_worker().plugins[plugin]
    if p.run is None:  # setup failed or raced: build it now
        p.run = p.ctx.open()
    return UNITS[kind](p.run, item)


class OnCluster:
    """Run units as tasks on a dask.distributed cluster."""

    def __init__(self, choice: SchedulerChoice, connect_timeout: float = 5.0):
        """Start or connect to the cluster: done first, so a bad address fails
        before any slow work."""
        try:
            from distributed import Client, LocalCluster
        except ImportError as e:  # an optional dependency
            raise ParameterError(
                "scheduler: dask.distributed is not installed (pip install 'napari-stainfuser[distributed]')"
            ) from e
        self._cluster = None
        self._own_client = True
        if choice.kind == "local":
            self._cluster = LocalCluster(
                n_workers=choice.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            self.client = Client(self._cluster)
        elif choice.kind == "address":
            try:
                self.client = Client(choice.address, timeout=f"{connect_timeout}s")
            except (OSError, TimeoutError) as e:
                raise StainFuserError(
                    f"scheduler: cannot reach the dask scheduler at {choice.address} "
                    f"within {connect_timeout:g} s ({type(e).__name__})"
                ) from None
        else:
            self.client = choice.client
            self._own_client = False
        self.plugin_name = None

    def start(self, ctx: RunContext) -> OnCluster:
        """Have every worker (and any that joins later) build the run once."""
        self.plugin_name = f"napari-stainfuser-{os.getpid()}-{id(ctx):x}"
        self.client.register_plugin(StainerPlugin(ctx), name=self.plugin_name)
        return self

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def map(self, kind: str, items: Sequence, on_done: Callable[[int], None]) -> None:
        from distributed import as_completed

        futures = self.client.map(
            _remote, [kind] * len(items), list(items), [self.plugin_name] * len(items), pure=False
        )
        try:
            for fut in as_completed(futures):
                on_done(fut.result())
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        # The cluster may already be gone; then there is nothing to undo.
        if self.plugin_name is not None:
            with contextlib.suppress(Exception):
                self.client.unregister_worker_plugin(self.plugin_name)
            self.plugin_name = None
        if self._own_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def connect(choice: SchedulerChoice, connect_timeout: float = 5.0) -> OnCluster | None:
    """The cluster for ``choice`` (None: run in this process)."""
    if choice.kind == "threads":
        return None
    return OnCluster(choice, connect_timeout)
