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
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from referee.admin.reload import Reloader
from referee.admin.servicer import AdminServicer
from referee.batching import DynamicBatcher
from referee.config import Settings, load_settings
from referee.engine import RewardEngine
from referee.errors import ErrorKind, RefereeError
from referee.grpc.servicer import RefereeServicer
from referee.http import build_app
from referee.ray._grpc import RayGrpc
from referee.ray._live import LiveMember, registry_handle, settings_of
from referee.ray._metrics import ray_backed_metrics
from referee.ray._reload import LiveReloader
from referee.ray._remote import RemoteScorer
from referee.scorers import ScoreInput, Scorer, ScoreResult, scorer_class
from referee_client.schema import RewardRequest, RewardResponse

__all__ = ["GroupOwnerReplica", "IngressReplica", "ScorerReplica"]

log = logging.getLogger(__name__)
WARM_UP = ScoreInput(id="warm-up", prompt="1+1?", response="\\boxed{2}", reference="2",
                     group=None, messages=None, metadata=None)  # fmt: skip


def _placer(handles: dict[str, Any], revisions: dict[str, int]) -> Any:
    """Model scorers that have a deployment go there; ``revisions`` (updated by live
    reloads) says which version of it a new proxy asks for."""

    def place(name: str, scorer: Scorer) -> Scorer:
        handle = handles.get(name)
        if handle is None:
            return scorer
        return RemoteScorer(scorer, handle, f"scorer-{name}", revisions.get(name, 0))

    return place


@dataclass
class _Version:
    scorer: Scorer
    batcher: DynamicBatcher


class ScorerReplica:
    """One replica of one model scorer: loads it, warms it up, batches what it gets by
    token budget across calls from every ingress replica. During a live reload it holds
    the new version beside the old one and answers each call with the revision the call
    names (referee.ray._live)."""

    async def __init__(self, config: dict[str, Any], name: str) -> None:  # type: ignore[misc]
        self.name = name
        self.settings = load_settings(data=config)
        self.metrics = ray_backed_metrics(f"{name}-{os.getpid()}")
        self.member = LiveMember(registry_handle(config), "scorer", name)
        committed = await self.member.registry.current.remote()
        revision, settings = 0, self.settings
        if committed is not None:  # a replica started after a live reload: the new version
            revision = committed["revisions"].get(name, 0)
            settings = settings_of(committed, self.settings)
            self.member.applied, self.member.last = committed["generation"], committed
        self.versions: dict[int, _Version] = {revision: await self._load(settings)}
        self.current = revision
        self._loading: dict[int, asyncio.Task[None]] = {}
        self.member.start(self._follow)

    async def _load(self, settings: Settings) -> _Version:
        cfg = settings.scorers[self.name]
        cls = scorer_class(cfg.kind)
        scorer: Scorer = cls(self.name, cls.Options.model_validate(cfg.options))
        await scorer.setup()
        scorer.bind_metrics(self.metrics)
        batcher = DynamicBatcher(scorer, settings.batching_for(self.name), self.metrics)
        batcher.start()
        version = _Version(scorer, batcher)
        try:
            await self._score(version, [WARM_UP], None)
        except BaseException:
            await self._unload(version)
            raise
        return version

    @staticmethod
    async def _unload(version: _Version) -> None:
        await version.batcher.stop(grace_s=5.0)
        with contextlib.suppress(Exception):
            await version.scorer.close()

    async def _follow(self, view: dict[str, Any]) -> None:
        """One registry update: load a staged version, switch to a committed one, drop
        an aborted or retired one."""
        staged, committed = view["staged"], view["committed"]
        wanted: set[int] = {self.current}
        if committed is not None:
            wanted.add(committed["revisions"].get(self.name, 0))
        if staged is not None and self.name in staged["rebuild"]:
            revision = staged["revisions"][self.name]
            wanted.add(revision)
            if revision not in self.versions and revision not in self._loading:
                self._start_loading(revision, staged)
            elif revision in self.versions:
                self.member.report = (staged["generation"], None)
        if committed is not None:
            revision = committed["revisions"].get(self.name, 0)
            self.member.applied, self.member.last = committed["generation"], committed
            if revision in self.versions:
                self.current = revision
            elif revision not in self._loading:  # missed the stage (started meanwhile)
                self._start_loading(revision, committed)
        # Old versions go when retired (every ingress replica switched, and requests
        # started on them had time to finish); a staged one when its stage was dropped.
        below = view["retire_below"].get(self.name, 0)
        for revision in list(self.versions):
            retired = revision < below
            dropped = revision > self.current and revision not in wanted
            if revision != self.current and (retired or dropped):
                await self._unload(self.versions.pop(revision))
        for revision in list(self._loading):
            if revision not in wanted:
                self._loading.pop(revision).cancel()

    def _start_loading(self, revision: int, change: dict[str, Any]) -> None:
        async def load() -> None:
            generation = change["generation"]
            try:
                self.versions[revision] = await self._load(settings_of(change, self.settings))
                self.member.report = (generation, None)
            except Exception as exc:
                log.exception("scorer %s: revision %d failed to load", self.name, revision)
                self.member.report = (generation, f"{type(exc).__name__}: {exc}")
            finally:
                self._loading.pop(revision, None)

        self._loading[revision] = asyncio.get_running_loop().create_task(load())

    async def ready(self) -> bool:
        return True

    async def process_id(self) -> int:
        """This replica's OS process (operators and tests use it to find a replica)."""
        return os.getpid()

    async def revisions(self) -> list[int]:
        """The versions this replica holds loaded (two only during a live reload)."""
        return sorted(self.versions)

    async def score(
        self, items: list[ScoreInput], timeout_s: float | None, revision: int | None = None
    ) -> list[ScoreResult]:
        version = self.versions.get(self.current if revision is None else revision)
        if version is None:  # the caller retries on another replica
            raise RuntimeError(f"scorer {self.name}: revision {revision} is not loaded on "
                               f"this replica (loaded: {sorted(self.versions)})")  # fmt: skip
        return await self._score(version, items, timeout_s)

    @staticmethod
    async def _score(
        version: _Version, items: list[ScoreInput], timeout_s: float | None
    ) -> list[ScoreResult]:
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        prepared = await version.scorer.prepare(items)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[ScoreResult]] = [loop.create_future() for _ in items]
        version.batcher.submit(list(zip(items, futures, strict=True)), deadline, prepared)
        return list(await asyncio.gather(*futures))


class IngressReplica:
    """The HTTP gateway: `build_app` around an engine whose model scorers are proxies to
    their deployments (rule and python scorers run here, in the ingress). Takes traffic
    only once its engine has started (Serve routes to a replica when ``__init__`` ends)."""

    async def __init__(self, config: dict[str, Any], handles: dict[str, Any],  # type: ignore[misc]
                       groups: Any = None) -> None:  # fmt: skip
        owner = None
        if groups is not None:

            async def owner(request: RewardRequest) -> RewardResponse:
                answer = await groups.score.remote(request.model_dump(mode="json"))
                if "error" in answer:
                    e = answer["error"]
                    raise RefereeError(ErrorKind(e["kind"]), e["message"], param=e["param"],
                                       retry_after_s=e["retry_after_s"])  # fmt: skip
                return RewardResponse.model_validate(answer["response"])

        live = await _Follower.create(config, handles, "ingress", owner)
        self.engine = live.engine
        self._asgi = build_app(live.settings, engine=self.engine)
        self._asgi.state.reloader = live.reloader
        self.live = live
        await self.engine.start()
        live.start()
        servicer = RefereeServicer(self.engine, self.engine.metrics, self._asgi.state.api_keys)
        admin = AdminServicer(live.reloader, self._asgi.state.admin_keys)
        self._grpc = RayGrpc(servicer, admin)

    def __serve_build_asgi_app__(self) -> Any:
        return self._asgi

    # referee.v1 over Ray Serve's gRPC proxy (serve.start(grpc_options=...)): same servicer
    async def Score(self, request: Any, grpc_context: Any) -> Any:
        return await self._grpc.unary("Score", request, grpc_context)

    async def GetLimits(self, request: Any, grpc_context: Any) -> Any:
        return await self._grpc.unary("GetLimits", request, grpc_context)

    # referee.v1.RefereeAdmin: live reloads over gRPC, as over HTTP
    async def ListScorers(self, request: Any, grpc_context: Any) -> Any:
        return await self._grpc.unary("ListScorers", request, grpc_context)

    async def ReloadScorer(self, request: Any, grpc_context: Any) -> Any:
        return await self._grpc.unary("ReloadScorer", request, grpc_context)

    async def ApplyConfig(self, request: Any, grpc_context: Any) -> Any:
        return await self._grpc.unary("ApplyConfig", request, grpc_context)

    async def ScoreStream(
        self, requests: AsyncIterator[Any], grpc_context: Any
    ) -> AsyncIterator[Any]:
        async for response in self._grpc.stream(requests, grpc_context):
            yield response


class GroupOwnerReplica:
    """The one replica that assembles groups sent over several requests (see the module
    docstring). Errors come back as data: a RefereeError does not survive pickling."""

    async def __init__(self, config: dict[str, Any], handles: dict[str, Any]) -> None:  # type: ignore[misc]
        self.live = await _Follower.create(config, handles, "groups")
        self.engine = self.live.engine
        await self.engine.start()
        self.live.start()

    async def score(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self.engine.score(RewardRequest.model_validate(request))
        except RefereeError as exc:
            return {"error": {"kind": exc.kind.value, "message": exc.message, "param": exc.param,
                              "retry_after_s": exc.retry_after_s}}  # fmt: skip
        return {"response": response.model_dump(mode="json")}


class _Follower:
    """An ingress-side engine (ingress, group owner) that follows the live changes."""

    def __init__(self, settings: Settings, engine: RewardEngine, reloader: Reloader,
                 member: LiveMember, revisions: dict[str, int]) -> None:  # fmt: skip
        self.settings = settings
        self.engine = engine
        self.reloader = reloader
        self.member = member
        self.revisions = revisions

    @classmethod
    async def create(
        cls, config: dict[str, Any], handles: dict[str, Any], role: str, owner: Any = None
    ) -> _Follower:
        settings = load_settings(data=config)
        member = LiveMember(registry_handle(config), role)
        committed = await member.registry.current.remote()
        revisions: dict[str, int] = {}
        if committed is not None:  # started after a live reload: serve what it made
            settings = settings_of(committed, settings)
            revisions.update(committed["revisions"])
            member.applied, member.last = committed["generation"], committed
        engine = RewardEngine(
            settings, scorer_factory=_placer(handles, revisions), group_owner=owner
        )
        reloader = LiveReloader(engine, member, revisions, set(handles))
        return cls(settings, engine, reloader, member, revisions)

    def start(self) -> None:
        self.member.start(self._follow)

    async def _follow(self, view: dict[str, Any]) -> None:
        committed = view["committed"]
        if committed is None or committed["generation"] <= self.member.applied:
            return
        settings = settings_of(committed, self.engine.state.settings)
        self.revisions.update(committed["revisions"])
        await self.reloader.apply_here(
            settings, set(committed["rebuild"]), "beside", switch_at=committed.get("switch_at")
        )
        self.member.applied, self.member.last = committed["generation"], committed
