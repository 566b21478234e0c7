"""Writing files so that a reader (or a resumed run) sees the old file or the new one, never half.

The data goes to a temporary name in the destination folder, is flushed to
disk (fsync), and is renamed over the final name; the folder is then synced
so the rename itself survives a power cut. A failure removes the temporary,
and a file-system failure (read-only folder, disk full) becomes one
:class:`~napari_stainfuser.errors.SlideWriteError` line naming the file.

Every file the package writes whole (presets, run records, configs,
checkpoints, PNGs, manifests) goes through :func:`replace_atomic`.
"""

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import SlideWriteError, StainFuserError


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make a rename inside ``directory`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # Windows cannot open a folder; its renames are journalled anyway.
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the data itself is synced
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file written by someone else's writer (e.g. safetensors) to disk."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def replace_atomic(
    path: str | os.PathLike,
    write: Callable[[str], None],
    error: type[StainFuserError] = SlideWriteError,
) -> None:
    """Call ``write(tmp)`` on a temporary name next to ``path``, fsync it, rename it to ``path``.

    An ``OSError`` (from the folder, the writer or the rename) is raised as
    ``error`` with one line naming ``path``.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise error(f"{path}: cannot write: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    fsync_directory(path.parent)


def write_bytes_atomic(
    path: str | os.PathLike, data: bytes, error: type[StainFuserError] = SlideWriteError
) -> None:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    replace_atomic(path, write, error)


def write_json_atomic(
    path: str | os.PathLike, obj, error: type[StainFuserError] = SlideWriteError
) -> None:
    """Write JSON atomically; sorted keys, so equal content gives equal bytes."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), error)


def write_png_atomic(path: str | os.PathLike, image) -> None:
    """Write an H×W×3 (or H×W) uint8 array as a PNG atomically."""
    import numpy as np
    from PIL import Image

    def write(tmp: str) -> None:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")

    replace_atomic(path, write)
