"""The Ray Serve deployments: a scorer replica (one model, its own token-budget batcher)
and the ingress (the same FastAPI app and engine as `referee serve`)."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from referee.batching import DynamicBatcher
from referee.config import load_settings
from referee.engine import RewardEngine
from referee.grpc.servicer import RefereeServicer
from referee.http import build_app
from referee.ray._grpc import RayGrpc
from referee.ray._metrics import ray_backed_metrics
from referee.ray._remote import RemoteScorer
from referee.scorers import ScoreInput, Scorer, ScoreResult, scorer_class

__all__ = ["IngressReplica", "ScorerReplica"]


class ScorerReplica:
    """One replica of one model scorer: loads it, warms it up, batches what it gets by
    token budget across calls from every ingress replica."""

    async def __init__(self, config: dict[str, Any], name: str) -> None:  # type: ignore[misc]
        settings = load_settings(data=config)
        cfg = settings.scorers[name]
        cls = scorer_class(cfg.kind)
        self.scorer: Scorer = cls(name, cls.Options.model_validate(cfg.options))
        await self.scorer.setup()
        metrics = ray_backed_metrics(f"{name}-{os.getpid()}")
        self.scorer.bind_metrics(metrics)
        self.batcher = DynamicBatcher(self.scorer, settings.batching_for(name), metrics)
        self.batcher.start()
        await self.score([ScoreInput(id="warm-up", prompt="1+1?", response="\\boxed{2}",
                                     reference="2", group=None, messages=None,
                                     metadata=None)], None)  # fmt: skip

    async def ready(self) -> bool:
        return True

    async def process_id(self) -> int:
        """This replica's OS process (operators and tests use it to find a replica)."""
        return os.getpid()

    async def score(self, items: list[ScoreInput], timeout_s: float | None) -> list[ScoreResult]:
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        prepared = await self.scorer.prepare(items)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[ScoreResult]] = [loop.create_future() for _ in items]
        self.batcher.submit(list(zip(items, futures, strict=True)), deadline, prepared)
        return list(await asyncio.gather(*futures))


class IngressReplica:
    """The HTTP gateway: `build_app` around an engine whose model scorers are proxies to
    their deployments (rule and python scorers run here, in the ingress)."""

    async def __init__(self, config: dict[str, Any], handles: dict[str, Any]) -> None:  # type: ignore[misc]
        settings = load_settings(data=config)

        def place(name: str, scorer: Scorer) -> Scorer:
            handle = handles.get(name)
            return scorer if handle is None else RemoteScorer(scorer, handle, f"scorer-{name}")

        self.engine = RewardEngine(settings, scorer_factory=place)
        self._asgi = build_app(settings, engine=self.engine)
        self._asgi.state.reloader.refuse = (
            "live reloads are not available in Ray Serve mode yet: change the config and "
            "redeploy (`serve deploy` / the RayService), which rolls the replicas"
        )
        servicer = RefereeServicer(self.engine, self.engine.metrics, self._asgi.state.api_keys)
        self._grpc = RayGrpc(servicer)

    def __serve_build_asgi_app__(self) -> Any:
        return self._asgi

    # referee.v1 over Ray Serve's gRPC proxy (serve.start(grpc_options=...)): same servicer
    async def Score(self, request: Any, grpc_context: Any) -> Any:
        return await self._grpc.unary("Score", request, grpc_context)

    async def GetLimits(self, request: Any, grpc_context: Any) -> Any:
        return await self._grpc.unary("GetLimits", request, grpc_context)

    async def ScoreStream(
        self, requests: AsyncIterator[Any], grpc_context: Any
    ) -> AsyncIterator[Any]:
        async for response in self._grpc.stream(requests, grpc_context):
            yield response
