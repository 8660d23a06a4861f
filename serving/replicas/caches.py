"""The replicas' in-memory caches: one bounded LRU, by entries and by bytes, for image encodings and dialogues.

Every cache a replica keeps is a ``BoundedLRU``. What it holds is patient data (a picture, its embedding, a
dialogue's key/value cache), so besides its bounds it can ``retain`` only the keys the store still has: the
replicas sweep their caches every few seconds (``serving.replicas.deployments``), and what belonged to a
deleted or expired session leaves them within that interval.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import torch

K = TypeVar("K")
V = TypeVar("V")


class BoundedLRU(Generic[K, V]):
    """At most ``max_entries`` values and ``max_bytes`` bytes (as ``size_of`` counts them), least recently used
    out first. Thread-safe: a replica's event loop and its worker threads share it."""

    def __init__(self, *, max_entries: int, max_bytes: int, size_of: Callable[[V], int]):
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"a cache needs room: max_entries={max_entries}, max_bytes={max_bytes}")
        self.max_entries, self.max_bytes, self.size_of = max_entries, max_bytes, size_of
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key][0]

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` (or count its size again) as the most recent; a value larger than the whole cache
        is not kept."""
        size = self.size_of(value)
        with self._lock:
            self._drop(key)
            if size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._items)))

    def pop(self, key: K) -> V | None:
        with self._lock:
            item = self._items.get(key)
            self._drop(key)
            return None if item is None else item[0]

    def retain(self, live: Callable[[list[K]], Iterable[K]]) -> int:
        """Drop every key that ``live`` (given all the keys) does not return; the number dropped. ``live`` runs
        outside the lock (it asks the store), so keys added meanwhile are kept."""
        keys = self.keys()
        gone = set(keys) - set(live(keys)) if keys else set()
        with self._lock:
            for key in gone:
                self._drop(key)
        return len(gone)

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: K) -> bool:
        return key in self._items

    def _drop(self, key: K) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= item[1]


def tensor_bytes(*tensors: torch.Tensor | None) -> int:
    """Bytes held by these tensors' elements (None counts 0)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
