"""The reward engine: the one implementation every adapter (HTTP, CLI, later gRPC/Ray) calls.

For each scorer a pipeline needs: cache lookup, single flight for identical items in
flight, dynamic batching for the misses; then the pipeline tree composes the scores.
Every item of a request gets exactly one result or one per-item error, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from referee import heap
from referee.admission import ACCEPTED_AT, ItemBudget
from referee.batching import DynamicBatcher
from referee.cache import Breaker, MemoryCache, NullCache, ScoreCache
from referee.cache.redis import RedisCache
from referee.config import ScorerConfig, Settings
from referee.errors import ErrorKind, RefereeError, item_error
from referee.groups import GroupAssembler, partial_groups
from referee.media import resolve_images
from referee.metrics import Metrics, observe_many
from referee.monitors import PipelineMonitor, ensemble_members
from referee.pipeline import EvalState, LeafScore
from referee.runner import ScorerRunner
from referee.scorers import ScoreInput, Scorer, scorer_class
from referee.state import EngineState, PipelineInfo, build_pipelines
from referee_client.schema import (
    RewardItem,
    RewardOptions,
    RewardRequest,
    RewardResponse,
    RewardResult,
    Usage,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["EngineState", "PipelineInfo", "RewardEngine", "ScorerRunner", "build_pipelines"]

log = logging.getLogger(__name__)


class RewardEngine:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        *,
        scorer_factory: Callable[[str, Scorer], Scorer] | None = None,
        group_owner: Callable[[RewardRequest], Awaitable[RewardResponse]] | None = None,
    ) -> None:
        """``scorer_factory(name, scorer)`` may put something in a scorer's place (the
        Ray Serve ingress: a proxy to the scorer's own deployment). ``group_owner``, when
        given, takes every request that holds part of a group to assemble (Ray Serve:
        the one replica that owns all groups, so that a group's items meet whichever
        ingress replica they reach)."""
        self.metrics = metrics or Metrics()
        self._scorer_factory = scorer_factory
        scorers = {name: self.make_scorer(name, cfg) for name, cfg in settings.scorers.items()}
        self._state = EngineState(settings, scorers, *build_pipelines(settings, scorers))
        self.monitors: dict[str, PipelineMonitor] = {}
        self._sync_monitors()
        self.group_owner = group_owner
        groups = settings.groups
        self.groups = GroupAssembler(
            self._score_group, timeout_s=groups.timeout_s or 60.0, on_timeout=groups.on_timeout,
            max_pending_items=groups.max_pending_items, metrics=self.metrics,
        )  # fmt: skip
        self._redis: Redis | None = None
        self._breaker: Breaker | None = None
        self._redis_warmed = False
        self._abort = asyncio.Event()  # set when shutting down: waiting requests get 503
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self.items_in_scoring = ItemBudget(settings.server.max_admitted_items, self.metrics)
        self._ready = False
        self._started = False
        self._retiring: set[asyncio.Task[None]] = set()
        self.startup_error: str | None = None

    # -- what is served now: one consistent state, swapped whole by a reload -------------
    @property
    def state(self) -> EngineState:
        return self._state

    @property
    def settings(self) -> Settings:
        return self._state.settings

    @property
    def scorers(self) -> dict[str, Scorer]:
        return self._state.scorers

    @property
    def runners(self) -> dict[str, ScorerRunner]:
        return self._state.runners

    @property
    def pipelines(self) -> dict[str, PipelineInfo]:
        return self._state.pipelines

    def make_scorer(self, name: str, cfg: ScorerConfig) -> Scorer:
        """A scorer object from its config (not set up yet)."""
        cls = scorer_class(cfg.kind)
        scorer = cls(name, cls.Options.model_validate(cfg.options))
        placed = scorer if self._scorer_factory is None else self._scorer_factory(name, scorer)
        placed.bind_metrics(self.metrics)  # the scorer that runs here counts its own events
        return placed

    def swap(self, state: EngineState) -> EngineState:
        """Serve ``state`` from now on (requests already running finish on the one they
        started with); returns the previous state."""
        old, self._state = self._state, state
        self._sync_monitors()
        return old

    def retire(self, old: EngineState, names: set[str], wait_s: float) -> asyncio.Task[None]:
        """Stop and close ``names``' runners and scorers of ``old`` once no request uses
        ``old`` any more (or after ``wait_s``), in the background."""

        async def run() -> None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(old.idle.wait(), wait_s)
            for name in names:
                runner = old.runners.get(name)
                if runner is None:  # not started, or retired already
                    continue
                await runner.batcher.stop(grace_s=5.0)
                try:
                    await runner.scorer.close()
                except Exception:
                    log.exception("closing the retired version of scorer %s failed", name)
                version = runner.fingerprint
                current = self._state.scorers.get(name)
                if current is None or current.fingerprint() != version:
                    with contextlib.suppress(KeyError):
                        self.metrics.scorer_version.remove(name, version)
            heap.refreeze()  # the retired objects' cycles are the collector's again

        task = asyncio.ensure_future(run())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return task

    def _sync_monitors(self) -> None:
        """A monitor per pipeline; kept across reloads while the pipeline's ensembles
        stay the same (so reward-health history survives a new model version)."""
        state = self._state
        for name in list(self.monitors):
            if name not in state.pipelines:
                del self.monitors[name]
        for pname, pcfg in state.settings.pipelines.items():
            members = ensemble_members(pcfg.reward, state.evaluators[pname].names)
            current = self.monitors.get(pname)
            if current is None or current.members != members:
                self.monitors[pname] = PipelineMonitor(
                    pname, members, state.settings.server.monitor_window
                )

    @property
    def ready(self) -> bool:
        return self._ready and not self._draining

    def begin_shutdown(self, grace_s: float) -> None:
        """Stop accepting requests (readyz 503, new requests 503); requests in flight get
        ``grace_s`` to finish, then are answered 503 "shutting down" so that none is
        cut off without a proper answer when the server's own grace period ends."""
        if self._draining or self._loop is None:
            return
        self._draining = True
        log.info("shutting down: draining requests in flight for up to %.1fs", grace_s)
        # May be called from a signal handler: hand the timer to the loop safely.
        self._loop.call_soon_threadsafe(self._loop.call_later, max(0.0, grace_s), self._abort.set)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Set up every scorer, run a warm-up item through each, then report ready."""
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        state = self._state
        try:
            for name, scorer in state.scorers.items():
                state.runners[name] = await self.start_scorer(name, scorer, state.settings)
        except Exception as exc:
            self.startup_error = f"{type(exc).__name__}: {exc}"
            log.exception("start-up failed")
            raise
        self._ready = True

    async def start_scorer(
        self, name: str, scorer: Scorer, settings: Settings, cache: ScoreCache | None = None
    ) -> ScorerRunner:
        """Set ``scorer`` up, put a runner (cache, batcher) in front of it and warm it up.
        ``cache``: the first level to share (a new version of a scorer keeps its cache:
        keys hold the fingerprint, so versions never read each other's entries). On
        failure nothing is left running."""
        t0 = time.perf_counter()
        try:
            await scorer.setup()
        except BaseException:
            with contextlib.suppress(Exception):
                await scorer.close()
            raise
        if cache is None:
            cfg = settings.cache
            cache = NullCache() if cfg.backend == "none" else MemoryCache(cfg.max_entries)
        batcher = DynamicBatcher(scorer, settings.batching_for(name), self.metrics)
        batcher.start()
        runner = ScorerRunner(scorer, cache, batcher, self.metrics, self._shared_cache(name))
        try:
            await self._warm_up(scorer)
            if self._redis is not None and not self._redis_warmed:
                await self._warm_up_redis()
        except BaseException:
            await batcher.stop(grace_s=0.0)
            with contextlib.suppress(Exception):
                await scorer.close()
            raise
        self.metrics.scorer_ready.labels(name, scorer.kind).set(1)
        self.metrics.scorer_version.labels(name, runner.fingerprint).set(1)
        log.info("scorer %s (%s) ready in %.2fs", name, scorer.kind, time.perf_counter() - t0)
        return runner

    def _shared_cache(self, scorer: str) -> RedisCache | None:
        cfg = self.settings.cache
        if cfg.backend != "redis":
            return None
        if self._redis is None:
            from redis.asyncio import Redis  # imported only when Redis is configured

            self._redis = Redis.from_url(
                cfg.url, socket_timeout=max(cfg.op_timeout_s, 0.5),
                socket_connect_timeout=max(cfg.op_timeout_s, 0.5),
            )  # fmt: skip
            self._breaker = Breaker(cfg.breaker_cooldown_s)
        assert self._breaker is not None
        return RedisCache(
            self._redis, scorer=scorer, metrics=self.metrics, namespace=cfg.namespace,
            ttl_s=cfg.ttl_s, op_timeout_s=cfg.op_timeout_s, breaker=self._breaker,
        )  # fmt: skip

    async def _warm_up_redis(self) -> None:
        """Connect (and shake hands, for TLS) before the first request needs Redis, so
        the first read is not the one that pays for it. Failure is not fatal."""
        self._redis_warmed = True
        assert self._redis is not None and self._breaker is not None
        try:
            await asyncio.wait_for(self._redis.ping(), 5.0)
        except Exception as exc:
            self._breaker.failed("connect", exc)

    async def _warm_up(self, scorer: Scorer) -> None:
        probe = ScoreInput(
            id="warm-up", prompt="1+1?", response="\\boxed{2}", reference="2",
            group=None, messages=None, metadata=None,
        )  # fmt: skip
        results = await scorer.score_batch([probe])
        if len(results) != 1:
            raise RuntimeError(f"scorer {scorer.name!r} returned {len(results)} results for 1")

    async def close(self, grace_s: float = 5.0) -> None:
        self._draining = True
        self._abort.set()
        self._ready = False
        await self.groups.close()
        if self._retiring:  # versions replaced by a reload, still draining
            await asyncio.gather(*self._retiring, return_exceptions=True)
        await asyncio.gather(*(r.batcher.stop(grace_s) for r in self.runners.values()))
        await asyncio.gather(*(r.shared.drain() for r in self.runners.values() if r.shared))
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

        async def close(scorer: Scorer) -> None:
            try:
                await scorer.close()
            except Exception:
                log.exception("closing scorer %s failed", scorer.name)

        # At once: model engines (vLLM's) take seconds each to stop.
        await asyncio.gather(*(close(s) for s in self.scorers.values()))

    def health(self) -> dict[str, object]:
        return {
            "ready": self._ready,
            "startup_error": self.startup_error,
            "scorers": {name: s.health() for name, s in self.scorers.items()},
        }

    # -- scoring --------------------------------------------------------------------------
    def pipeline(self, name: str, state: EngineState | None = None) -> PipelineInfo:
        try:
            return (state or self._state).pipelines[name]
        except KeyError:
            known = ", ".join(sorted((state or self._state).pipelines))
            raise RefereeError(
                ErrorKind.NOT_FOUND,
                f"unknown pipeline {name!r}; configured pipelines: {known}",
                param="pipeline",
            ) from None

    def check_limits(self, request: RewardRequest) -> None:
        limits = self.settings.server
        if len(request.items) > limits.max_items_per_request:
            raise RefereeError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"{len(request.items)} items in one request; the limit is "
                f"{limits.max_items_per_request}: split the request",
                param="items",
            )
        cap = limits.max_text_chars
        for i, item in enumerate(request.items):
            texts = {"prompt": item.prompt, "response": item.response, "reference": item.reference}
            for m, message in enumerate(item.messages or []):
                if isinstance(message.content, str):
                    texts[f"messages[{m}].content"] = message.content
                else:
                    for p, part in enumerate(message.content):
                        texts[f"messages[{m}].content[{p}].text"] = part.text
            for field_name, text in texts.items():
                if text is not None and len(text) > cap:
                    raise RefereeError(
                        ErrorKind.PAYLOAD_TOO_LARGE,
                        f"items[{i}].{field_name} has {len(text)} characters; the limit is {cap}",
                        param=f"items[{i}].{field_name}",
                    )

    async def score(
        self, request: RewardRequest, *, enforce_limits: bool = True,
        accepted_at: float | None = None,
    ) -> RewardResponse:  # fmt: skip
        """Score one request. ``enforce_limits=False`` is for trusted offline callers (the
        CLI), where the server's request-size limits protect nothing. The deadline counts
        from ``accepted_at`` (``time.monotonic()``; default: when the gateway accepted the
        request, ``referee.admission.ACCEPTED_AT``, else now), so time spent waiting at the
        door and reading the body is part of it."""
        state = self._state  # the whole request runs on this version of everything
        info = self.pipeline(request.pipeline, state)
        down = [state.unavailable[s] for s in info.scorers if s in state.unavailable]
        if down:
            raise RefereeError(ErrorKind.NOT_READY, f"pipeline {info.name!r}: {down[0]}",
                               retry_after_s=2.0)  # fmt: skip
        if self._draining:
            raise RefereeError(ErrorKind.NOT_READY, "server is shutting down; retry elsewhere",
                               retry_after_s=1.0)  # fmt: skip
        if not self._ready:
            if self.startup_error is not None:
                raise RefereeError(ErrorKind.NOT_READY, f"start-up failed: {self.startup_error}")
            raise RefereeError(ErrorKind.NOT_READY, "scorers are still loading; retry shortly",
                               retry_after_s=2.0)  # fmt: skip
        server_limit = self.settings.server.request_timeout_s
        if enforce_limits:
            self.check_limits(request)
        else:
            server_limit = 3600.0
        # images: URLs and paths read, sizes and formats checked (413/422 naming the field)
        request = await resolve_images(request, self.settings.media)
        asked = request.options.timeout_s
        timeout = min(asked, server_limit) if asked is not None else server_limit
        now = time.monotonic()
        if accepted_at is None:
            accepted_at = ACCEPTED_AT.get() if enforce_limits else None
        deadline = (now if accepted_at is None else min(accepted_at, now)) + timeout
        if deadline <= now:
            self.metrics.timeouts.labels(info.name).inc()
            raise RefereeError(
                ErrorKind.TIMEOUT,
                f"request waited {now - deadline + timeout:.2f}s before it could start; its "
                f"deadline is {timeout:g}s",
                param="options.timeout_s",
            )
        n_items = len(request.items) if enforce_limits else 0
        self.items_in_scoring.take(n_items)
        state.acquire()
        work = asyncio.ensure_future(self._score_assembled(state, info, request, deadline))
        abort = asyncio.ensure_future(self._abort.wait())
        try:
            await asyncio.wait(
                {work, abort}, timeout=deadline - now, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self.items_in_scoring.give_back(n_items)
            abort.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            state.release()
        if not work.cancelled():
            return work.result()
        if self._abort.is_set():
            raise RefereeError(ErrorKind.NOT_READY, "server is shutting down; retry elsewhere",
                               retry_after_s=1.0)  # fmt: skip
        self.metrics.timeouts.labels(info.name).inc()
        raise RefereeError(
            ErrorKind.TIMEOUT,
            f"request did not finish within {timeout:g}s; work already done is cached, "
            "so a retry is cheaper",
            param="options.timeout_s",
        )

    async def _score_assembled(
        self, state: EngineState, info: PipelineInfo, request: RewardRequest, deadline: float
    ) -> RewardResponse:
        """Score a request whose groups may be partial: with a group size, a pipeline with
        group steps scores a group only once all its items are here (groups.py)."""
        size = request.options.group_size or info.group_size
        if not info.needs_groups or size is None or size < 2:
            return await self._score(state, info, request, deadline)
        if size > self.settings.groups.max_group_size:
            raise RefereeError(
                ErrorKind.INVALID_REQUEST,
                f"group_size {size} is over the server's groups.max_group_size "
                f"({self.settings.groups.max_group_size})",
                param="options.group_size",
            )
        direct, parts = partial_groups(request.items, size)
        if not parts:  # every group is whole in this request
            return await self._score(state, info, request, deadline)
        if self.group_owner is not None:
            return await self.group_owner(request)
        answers = self.groups.submit(
            info.name, {g: [request.items[i] for i in idx] for g, idx in parts.items()},
            size, deadline, request.options.group_reference_rewards,
        )  # fmt: skip
        results: list[RewardResult | None] = [None] * len(request.items)
        if direct:
            own = request.model_copy(update={"items": [request.items[i] for i in direct]})
            for i, result in zip(direct, (await self._score(state, info, own, deadline)).results,
                                 strict=True):  # fmt: skip
                results[i] = result
        for indices, answer in zip(parts.values(), answers, strict=True):
            # Shielded: a request that gives up must not cancel its group's answer.
            for i, result in zip(indices, await asyncio.shield(answer), strict=True):
                results[i] = result
        done = [r for r in results if r is not None]
        assert len(done) == len(results), "group assembly lost an item"
        if not request.options.return_components:
            done = [r.model_copy(update={"components": None}) for r in done]
        return RewardResponse(
            pipeline=info.name, pipeline_version=info.version, results=done,
            usage=Usage(items=len(done), cache_hits=sum(r.cached for r in done),
                        errors=sum(r.error is not None for r in done)),
        )  # fmt: skip

    async def _score_group(
        self, pipeline: str, items: list[RewardItem], references: list[float] | None,
        deadline: float,
    ) -> list[RewardResult]:  # fmt: skip
        """One assembled group, scored as one request."""
        group = items[0].group or ""
        options = RewardOptions(
            group_reference_rewards={group: references} if references is not None else None
        )
        request = RewardRequest(pipeline=pipeline, items=items, options=options)
        state = self._state  # the version current when the group is whole
        state.acquire()
        try:
            return (await self._score(state, self.pipeline(pipeline, state), request,
                                      deadline)).results  # fmt: skip
        finally:
            state.release()

    async def _score(
        self, engine_state: EngineState, info: PipelineInfo, request: RewardRequest,
        deadline: float,
    ) -> RewardResponse:  # fmt: skip
        pixels = self.settings.media.max_image_pixels
        items = [ScoreInput.from_item(item, max_image_pixels=pixels) for item in request.items]
        if info.reads_peers:
            items = with_peers(items)
        group_refs = request.options.group_reference_rewards or {}
        references = [
            item.reference_rewards
            if item.reference_rewards is not None
            else group_refs.get(item.group or "") if item.group is not None else None
            for item in request.items
        ]  # fmt: skip
        # One scorer call per (scorer, set of items not yet asked for); a leaf that needs an
        # item another leaf already asked for awaits that call instead of asking again.
        memo: dict[tuple[str, int], tuple[asyncio.Task[list[LeafScore]], int]] = {}
        calls: list[asyncio.Task[list[LeafScore]]] = []

        async def fetch(scorer: str, indices: list[int]) -> dict[int, LeafScore]:
            missing = [i for i in indices if (scorer, i) not in memo]
            if missing:
                task = asyncio.ensure_future(
                    engine_state.runners[scorer].score([items[i] for i in missing], deadline)
                )
                task.add_done_callback(_retrieve)
                calls.append(task)
                for position, i in enumerate(missing):
                    memo[(scorer, i)] = (task, position)
            out: dict[int, LeafScore] = {}
            for i in indices:
                task, position = memo[(scorer, i)]
                out[i] = (await task)[position]
            return out

        state = EvalState(items=items, reference_rewards=references, fetch=fetch)
        values = await engine_state.evaluators[info.name].evaluate(state)
        results: list[RewardResult] = []
        want = request.options.return_components
        errors, components_of, steps_of = state.errors, state.components, state.steps
        info_of, all_cached, truncated = state.info, state.all_cached, state.truncated
        by_component: dict[str, list[float]] = {}
        monitor = self.monitors[info.name]
        construct = RewardResult.model_construct  # built from checked values: no revalidation
        for i, item in enumerate(items):
            if i not in errors and i not in values:  # a bug, never a lost item
                state.fail(i, "internal", "no value was produced for this item")
            error = errors.get(i)
            components = components_of.get(i)
            # length bias reads the response text's length; an image-only response has none
            length = len(item.response) if item.response or not item.response_images else None
            if error:
                outcome, item_err = item_error(*error)
                monitor.record(length, None, error[0])
            else:
                outcome, item_err = "scored", None
                monitor.record(length, components or {}, None)
                for name, value in (components or {}).items():
                    if value is not None:
                        by_component.setdefault(name, []).append(value)
            info_map = info_of.get(i) or None
            results.append(
                construct(
                    id=item.id,
                    outcome=outcome,
                    reward=None if error else values[i],
                    components=dict(components or {}) if want else None,
                    steps=steps_of.get(i),
                    cached=all_cached.get(i, False),
                    error=item_err,
                    info=dict(info_map) if info_map else None,
                    truncated=i in truncated,
                )
            )
        for name, observed in by_component.items():
            observe_many(monitor.histogram(self.metrics, name), observed)
        n_errors = len(state.errors)
        self.metrics.items.labels(info.name, "ok").inc(len(items) - n_errors)
        if n_errors:
            self.metrics.items.labels(info.name, "error").inc(n_errors)
        hits = sum(
            1 for task, position in memo.values()
            if task.done() and not task.cancelled() and task.exception() is None
            and task.result()[position].cached
        )  # fmt: skip
        return RewardResponse(
            pipeline=info.name,
            pipeline_version=info.version,
            results=results,
            usage=Usage(items=len(items), cache_hits=hits, errors=n_errors),
        )


def with_peers(items: list[ScoreInput]) -> list[ScoreInput]:
    """Give each grouped item the responses of the other items of its group in this
    request, for scorers that compare an item with its group (group consistency)."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if item.group is not None:
            groups.setdefault(item.group, []).append(i)
    out = list(items)
    for members in groups.values():
        for i in members:
            peers = tuple(items[j].response for j in members if j != i)
            out[i] = dataclasses.replace(items[i], peers=peers, digests={})
    return out


def _retrieve(task: asyncio.Task[list[LeafScore]]) -> None:
    """Mark a scorer call's exception as seen: when one branch fails the request (429),
    the others' failures are expected, not "never retrieved" noise in the logs."""
    if not task.cancelled():
        task.exception()
