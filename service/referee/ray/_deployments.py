"""The Ray Serve deployments: a scorer replica (one model, its own token-budget batcher),
the ingress (the same FastAPI app and engine as `referee serve`) and the group owner.

Group assembly needs one place per group: with several ingress replicas, a group's items
(one rollout per request) reach different replicas. So an ingress replica does not
assemble: a request that holds part of a group goes whole to the ``groups`` deployment,
one replica (``GroupOwnerReplica``), whose engine assembles, scores (its model scorers
are the same proxies to the scorer deployments) and answers. Requests whose groups are
whole, and pipelines without group steps, never leave the ingress."""

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
from referee.errors import ErrorKind, RefereeError
from referee.grpc.servicer import RefereeServicer
from referee.http import build_app
from referee.ray._grpc import RayGrpc
from referee.ray._metrics import ray_backed_metrics
from referee.ray._remote import RemoteScorer
from referee.scorers import ScoreInput, Scorer, ScoreResult, scorer_class
from referee_client.schema import RewardRequest, RewardResponse

__all__ = ["GroupOwnerReplica", "IngressReplica", "ScorerReplica"]


def _placer(handles: dict[str, Any]) -> Any:
    def place(name: str, scorer: Scorer) -> Scorer:
        handle = handles.get(name)
        return scorer if handle is None else RemoteScorer(scorer, handle, f"scorer-{name}")

    return place


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

    async def __init__(self, config: dict[str, Any], handles: dict[str, Any],  # type: ignore[misc]
                       groups: Any = None) -> None:  # fmt: skip
        settings = load_settings(data=config)
        owner = None
        if groups is not None:

            async def owner(request: RewardRequest) -> RewardResponse:
                answer = await groups.score.remote(request.model_dump(mode="json"))
                if "error" in answer:
                    e = answer["error"]
                    raise RefereeError(ErrorKind(e["kind"]), e["message"], param=e["param"],
                                       retry_after_s=e["retry_after_s"])  # fmt: skip
                return RewardResponse.model_validate(answer["response"])

        self.engine = RewardEngine(settings, scorer_factory=_placer(handles), group_owner=owner)
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


class GroupOwnerReplica:
    """The one replica that assembles groups sent over several requests (see the module
    docstring). Errors come back as data: a RefereeError does not survive pickling."""

    async def __init__(self, config: dict[str, Any], handles: dict[str, Any]) -> None:  # type: ignore[misc]
        settings = load_settings(data=config)
        self.engine = RewardEngine(settings, scorer_factory=_placer(handles))
        await self.engine.start()

    async def score(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self.engine.score(RewardRequest.model_validate(request))
        except RefereeError as exc:
            return {"error": {"kind": exc.kind.value, "message": exc.message, "param": exc.param,
                              "retry_after_s": exc.retry_after_s}}  # fmt: skip
        return {"response": response.model_dump(mode="json")}
