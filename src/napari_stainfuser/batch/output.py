"""Where a whole-slide run writes: the output's options, its work folder and its lock.

Everything here is checked before any pixel is read: the output format and
its compression and quality, whether an existing output may be replaced
(``overwrite`` replaces our own outputs, never a folder of other files, and
never the input), whether another run is writing the same output right now,
and whether the folder can be written at all.

A run keeps its state in a hidden work folder next to the output,
``.<name>.stainfuser-run/`` (``<name>`` without the .ome.tif/.ome.zarr
ending, so the output format may change on ``resume``). A lock file beside
it, held with ``flock`` for as long as the run lives, tells a second run
that the first is still going; the operating system drops the lock when a
run dies, so a killed run never blocks its own resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import SlideWriteError, opt
from ..slide.formats import check_compression, check_quality, output_format, output_stem

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked against each other
    fcntl = None


@dataclass(frozen=True)
class OutputSpec:
    """A checked output: absolute path, format, compression and JPEG quality.

    These are output-only options: they do not change the stained pixels,
    so a resumed run may change them.
    """

    path: Path
    format: str
    compression: str | None
    quality: int

    @classmethod
    def create(cls, path, compression="auto", quality=90) -> OutputSpec:
        path = Path(path).expanduser().absolute()
        fmt = output_format(path)
        return cls(path, fmt, check_compression(fmt, compression), check_quality(quality))

    @property
    def work(self) -> Path:
        return work_dir(self.path)


def work_dir(output: Path) -> Path:
    """Where an (interrupted) run for ``output`` keeps its state."""
    output = Path(output).absolute()
    return output.parent / f".{output_stem(output)}.stainfuser-run"


def _is_zarr_store(path: Path) -> bool:
    return any((path / f).is_file() for f in ("zarr.json", ".zgroup", ".zarray", ".zattrs"))


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


class RunLock:
    """An exclusive lock on one output, held while a run lives (see the module doc)."""

    def __init__(self, output: Path):
        self.path = work_dir(output).with_name(work_dir(output).name + ".lock")
        self._fd: int | None = None

    def acquire(self, output: Path) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise SlideWriteError(
                f"{output}: cannot write in {output.parent}: {e.strerror or e}"
            ) from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise SlideWriteError(
                    f"{output}: another run is writing it now ({holder}); wait for it to finish "
                    "or stop it first"
                ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": " ".join(sys.argv)[:500]}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing drops the flock
        self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"]))
        return f"pid {info['pid']} on {info['host']}, started {started}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a run whose details could not be read"


def claim(output: OutputSpec, inputs: list[str], *, resume: bool, overwrite: bool) -> RunLock:
    """Check that ``output`` may be written now and lock it; raises before any work.

    inputs: paths the job reads (slide, target); the output may be none of them.
    """
    check_output(output, inputs, resume=resume, overwrite=overwrite)
    path = output.path
    lock = RunLock(path)
    lock.acquire(path)
    try:
        work = output.work
        if work.exists() and not resume:
            if not overwrite:
                raise SlideWriteError(
                    f"{path}: an interrupted run left {work.name}; pass {opt('resume', True)} to "
                    f"continue it or {opt('overwrite', True)} to start again"
                )
            shutil.rmtree(work)
    except BaseException:
        lock.release()
        raise
    return lock


def check_output(output: OutputSpec, inputs: list[str], *, resume: bool, overwrite: bool):
    """What :func:`claim` checks before it locks: the folder, the inputs, an
    existing output. Light, so the command line says it before anything loads."""
    path = output.path
    if not path.parent.is_dir():
        raise SlideWriteError(f"{path}: directory {path.parent} does not exist")
    for given in inputs:
        p = Path(given)
        if _same(path, p) or (p.is_dir() and path.resolve().is_relative_to(p.resolve())):
            raise SlideWriteError(f"{path}: is the input {p}; choose another output path")
    if path.exists():
        if not (overwrite or resume):
            raise SlideWriteError(
                f"{path}: already exists (pass {opt('overwrite', True)} to replace it)"
            )
        want_dir = output.format == "ome-zarr"
        if path.is_dir() != want_dir:
            kind = "a directory" if path.is_dir() else "a file"
            raise SlideWriteError(f"{path}: exists and is {kind}; refusing to replace it")
        if want_dir and not _is_zarr_store(path):
            raise SlideWriteError(
                f"{path}: exists and is not a zarr store (a folder of other files); "
                "refusing to replace it"
            )
