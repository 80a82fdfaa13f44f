"""Score caches. Keys are per scorer: hash(scorer fingerprint, the fields it reads)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from referee.scorers.base import ScoreInput, ScoreResult, canonical_json

__all__ = ["MemoryCache", "NullCache", "ScoreCache", "cache_key"]


def cache_key(fingerprint: str, item: ScoreInput, fields: Sequence[str]) -> str:
    payload = canonical_json([fingerprint, item.field_values(fields)])
    return hashlib.sha256(payload.encode()).hexdigest()


class ScoreCache(Protocol):
    level: str

    def get_many(self, keys: Sequence[str]) -> list[ScoreResult | None]: ...

    def set_many(self, entries: Sequence[tuple[str, ScoreResult]]) -> None: ...


class MemoryCache:
    """An in-process LRU, bounded by entry count."""

    level = "memory"

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, ScoreResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get_many(self, keys: Sequence[str]) -> list[ScoreResult | None]:
        out: list[ScoreResult | None] = []
        for key in keys:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            out.append(value)
        return out

    def set_many(self, entries: Sequence[tuple[str, ScoreResult]]) -> None:
        if self.max_entries <= 0:
            return
        for key, value in entries:
            self._data[key] = value
            self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)


class NullCache:
    level = "none"

    def get_many(self, keys: Sequence[str]) -> list[ScoreResult | None]:
        return [None] * len(keys)

    def set_many(self, entries: Sequence[tuple[str, ScoreResult]]) -> None:
        return None
