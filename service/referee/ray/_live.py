"""Live reloads in Ray Serve mode: every replica switches together, no item lost.

The admin call reaches one ingress replica (the leader for that call). Every replica of
the application (ingress, group owner, scorer) follows one small named actor, the
registry, which holds the live changes made to the deployed config:

1. **Stage.** The leader validates the new config, builds and checks the new ingress-side
   scorers, and stages the change. Each replica of a changed model scorer loads the new
   version *beside* the old one, in its own process, warms it up and reports.
2. **Commit**, once every live replica of every changed scorer has reported success (any
   failure: the stage is dropped everywhere and the call answers with the loader's
   reason; the old version never stopped serving). Each ingress replica then swaps its
   engine state as the embedded server does (requests already started finish on the old
   version) and acknowledges.
3. **Retire.** Calls carry the scorer revision they were started with, and a scorer
   replica answers each with that revision's model, so no response mixes versions. After
   every ingress replica has acknowledged and requests started before had time to
   finish, the replicas unload the old version.

A replica that starts later (autoscaling, a restart) loads what is committed. The
registry belongs to one deployed config: a redeploy with another config starts from it
afresh. Model scorers that are not deployed (a new model scorer in an applied config)
need a deployment of their own, so a redeploy; that is refused with what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from referee.config import Settings

__all__ = ["LiveMember", "Registry", "config_key", "registry_handle"]

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often a replica asks the registry for news
LIVE_S = 5.0  # a replica not heard from for this long is gone (a dead one is not waited on)
STAGE_TIMEOUT_S = 900.0  # loading a large model on every replica
ACK_TIMEOUT_S = 60.0  # every ingress replica swapped
SWITCH_LEAD_S = 1.0  # replicas swap at commit time + this: all learn of it before (POLL_S)


def config_key(config: dict[str, Any]) -> str:
    """Names the registry of one deployed config."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Registry:
    """The live changes of one deployed config (a named Ray actor; see the module doc)."""

    def __init__(self) -> None:
        self.generation = 0
        self.committed: dict[str, Any] | None = None  # the last committed change
        self.staged: dict[str, Any] | None = None
        self.reports: dict[str, tuple[int, str | None]] = {}  # replica -> (gen, error)
        self.members: dict[str, dict[str, Any]] = {}  # replica -> role, scorer, seen, gen
        self.retire_below: dict[str, int] = {}  # scorer -> revisions below may go

    # -- every replica, every POLL_S --------------------------------------------------
    def sync(
        self, replica: str, role: str, scorer: str | None, applied: int,
        report: tuple[int, str | None] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Heartbeat; returns what the replica should do."""
        self.members[replica] = {"role": role, "scorer": scorer, "seen": time.monotonic(),
                                 "applied": applied}  # fmt: skip
        if report is not None:
            self.reports[replica] = report
        return {
            "generation": self.generation,
            "committed": self.committed,
            "staged": self.staged,
            "retire_below": dict(self.retire_below),
        }

    def seed(self, change: dict[str, Any]) -> None:
        """A restarted registry (its state is in memory) learns the last committed change
        back from a replica that applied it."""
        if change["generation"] > self.generation:
            self.committed, self.generation = change, change["generation"]

    def current(self) -> dict[str, Any] | None:
        return self.committed

    # -- the leader ---------------------------------------------------------------------
    def stage(self, expected: int, change: dict[str, Any]) -> int | str:
        """Stage ``change`` as the next generation, if nothing was changed since
        ``expected`` and nothing else is staged; else say why not."""
        if self.staged is not None:
            return "another reload is in progress; retry when it has finished"
        if expected != self.generation:
            return "the config was changed by another reload meanwhile; retry"
        self.staged = {**change, "generation": self.generation + 1}
        self.reports = {}
        return self.generation + 1

    def stage_status(self, generation: int, models: list[str]) -> dict[str, Any]:
        """Which live replicas of the changed ``models`` have not reported yet, and the
        errors of those that failed."""
        waiting, errors = [], {}
        for replica, member in self._live().items():
            if member["role"] != "scorer" or member["scorer"] not in models:
                continue
            report = self.reports.get(replica)
            if report is None or report[0] != generation:
                waiting.append(replica)
            elif report[1] is not None:
                errors[replica] = f"{member['scorer']}: {report[1]}"
        return {"waiting": waiting, "errors": errors}

    def commit(self, generation: int) -> bool:
        if self.staged is None or self.staged["generation"] != generation:
            return False
        self.committed, self.staged = self.staged, None
        self.committed["switch_at"] = time.time() + SWITCH_LEAD_S
        self.generation = generation
        return True

    def abort(self, generation: int) -> None:
        if self.staged is not None and self.staged["generation"] == generation:
            self.staged = None

    def not_applied(self, generation: int) -> list[str]:
        """Live ingress-side replicas (ingress, group owner) that have not swapped yet."""
        return [
            replica for replica, m in self._live().items()
            if m["role"] != "scorer" and m["applied"] < generation
        ]  # fmt: skip

    def retire(self, scorer: str, below: int) -> None:
        self.retire_below[scorer] = max(below, self.retire_below.get(scorer, 0))

    def _live(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        self.members = {r: m for r, m in self.members.items() if now - m["seen"] < LIVE_S}
        return self.members


def registry_handle(config: dict[str, Any]) -> Any:
    """The registry actor of ``config``'s deployment (created by whoever asks first)."""
    import ray

    actor = ray.remote(num_cpus=0, max_restarts=-1)(Registry)
    return actor.options(
        name=f"referee-live-{config_key(config)}", namespace="referee", get_if_exists=True,
        lifetime="detached",
    ).remote()  # fmt: skip


@dataclass
class LiveMember:
    """A replica's side of the protocol: heartbeats, and a callback for each update."""

    registry: Any
    role: str  # "ingress", "groups" or "scorer"
    scorer: str | None = None
    replica: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    applied: int = 0
    last: dict[str, Any] | None = None  # the committed change applied last
    report: tuple[int, str | None] | None = None
    _task: asyncio.Task[None] | None = None

    def start(self, on_update: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        async def loop() -> None:
            while True:
                try:
                    view = await self.registry.sync.remote(
                        self.replica, self.role, self.scorer, self.applied, self.report
                    )
                    if view["generation"] < self.applied and self.last is not None:
                        await self.registry.seed.remote(self.last)  # it restarted
                    await on_update(view)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the registry restarting, a failed apply: next round
                    log.exception("live updates: sync of %s %s failed", self.role, self.replica)
                await asyncio.sleep(POLL_S)

        self._task = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def change_of(settings: Settings, rebuild: set[str], revisions: dict[str, int]) -> dict[str, Any]:
    """What is published for a change: the config without the sections that only a
    restart changes (they hold the secrets; each replica keeps its own), what to rebuild,
    and every model scorer's revision."""
    config = settings.model_dump(mode="json", exclude={"server", "cache", "groups"})
    return {"config": config, "rebuild": sorted(rebuild), "revisions": revisions}


def settings_of(change: dict[str, Any], current: Settings) -> Settings:
    """A published change as settings, with this replica's restart-only sections."""
    data = {**change["config"]}
    settings = Settings.model_validate(data)
    return settings.model_copy(
        update={"server": current.server, "cache": current.cache, "groups": current.groups}
    )
