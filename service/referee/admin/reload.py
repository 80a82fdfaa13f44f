"""Live updates: new weights for a scorer, or a whole new config, without a restart.

A reload builds the new version beside the old one (set up, warmed up), then swaps the
engine's state in one step: requests that started on the old version finish on it, new
ones get the new one, and no response mixes the two. The old version is stopped and
closed once the requests holding it are done. If loading or warm-up fails, nothing is
swapped and the old version keeps serving.

``swap: in_place`` is for models too large for two copies: the old version is drained and
unloaded first (its pipelines answer 503 with Retry-After meanwhile), then the new one is
loaded; if that fails, the old config is loaded back.

One reload at a time per engine: a second one while the first runs gets 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Literal

from pydantic import ValidationError

from referee.admin.memory import available_bytes, fits
from referee.config import ScorerConfig, Settings, format_validation_error
from referee.engine import EngineState, RewardEngine, ScorerRunner, build_pipelines
from referee.errors import ErrorKind, RefereeError
from referee.scorers import Scorer
from referee_client.schema import ReloadResult, ScorerStatus, Swap

__all__ = ["Reloader"]

log = logging.getLogger(__name__)

# Sections a running server cannot change (sockets, caches, auth): a restart applies them.
_RESTART_SECTIONS = ("server", "cache", "groups")


class Reloader:
    """The admin operations over one engine (HTTP, gRPC and SIGHUP all call these)."""

    def __init__(self, engine: RewardEngine) -> None:
        self.engine = engine
        # Why changes are refused here, if they are (Ray Serve's ingress: its replicas
        # and the scorer deployments change together only through a redeploy).
        self.refuse: str | None = None
        self._lock = asyncio.Lock()
        now = time.time()
        self._loaded_at: dict[str, float] = dict.fromkeys(engine.scorers, now)
        self._reloading: set[str] = set()

    # -- reading ------------------------------------------------------------------------
    def scorers(self) -> list[ScorerStatus]:
        state = self.engine.state
        out = []
        for name, scorer in state.scorers.items():
            status: Literal["ready", "reloading", "unavailable"] = "ready"
            if name in state.unavailable:
                status = "unavailable"
            elif name in self._reloading:
                status = "reloading"
            out.append(
                ScorerStatus(
                    name=name,
                    kind=scorer.kind,
                    fingerprint=scorer.fingerprint(),
                    state=status,
                    loaded_at=self._loaded_at.get(name, 0.0),
                    memory_bytes=scorer.memory_bytes(),
                    pipelines=sorted(
                        p for p, info in state.pipelines.items() if name in info.scorers
                    ),
                )
            )
        return out

    # -- changing -----------------------------------------------------------------------
    async def reload_scorer(
        self, name: str, changes: dict[str, object], *, swap: Swap = "beside"
    ) -> ReloadResult:
        """Load ``name`` again with ``changes`` over its current options (none: the same
        options, e.g. new weights written to the same directory)."""
        current = self.engine.state.settings
        cfg = current.scorers.get(name)
        if cfg is None:
            known = ", ".join(sorted(current.scorers)) or "none"
            raise RefereeError(ErrorKind.NOT_FOUND,
                               f"unknown scorer {name!r}; configured scorers: {known}",
                               param="name")  # fmt: skip
        try:
            new_cfg = ScorerConfig.model_validate(
                {"kind": cfg.kind, "options": {**cfg.options, **changes},
                 "batching": cfg.batching}
            )  # fmt: skip
        except ValidationError as exc:
            self._count({name}, "failed", time.perf_counter())
            raise RefereeError(ErrorKind.INVALID_REQUEST,
                               "; ".join(format_validation_error(exc)),
                               param="options") from None  # fmt: skip
        settings = current.model_copy(update={"scorers": {**current.scorers, name: new_cfg}})
        return await self._apply(settings, {name}, swap)

    async def apply_config(self, settings: Settings, *, swap: Swap = "beside") -> ReloadResult:
        """Serve ``settings`` (validated whole by the caller): scorers that are new, whose
        config changed or whose weights changed on disk are (re)loaded; removed ones are
        drained and closed; pipelines follow."""
        current = self.engine.state.settings
        for section in _RESTART_SECTIONS:
            old, new = getattr(current, section), getattr(settings, section)
            if old != new:
                changed = [f for f in type(old).model_fields if getattr(old, f) != getattr(new, f)]
                raise RefereeError(
                    ErrorKind.INVALID_REQUEST,
                    f"{section}.{changed[0]}: takes effect only at a restart; nothing was "
                    "changed (keep the running value to apply the rest live)",
                    param=f"{section}.{changed[0]}",
                )
        rebuild = {
            name for name, cfg in settings.scorers.items()
            if name not in current.scorers or cfg != current.scorers[name]
            or settings.batching_for(name) != current.batching_for(name)
            or self._weights_changed(name, cfg)
        }  # fmt: skip
        return await self._apply(settings, rebuild, swap)

    def _weights_changed(self, name: str, cfg: ScorerConfig) -> bool:
        """Whether the files a scorer reads changed since it loaded (same config)."""
        running = self.engine.state.scorers.get(name)
        if running is None:
            return True
        try:
            return self.engine.make_scorer(name, cfg).fingerprint() != running.fingerprint()
        except Exception:
            return True  # let the load say what is wrong

    async def _apply(self, settings: Settings, rebuild: set[str], swap: Swap) -> ReloadResult:
        if self.refuse is not None:
            raise RefereeError(ErrorKind.CONFLICT, self.refuse)
        return await self.apply_here(settings, rebuild, swap)

    async def apply_here(
        self, settings: Settings, rebuild: set[str], swap: Swap, *, switch_at: float | None = None
    ) -> ReloadResult:
        """Load what ``rebuild`` names and swap this engine to ``settings`` (at the unix
        time ``switch_at``, if given: replicas of one application switch together)."""
        if self._lock.locked():
            raise RefereeError(ErrorKind.CONFLICT,
                               "another reload is in progress; retry when it has finished",
                               retry_after_s=5.0)  # fmt: skip
        async with self._lock:
            started = time.perf_counter()
            old = self.engine.state
            removed = set(old.scorers) - set(settings.scorers)
            self._reloading = set(rebuild)
            try:
                if swap == "in_place":
                    runners = await self._load_in_place(old, settings, rebuild)
                else:
                    runners = await self._load_beside(old, settings, rebuild)
            except RefereeError:
                self._count(rebuild, "failed", started)
                raise
            finally:
                self._reloading = set()
            state = self._next_state(self.engine.state, settings, runners)
            if switch_at is not None:
                late = time.time() - switch_at
                if late > 0:
                    log.warning("reload: switching %.3fs after the agreed time", late)
                await asyncio.sleep(max(0.0, -late))
            previous = self.engine.swap(state)
            # in place, the replaced versions are gone already (not in `previous`'s runners)
            retire = (rebuild & set(old.scorers)) | removed
            if retire:
                wait_s = old.settings.server.request_timeout_s + 1.0
                self.engine.retire(previous, retire, wait_s)
            now = time.time()
            for name in rebuild:
                self._loaded_at[name] = now
            for name in removed:
                self._loaded_at.pop(name, None)
                self.engine.metrics.scorer_ready.remove(name, old.scorers[name].kind)
            self._count(rebuild, "ok", started)
            log.info("reload applied: added %s, reloaded %s, removed %s",
                     sorted(rebuild - set(old.scorers)), sorted(rebuild & set(old.scorers)),
                     sorted(removed))  # fmt: skip
            return ReloadResult(
                added=sorted(rebuild - set(old.scorers)),
                reloaded=sorted(rebuild & set(old.scorers)),
                removed=sorted(removed),
                pipelines={p: info.version for p, info in state.pipelines.items()},
                fingerprints={n: state.scorers[n].fingerprint() for n in sorted(rebuild)},
                duration_s=time.perf_counter() - started,
            )

    async def _load_beside(
        self, old: EngineState, settings: Settings, rebuild: set[str]
    ) -> dict[str, ScorerRunner]:
        """Load every scorer of ``rebuild`` while the old versions keep serving."""
        scorers = {name: self._make(name, settings) for name in sorted(rebuild)}
        need = sum(s.memory_estimate() or 0 for s in scorers.values())
        limit = settings.server.memory_limit_bytes
        if need and not fits(need, limit):
            raise RefereeError(
                ErrorKind.CONFLICT,
                f"the new version needs about {need >> 20} MiB beside the old one and only "
                f"{available_bytes(limit) >> 20} MiB are free: reload with swap: in_place",
            )
        return await self._start_all(old, settings, scorers)

    async def _load_in_place(
        self, old: EngineState, settings: Settings, rebuild: set[str]
    ) -> dict[str, ScorerRunner]:
        """Drain and unload the old versions first, then load the new ones; on failure
        load the old config back (and leave the scorer unavailable if even that fails)."""
        replaced = rebuild & set(old.scorers)
        reason = "scorer {} is being reloaded in place; retry shortly"
        down = EngineState(
            old.settings, old.scorers, old.pipelines, old.evaluators, dict(old.runners),
            {**old.unavailable, **{n: reason.format(n) for n in replaced}},
        )  # fmt: skip
        self.engine.swap(down)
        wait_s = old.settings.server.request_timeout_s + 1.0
        await self.engine.retire(old, replaced, wait_s)
        for name in replaced:
            down.runners.pop(name, None)
        scorers = {name: self._make(name, settings) for name in sorted(rebuild)}
        try:
            return await self._start_all(down, settings, scorers)
        except RefereeError as exc:
            restored = {name: self._make(name, old.settings) for name in sorted(replaced)}
            try:
                runners = await self._start_all(down, old.settings, restored)
            except RefereeError as again:
                for name in replaced:
                    down.unavailable[name] = f"scorer {name} failed to reload: {again.message}"
                raise RefereeError(exc.kind, f"{exc.message}; loading the old version back "
                                   f"failed too: {again.message}") from None  # fmt: skip
            self.engine.swap(self._next_state(down, old.settings, runners))
            raise RefereeError(exc.kind, f"{exc.message}; the old version was loaded back "
                               "and serves again") from None  # fmt: skip

    def _make(self, name: str, settings: Settings) -> Scorer:
        return self.engine.make_scorer(name, settings.scorers[name])

    async def _start_all(
        self, base: EngineState, settings: Settings, scorers: dict[str, Scorer]
    ) -> dict[str, ScorerRunner]:
        started: dict[str, ScorerRunner] = {}
        try:
            for name, scorer in scorers.items():
                previous = base.runners.get(name)
                started[name] = await self.engine.start_scorer(
                    name, scorer, settings, previous.cache if previous else None
                )
        except Exception as exc:
            for runner in started.values():
                await runner.batcher.stop(grace_s=0.0)
                with contextlib.suppress(Exception):
                    await runner.scorer.close()
            raise RefereeError(
                ErrorKind.INVALID_REQUEST,
                f"scorer {name!r} failed to load ({type(exc).__name__}: {exc}); "
                "nothing was changed",
                param=f"scorers.{name}",
            ) from None
        return started

    @staticmethod
    def _next_state(
        base: EngineState, settings: Settings, runners: dict[str, ScorerRunner]
    ) -> EngineState:
        kept = {n: base.runners[n] for n in settings.scorers if n not in runners}
        all_runners = {**kept, **runners}
        scorers = {n: all_runners[n].scorer for n in settings.scorers}
        state = EngineState(settings, scorers, *build_pipelines(settings, scorers))
        state.runners.update(all_runners)
        state.unavailable.update(
            {n: why for n, why in base.unavailable.items() if n in scorers and n not in runners}
        )
        return state

    def _count(self, names: set[str], outcome: str, started: float) -> None:
        metrics = self.engine.metrics
        took = time.perf_counter() - started
        for name in names or {"(config)"}:
            metrics.reloads.labels(name, outcome).inc()
            metrics.reload_duration.labels(name).observe(took)
