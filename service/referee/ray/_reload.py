"""The admin operations on a Ray Serve ingress replica: a change is staged on every
replica, then committed (the protocol is in referee.ray._live)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from referee.admin.reload import Reloader
from referee.config import Settings
from referee.engine import RewardEngine
from referee.errors import ErrorKind, RefereeError
from referee.ray._live import ACK_TIMEOUT_S, POLL_S, STAGE_TIMEOUT_S, LiveMember, change_of
from referee_client.schema import ReloadResult, Swap

__all__ = ["LiveReloader"]

log = logging.getLogger(__name__)


class LiveReloader(Reloader):
    """Admin calls that reach this replica lead the change for the whole application;
    each replica applies committed changes to its own engine (``apply_here``)."""

    def __init__(
        self, engine: RewardEngine, member: LiveMember, revisions: dict[str, int],
        deployed: set[str],
    ) -> None:  # fmt: skip
        super().__init__(engine)
        self.member = member
        self.revisions = revisions
        self.deployed = deployed  # model scorers with a deployment of their own
        self._leading = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def _apply(self, settings: Settings, rebuild: set[str], swap: Swap) -> ReloadResult:
        if swap == "in_place":
            raise RefereeError(
                ErrorKind.INVALID_REQUEST,
                "swap: in_place is not available in Ray Serve mode: each scorer replica "
                "loads the new version beside the old one; give its replicas room for two "
                "copies (ray_actor_options) or redeploy",
                param="swap",
            )
        if self._leading.locked():
            raise RefereeError(ErrorKind.CONFLICT,
                               "another reload is in progress; retry when it has finished",
                               retry_after_s=5.0)  # fmt: skip
        async with self._leading:
            return await self._lead(settings, rebuild)

    async def _lead(self, settings: Settings, rebuild: set[str]) -> ReloadResult:
        started = time.perf_counter()
        current = self.engine.state.settings
        undeployed = sorted(
            n for n in rebuild if n not in self.deployed and _is_model(settings, n)
        )  # fmt: skip
        if undeployed:
            raise RefereeError(
                ErrorKind.INVALID_REQUEST,
                f"scorer {undeployed[0]!r} is a model scorer without a deployment of its "
                "own: in Ray Serve mode a new model scorer needs a redeploy (`serve deploy` "
                "/ the RayService); nothing was changed",
                param=f"scorers.{undeployed[0]}",
            )
        await self._check_local(settings, rebuild - self.deployed)
        models = sorted(rebuild & self.deployed)
        generation = self.member.applied + 1
        revisions = {**self.revisions, **dict.fromkeys(models, generation)}
        change = change_of(settings, rebuild, revisions)
        staged = await self.member.registry.stage.remote(self.member.applied, change)
        if isinstance(staged, str):
            raise RefereeError(ErrorKind.CONFLICT, staged, retry_after_s=5.0)
        try:
            await self._wait_staged(generation, models)
        except BaseException:
            await self.member.registry.abort.remote(generation)
            self._count(rebuild, "failed", started)
            raise
        await self.member.registry.commit.remote(generation)
        await self._wait_applied(generation)
        self._retire_later(models, generation, current.server.request_timeout_s + 1.0)
        state = self.engine.state
        return ReloadResult(
            added=sorted(rebuild - set(current.scorers)),
            reloaded=sorted(rebuild & set(current.scorers)),
            removed=sorted(set(current.scorers) - set(settings.scorers)),
            pipelines={p: info.version for p, info in state.pipelines.items()},
            fingerprints={n: state.scorers[n].fingerprint() for n in sorted(rebuild)},
            duration_s=time.perf_counter() - started,
        )

    async def _check_local(self, settings: Settings, names: set[str]) -> None:
        """The scorers that run in the ingress build and set up here before any replica
        is asked to change (they are cheap: rules, python functions)."""
        for name in sorted(names):
            try:
                scorer = self.engine.make_scorer(name, settings.scorers[name])
                await scorer.setup()
                await scorer.close()
            except Exception as exc:
                raise RefereeError(
                    ErrorKind.INVALID_REQUEST,
                    f"scorer {name!r} failed to load ({type(exc).__name__}: {exc}); "
                    "nothing was changed",
                    param=f"scorers.{name}",
                ) from None

    async def _wait_staged(self, generation: int, models: list[str]) -> None:
        deadline = time.monotonic() + STAGE_TIMEOUT_S
        self._reloading = set(models)
        try:
            while True:
                status = await self.member.registry.stage_status.remote(generation, models)
                if status["errors"]:
                    replica, error = next(iter(status["errors"].items()))
                    name = error.split(":", 1)[0]
                    raise RefereeError(
                        ErrorKind.INVALID_REQUEST,
                        f"the new version failed to load on {len(status['errors'])} "
                        f"replica(s), so nothing was changed; replica {replica}: {error}",
                        param=f"scorers.{name}",
                    )
                if not status["waiting"]:
                    return
                if time.monotonic() > deadline:
                    raise RefereeError(
                        ErrorKind.TIMEOUT,
                        f"replicas {status['waiting']} did not load the new version within "
                        f"{STAGE_TIMEOUT_S:.0f}s; nothing was changed",
                    )
                await asyncio.sleep(POLL_S)
        finally:
            self._reloading = set()

    async def _wait_applied(self, generation: int) -> None:
        """Until every live ingress replica (this one included) serves the change."""
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while True:
            waiting = await self.member.registry.not_applied.remote(generation)
            if not waiting and self.member.applied >= generation:
                return
            if time.monotonic() > deadline:
                log.warning("live reload %d: replicas %s had not switched after %.0fs",
                            generation, waiting, ACK_TIMEOUT_S)  # fmt: skip
                return
            await asyncio.sleep(POLL_S / 2)

    def _retire_later(self, models: list[str], generation: int, after_s: float) -> None:
        """Old versions are unloaded once requests started on them had time to finish."""

        async def retire() -> None:
            await asyncio.sleep(after_s)
            for name in models:
                with contextlib.suppress(Exception):
                    await self.member.registry.retire.remote(name, generation)

        task = asyncio.get_running_loop().create_task(retire())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _is_model(settings: Settings, name: str) -> bool:
    from referee.ray.app import MODEL_KINDS

    return settings.scorers[name].kind in MODEL_KINDS
