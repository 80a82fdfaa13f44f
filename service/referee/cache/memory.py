"""Score caches. Keys are per scorer: hash(scorer fingerprint, the fields it reads)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from referee.media.images import ImageData
from referee.scorers.base import ScoreInput, ScoreResult, canonical_json

__all__ = ["MemoryCache", "NullCache", "ScoreCache", "cache_key"]


def cache_key(fingerprint: str, item: ScoreInput, fields: Sequence[str]) -> str:
    """sha256 over the fingerprint and each field's own sha256, taken over the field's name
    and value length-prefixed so no two different inputs share a key. Text is hashed as it
    is (the hot path); structured fields (messages, metadata) as canonical JSON; images as
    the sha256 of their bytes (the same image sent as a data URL or as a path gives the
    same key). A field's digest is computed once per item and shared by every scorer that
    reads it."""
    memo = item.digests
    h = hashlib.sha256(fingerprint.encode())
    for name in fields:
        digest = memo.get(name)
        if digest is None:
            value = getattr(item, name)
            if value is None:
                data = b"\x00"
            elif isinstance(value, str):
                data = b"s" + value.encode("utf-8", "surrogatepass")
            elif isinstance(value, tuple) and all(isinstance(v, ImageData) for v in value):
                data = b"i" + ",".join(image.sha256 for image in value).encode()
            else:
                data = b"j" + canonical_json(value).encode("utf-8", "surrogatepass")
            field_hash = hashlib.sha256(b"%d:%s=%d:" % (len(name), name.encode(), len(data)))
            field_hash.update(data)
            digest = memo[name] = field_hash.digest()
        h.update(digest)
    return h.hexdigest()


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
