"""Cheap, stable identities of inputs, for resume fingerprints and stainer identity."""

import hashlib
from pathlib import Path

import numpy as np


def array_digest(a) -> str:
    """Digest of an array's bytes, shape and dtype."""
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256(a.tobytes())
    h.update(f"{a.shape}{a.dtype}".encode())
    return h.hexdigest()[:16]


def file_digest(path: Path, edge: int = 1 << 20) -> str:
    """Identity of a possibly huge file: its size plus its first and last MiB."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(edge))
        if size > 2 * edge:
            f.seek(size - edge)
            h.update(f.read(edge))
    return h.hexdigest()[:16]
