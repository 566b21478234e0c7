"""Running a job's units on a dask.distributed cluster.

What travels is the job's description: each worker opens the job once, in a
worker plugin (fitting, detecting tissue and planning exactly as the client
did), checks that it arrived at the same fingerprint, and keeps it for all
its units. Units are plain tasks that write their own output chunks, which
never overlap, so no locking is needed. A worker that dies has its units
rescheduled elsewhere by dask; since units are deterministic and commits are
atomic, the output is unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from distributed.diagnostics.plugin import WorkerPlugin

from ..errors import ParameterError, StainFuserError, opt
from .schedulers import TORCH_THREADS, SchedulerChoice


@dataclass
class WorkerRun:
    """What a worker is sent: the job, what opening it found, the fingerprint the
    worker must reproduce, and the stores."""

    job: object
    state: object
    fingerprint: dict
    pyramid_path: str
    cache_path: str | None

    def open(self):
        from .run import open_units

        opened = self.job.open(state=self.state)
        return open_units(self.job, self.fingerprint, self.pyramid_path, self.cache_path, opened)


class JobPlugin(WorkerPlugin):
    """Opens the job once when a worker joins, and keeps its units."""

    def __init__(self, run: WorkerRun):
        self.run = run
        self.units = None

    def setup(self, worker):
        import torch

        torch.set_num_threads(TORCH_THREADS)
        self.units = self.run.open()

    def teardown(self, worker):
        self.units = None


def _remote(kind: str, item, plugin: str) -> int:
    from distributed import get_worker

    p = get_worker().plugins[plugin]
    if p.units is None:  # setup failed or raced: open it now
        p.units = p.run.open()
    return p.units.run(kind, item)


def probe_scheduler(address: str, timeout: float) -> None:
    """Fail within ``timeout`` unless a dask scheduler answers at ``address``.

    A dask comm sends its handshake as soon as a connection opens; a service
    that is not a dask scheduler (a web server, say) sends nothing and would
    leave dask's own handshake waiting without bound.
    """
    m = re.match(r"^tcp://\[?([^\]]+?)\]?:(\d+)$", address)
    if m is None:
        return  # other transports: dask's own timeout applies
    host, port = m.group(1), int(m.group(2))
    what = f"{opt('scheduler')}: cannot reach the dask scheduler at {address}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            first = sock.recv(8)
    except TimeoutError:
        raise StainFuserError(
            f"{what}: something listens there but sent no dask handshake within "
            f"{timeout:g} s; is it a dask scheduler?"
        ) from None
    except OSError as e:
        raise StainFuserError(
            f"{what} within {timeout:g} s ({e.strerror or type(e).__name__})"
        ) from None
    if not first:
        raise StainFuserError(
            f"{what}: the service there closed the connection; is it a dask scheduler?"
        )


class OnCluster:
    """Run units as tasks on a dask.distributed cluster."""

    def __init__(self, choice: SchedulerChoice, connect_timeout: float = 5.0):
        """Start or connect to the cluster: done first, so a bad address fails
        before any slow work."""
        from distributed import Client, LocalCluster

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
            probe_scheduler(choice.address, connect_timeout)
            try:
                self.client = Client(choice.address, timeout=f"{connect_timeout}s")
            except (OSError, TimeoutError) as e:
                raise StainFuserError(
                    f"{opt('scheduler')}: cannot reach the dask scheduler at {choice.address} "
                    f"within {connect_timeout:g} s ({type(e).__name__})"
                ) from None
        else:
            self.client = choice.client
            self._own_client = False
        self.plugin_name = None

    def start(self, run: WorkerRun) -> OnCluster:
        """Have every worker (and any that joins later) open the job once."""
        self.plugin_name = f"napari-stainfuser-{os.getpid()}-{id(run):x}"
        self.client.register_plugin(JobPlugin(run), name=self.plugin_name)
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


def connect(choice: SchedulerChoice, connect_timeout: float = 5.0) -> OnCluster:
    try:
        import distributed  # noqa: F401
    except ImportError as e:  # an optional dependency
        raise ParameterError(
            f"{opt('scheduler')}: dask.distributed is not installed "
            "(pip install 'napari-stainfuser[distributed]')"
        ) from e
    return OnCluster(choice, connect_timeout)


__all__ = ["JobPlugin", "OnCluster", "WorkerRun", "connect", "probe_scheduler"]
