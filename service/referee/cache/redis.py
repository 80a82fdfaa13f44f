"""The shared second cache level: Redis, used by every process and replica.

A Redis problem never fails a reward: every call has a bounded timeout, and after a
failure a circuit breaker skips Redis for ``breaker_cooldown_s`` (the engine serves from
its own memory level and the scorers meanwhile), then tries again by itself. Each episode
is logged once, when it starts and when it ends, not per request.

Values are compact JSON of a successful, cacheable result; keys live under
``{namespace}:v{SCHEMA}:`` so a release that changes the value layout never reads old
entries. Writes are coalesced: results finished in the same loop iteration go out in one
pipelined round trip of ``SET key value EX ttl``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from referee.cache.breaker import Breaker
from referee.metrics import Metrics
from referee.scorers.base import ScoreResult

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["SCHEMA_VERSION", "RedisCache", "decode_result", "encode_result"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def encode_result(result: ScoreResult) -> bytes:
    record: dict[str, Any] = {"v": result.value}
    if result.aspects:
        record["a"] = result.aspects
    if result.steps is not None:
        record["s"] = result.steps
    if result.reason is not None:
        record["r"] = result.reason
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode()


def decode_result(raw: bytes | str) -> ScoreResult:
    """Raises ValueError on anything that is not a value this module wrote."""
    record = json.loads(raw)
    if not isinstance(record, dict) or "v" not in record:
        raise ValueError("not a cached result")
    value = record["v"]
    aspects = record.get("a", {})
    steps = record.get("s")
    reason = record.get("r")
    if not (value is None or isinstance(value, int | float)) or not isinstance(aspects, dict):
        raise ValueError("malformed cached result")
    if steps is not None and not isinstance(steps, list):
        raise ValueError("malformed cached steps")
    return ScoreResult(
        value=None if value is None else float(value),
        aspects={str(k): float(v) for k, v in aspects.items()},
        steps=None if steps is None else [float(x) for x in steps],
        reason=None if reason is None else str(reason),
    )


class RedisCache:
    level = "redis"

    def __init__(
        self,
        client: Redis,
        *,
        scorer: str,
        metrics: Metrics,
        namespace: str,
        ttl_s: int | None,
        op_timeout_s: float,
        breaker: Breaker,
    ) -> None:
        self._client = client
        self._prefix = f"{namespace}:v{SCHEMA_VERSION}:".encode()
        self._ttl_s = ttl_s
        self._timeout = op_timeout_s
        self._breaker = breaker
        self._errors = metrics.cache_errors.labels(scorer, self.level)
        self._pending: list[tuple[str, ScoreResult]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    def _key(self, key: str) -> bytes:
        return self._prefix + key.encode()

    async def get_many(self, keys: Sequence[str]) -> list[ScoreResult | None]:
        misses: list[ScoreResult | None] = [None] * len(keys)
        if not keys or not self._breaker.allows():
            return misses
        try:
            raw = await asyncio.wait_for(
                self._client.mget([self._key(k) for k in keys]), self._timeout
            )
        except Exception as exc:  # down, slow, refused, auth: all mean "no cache now"
            self._errors.inc()
            self._breaker.failed("read", exc)
            return misses
        self._breaker.succeeded()
        out: list[ScoreResult | None] = []
        for value in raw:
            if value is None:
                out.append(None)
                continue
            try:
                out.append(decode_result(value))
            except (ValueError, TypeError, RecursionError):
                self._errors.inc()  # garbage under our key: a miss, rewritten on finish
                out.append(None)
        return out

    def set_later(self, key: str, result: ScoreResult) -> None:
        """Queue a write; everything queued in this loop iteration goes in one pipeline."""
        if not self._pending:
            loop = asyncio.get_running_loop()
            loop.call_soon(self._start_flush)
        self._pending.append((key, result))

    def _start_flush(self) -> None:
        entries, self._pending = self._pending, []
        if not entries or not self._breaker.allows():
            return
        task = asyncio.get_running_loop().create_task(self._flush(entries))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self, entries: list[tuple[str, ScoreResult]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for key, result in entries:
            try:
                payload = encode_result(result)
            except ValueError:  # a non-finite value: fine in memory, not worth sharing
                continue
            pipe.set(self._key(key), payload, ex=self._ttl_s)
        try:
            # Off the request path: a write may take longer than a read before it counts
            # as a failure (large pipelines on a busy host).
            await asyncio.wait_for(pipe.execute(), self._timeout * 4)
        except Exception as exc:
            self._errors.inc()
            self._breaker.failed("write", exc)
            return
        self._breaker.succeeded()

    async def drain(self) -> None:
        """Wait for queued writes (tests, shutdown)."""
        self._start_flush()
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
