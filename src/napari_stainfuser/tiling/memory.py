"""A thread-safe LRU of arrays bounded by total bytes, for anything kept in memory.

No zarr and no torch here: the synthetic slide and the napari layers use it too.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np


class ResultStore:
    """A thread-safe LRU of numpy arrays bounded by total bytes."""

    def __init__(self, max_bytes: int = 512 * 2**20):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            arr = self._items.get(key)
            if arr is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return arr

    def put(self, key: Hashable, arr) -> None:
        """Keep ``arr`` (an array, or anything with arrays in ``.tile`` and ``.extras``)."""
        for a in _arrays(arr):
            a.setflags(write=False)  # shared between readers
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= _nbytes(old)
            self._items[key] = arr
            self._bytes += _nbytes(arr)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= _nbytes(dropped)

    def discard(self, key: Hashable) -> None:
        """Forget ``key``, if it is kept."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= _nbytes(old)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def _arrays(value) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    return [value.tile, *value.extras.values()]


def _nbytes(value) -> int:
    return sum(a.nbytes for a in _arrays(value))
