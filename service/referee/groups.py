"""Group assembly: whole groups out of rollouts that arrive one request at a time.

Group-relative steps (group normalisation, pairwise/listwise judging, group consistency)
need every rollout of a prompt. OpenRLHF >= 0.11 posts each rollout on its own and verl's
reward loop calls its reward function once per item, so the items of one group come in
many requests. When a request says how large a group is (``options.group_size``, or the
pipeline's ``group_size``), the engine hands the items of each group it holds only part
of to a :class:`GroupAssembler`, which

- keeps them, keyed by ``(pipeline, group id)``, until ``group_size`` have arrived, then
  scores the group as one request and answers every waiting request with its own items,
  in its own order (ids restored);
- after ``groups.timeout_s`` scores what arrived, each item saying so in ``info``
  (``on_timeout: score``), or answers each item with a ``group_incomplete`` error
  (``on_timeout: error``);
- bounds memory: at most ``groups.max_pending_items`` items wait at once; a request that
  would go over is refused whole (429, retry later), never half-queued.

A group that completes leaves the table before it is scored, so a later item with the
same id starts a new group (a prompt that appears twice in a batch gives two groups).
A request that gives up (its own timeout, a client that went away) leaves its items in
the group: the others still need them for their statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from referee.errors import ErrorKind, RefereeError
from referee.metrics import Metrics
from referee_client.schema import ItemError, RewardItem, RewardResult

__all__ = ["GroupAssembler", "GroupKey", "ScoreGroup", "partial_groups"]

log = logging.getLogger(__name__)

GroupKey = tuple[str, str]  # (pipeline, group id)
# Scores one assembled group: (pipeline, items, the group's reference rewards, deadline)
# -> one result per item, in order.
ScoreGroup = Callable[[str, list[RewardItem], list[float] | None, float],
                      Awaitable[list[RewardResult]]]  # fmt: skip

INCOMPLETE = "group_incomplete"


def partial_groups(items: list[RewardItem], size: int) -> tuple[list[int], dict[str, list[int]]]:
    """Split a request: the indices scored now (no group, or a group this request holds at
    least ``size`` items of), and per group id the indices of groups it holds part of."""
    by_group: dict[str, list[int]] = {}
    direct: list[int] = []
    for i, item in enumerate(items):
        if item.group is None:
            direct.append(i)
        else:
            by_group.setdefault(item.group, []).append(i)
    parts: dict[str, list[int]] = {}
    for group, indices in by_group.items():
        if len(indices) >= size:
            direct.extend(indices)
        else:
            parts[group] = indices
    direct.sort()
    return direct, parts


@dataclass
class _Member:
    """One request's items of one group, and where its answer goes."""

    items: list[RewardItem]
    answer: asyncio.Future[list[RewardResult]]
    deadline: float


@dataclass
class _Group:
    key: GroupKey
    size: int
    references: list[float] | None
    started: float = field(default_factory=time.monotonic)
    members: list[_Member] = field(default_factory=list)
    count: int = 0
    timer: asyncio.TimerHandle | None = None


class GroupAssembler:
    def __init__(
        self,
        score: ScoreGroup,
        *,
        timeout_s: float,
        on_timeout: Literal["score", "error"],
        max_pending_items: int,
        metrics: Metrics,
    ) -> None:
        self._score = score
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout
        self.max_pending_items = max_pending_items
        self.metrics = metrics
        self._groups: dict[GroupKey, _Group] = {}
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending_items(self) -> int:
        return self._pending

    def submit(
        self,
        pipeline: str,
        parts: dict[str, list[RewardItem]],
        size: int,
        deadline: float,
        references: dict[str, list[float]] | None = None,
    ) -> list[asyncio.Future[list[RewardResult]]]:
        """Add each group's items (``parts``: group id -> this request's items of it) and
        return one future per part, in ``parts`` order, resolved with those items' results.
        All or nothing: a request that would overflow the table or contradicts a group
        already waiting is refused before any of its items is added."""
        n_new = 0  # items that will wait (those completing a group do not)
        for group_id, items in parts.items():
            waiting = self._groups.get((pipeline, group_id))
            have = 0 if waiting is None else waiting.count
            n_new += len(items) if have + len(items) < size else -have
        if n_new > 0 and self._pending + n_new > self.max_pending_items:
            self.metrics.overloaded.labels("group_assembly").inc()
            raise RefereeError(
                ErrorKind.OVERLOADED,
                f"{self._pending} items are waiting for the rest of their groups (limit "
                f"{self.max_pending_items}, groups.max_pending_items); retry shortly",
                retry_after_s=1.0,
            )
        for group_id, items in parts.items():
            waiting = self._groups.get((pipeline, group_id))
            if waiting is not None and waiting.size != size:
                raise RefereeError(
                    ErrorKind.INVALID_REQUEST,
                    f"group {group_id!r} is being assembled with group_size {waiting.size}; "
                    f"this request says {size}: send one size per group",
                    param="options.group_size",
                )
            if waiting is not None and waiting.count + len(items) > size:
                raise RefereeError(
                    ErrorKind.INVALID_REQUEST,
                    f"group {group_id!r} has {waiting.count} of {size} items waiting; this "
                    f"request adds {len(items)}, more than the group holds",
                    param="options.group_size",
                )
        loop = asyncio.get_running_loop()
        answers = []
        for group_id, items in parts.items():
            key = (pipeline, group_id)
            group = self._groups.get(key)
            if group is None:
                refs = (references or {}).get(group_id)
                group = self._groups[key] = _Group(key, size, refs)
                group.timer = loop.call_later(self.timeout_s, self._expire, key)
            member = _Member(items, loop.create_future(), deadline)
            group.members.append(member)
            group.count += len(items)
            self._pending += len(items)
            answers.append(member.answer)
            if group.count >= size:
                self._close(group, complete=True)
        self.metrics.group_pending_items.set(self._pending)
        return answers

    def _expire(self, key: GroupKey) -> None:
        group = self._groups.get(key)
        if group is not None:
            self._close(group, complete=False)

    def _close(self, group: _Group, *, complete: bool) -> None:
        del self._groups[group.key]
        if group.timer is not None:
            group.timer.cancel()
        self._pending -= group.count
        self.metrics.group_pending_items.set(self._pending)
        outcome = "complete" if complete else "timeout"
        self.metrics.groups.labels(group.key[0], outcome).inc()
        self.metrics.group_wait.labels(group.key[0]).observe(time.monotonic() - group.started)
        task = asyncio.ensure_future(self._run(group, complete))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, group: _Group, complete: bool) -> None:
        pipeline, group_id = group.key
        note = None
        if not complete:
            note = (
                f"group {group_id!r} incomplete: {group.count} of {group.size} items arrived "
                f"within groups.timeout_s={self.timeout_s:g}s"
            )
            log.warning("%s: %s", pipeline, note)
        if note is not None and self.on_timeout == "error":
            for member in group.members:
                _answer(member, [_incomplete(item.id, note) for item in member.items])
            return
        # One request for the whole group: ids made unique (two requests may both say
        # "0"), the originals put back on the way out.
        items = [
            item.model_copy(update={"id": f"{m}.{i}"})
            for m, member in enumerate(group.members)
            for i, item in enumerate(member.items)
        ]
        deadline = max(member.deadline for member in group.members)
        try:
            results = await self._score(pipeline, items, group.references, deadline)
        except BaseException as exc:
            for member in group.members:
                if not member.answer.done():
                    member.answer.set_exception(exc)
                    member.answer.exception()  # seen here; a waiting request re-raises it
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for member in group.members:
            own = []
            for item in member.items:
                result = results[at].model_copy(update={"id": item.id})
                at += 1
                if note is not None:
                    result.info = {**(result.info or {}), "group": note + "; scored with those"}
                own.append(result)
            _answer(member, own)

    async def close(self) -> None:
        """Answer every waiting group now (server shutting down): 503 for each waiter."""
        for group in list(self._groups.values()):
            del self._groups[group.key]
            if group.timer is not None:
                group.timer.cancel()
            for member in group.members:
                if not member.answer.done():
                    member.answer.set_exception(RefereeError(
                        ErrorKind.NOT_READY, "server is shutting down; retry elsewhere",
                        retry_after_s=1.0,
                    ))  # fmt: skip
                    member.answer.exception()
        self._pending = 0
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _answer(member: _Member, results: list[RewardResult]) -> None:
    if not member.answer.done():  # a request that gave up is not answered
        member.answer.set_result(results)


def _incomplete(item_id: str, note: str) -> RewardResult:
    return RewardResult(id=item_id, reward=None, error=ItemError(type=INCOMPLETE, message=note))
