"""A scorer that lives in another Ray Serve deployment, as the ingress's engine sees it:
same name, kind, fingerprint and cache fields as the real one (cache keys agree across
modes), scoring by a call to the deployment's replicas."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from referee.scorers.base import BATCH_DEADLINE, ScoreInput, Scorer, ScoreResult

if TYPE_CHECKING:
    from referee.metrics import Metrics

__all__ = ["RemoteScorer"]

log = logging.getLogger(__name__)

# A replica that dies mid-batch fails the call; the batch goes to another replica this
# many more times before its items get a per-item error. Scoring is idempotent, and each
# item's future is answered once, so a retried item is never answered twice.
_RETRIES = 2


class RemoteScorer(Scorer):
    batch_order = "arrival"  # the replica packs by length; the ingress only forwards
    default_batching: ClassVar[dict[str, object]] = {
        "max_wait_ms": 1.0, "max_batch_size": 256, "max_concurrent_batches": 8,
    }  # fmt: skip

    def __init__(self, local: Scorer, handle: Any, deployment: str, revision: int = 0) -> None:
        super().__init__(local.name, local.options)
        self.local = local  # never set up here: the replicas load the model
        self.kind = local.kind  # type: ignore[misc]
        self.handle = handle
        self.deployment = deployment
        self.revision = revision  # the version the replicas answer with (live reloads)
        self._ready = False
        self._retries: Any = None

    def bind_metrics(self, metrics: Metrics) -> None:
        self._retries = metrics.scorer_call_retries.labels(self.name)

    def fingerprint(self) -> str:
        return self.local.fingerprint()

    def cache_fields(self) -> tuple[str, ...]:
        return self.local.cache_fields()

    def cost(self, item: ScoreInput) -> int:
        return self.local.cost(item)

    async def setup(self) -> None:
        await self.handle.ready.remote()  # one replica loaded and warmed up
        self._ready = True

    def health(self) -> dict[str, object]:
        return {"ready": self._ready, "deployment": self.deployment, "revision": self.revision}

    async def score_batch(self, items: Sequence[ScoreInput]) -> list[ScoreResult]:
        deadline = BATCH_DEADLINE.get()
        last: Exception | None = None
        for attempt in range(_RETRIES + 1):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                results: list[ScoreResult] = await self.handle.score.remote(
                    list(items), remaining, self.revision
                )
                return results
            except Exception as exc:  # a replica died or was restarted mid-batch
                last = exc
                log.warning("scorer %s: call to %s failed (attempt %d): %r", self.name,
                            self.deployment, attempt + 1, exc)  # fmt: skip
                if attempt < _RETRIES and self._retries is not None:
                    self._retries.inc()
        message = f"scorer deployment {self.deployment!r} failed: {type(last).__name__}"
        return [ScoreResult.failed(message, "replica_failed") for _ in items]
