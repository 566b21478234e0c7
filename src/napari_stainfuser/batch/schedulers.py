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

On a cluster what travels is the job's description: each worker opens the
job once, in a worker plugin (fitting, detecting tissue and planning exactly
as this process did), checks that it arrived at the same fingerprint, and
keeps it for all its units. Units are plain tasks that write their own
output chunks, which never overlap, so no locking is needed. A worker that
dies has its units rescheduled elsewhere by dask; since units are
deterministic and commits are atomic, the output is unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from ..errors import ParameterError, StainFuserError, opt

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


try:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # distributed is optional; only cluster runs need it
    _WorkerPlugin = object


@dataclass
class WorkerRun:
    """What a worker is sent: the job, the fingerprint it must reproduce, and the stores."""

    job: object
    fingerprint: dict
    pyramid_path: str
    cache_path: str | None

    def open(self):
        from .run import open_units

        return open_units(self.job, self.fingerprint, self.pyramid_path, self.cache_path)


class JobPlugin(_WorkerPlugin):
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
        try:
            from distributed import Client, LocalCluster
        except ImportError as e:  # an optional dependency
            raise ParameterError(
                f"{opt('scheduler')}: dask.distributed is not installed "
                "(pip install 'napari-stainfuser[distributed]')"
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


def connect(choice: SchedulerChoice, connect_timeout: float = 5.0) -> OnCluster | None:
    """The cluster for ``choice`` (None: run in this process)."""
    if choice.kind == "threads":
        return None
    return OnCluster(choice, connect_timeout)
