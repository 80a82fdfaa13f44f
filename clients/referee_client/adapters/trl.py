"""TRL: a reward function for ``GRPOTrainer(reward_funcs=[...])``.

    from referee_client.adapters.trl import RefereeReward
    trainer = GRPOTrainer(model=..., reward_funcs=[RefereeReward("http://referee:8000",
                          pipeline="math_rl")], train_dataset=dataset, args=GRPOConfig(...))

TRL calls ``reward_func(prompts=..., completions=..., completion_ids=..., trainer_state=...,
**dataset_columns)`` and expects one float per completion (``None``: not applicable, which
TRL turns into NaN and leaves out of the reward sum, ``nansum``). A completion whose outcome is
``failed`` (no verdict: a verifier timed out, a judge was down) or ``invalid`` is returned as
``None`` (or ``error_value`` when given), never as a made-up score; failed items that are
retryable are first sent again (``$REFEREE_RETRY_FAILED_ITEMS`` rounds, default 1).
Completions are text, or (conversational datasets) lists of message dicts whose content is
text or, for multimodal prompts, a list of parts (the text parts are sent). The first
dataset column named in ``reference_columns`` is sent as the item's ``reference``; the other
JSON-like columns go into ``metadata``. Completions of the same prompt share a ``group``, so
a pipeline's group normalisation sees each GRPO group.

With several processes TRL computes rewards on each process's own completions and
gathers them afterwards, so one prompt's completions can be split across processes. Give
``group_size=num_generations``: the group id is then the prompt (and the training step),
the same on every process, and the server holds each group until all its completions
have arrived from all processes, then normalises it whole.

``AsyncRefereeReward`` is the same function as a coroutine: TRL runs async reward
functions concurrently on its own event loop, so other reward functions (and, with
several, each other) do not wait for Referee.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from referee_client.adapters._common import process_client, rewards_of
from referee_client.client import AsyncRewardClient, RewardClient
from referee_client.schema import RewardItem, RewardOptions

__all__ = ["AsyncRefereeReward", "RefereeReward"]

# What TRL passes that is not a dataset column.
TRAINER_KWARGS = frozenset({"completion_ids", "trainer_state", "log_extra", "log_metric",
                            "step", "run_name", "environments"})  # fmt: skip
DEFAULT_REFERENCE_COLUMNS = ("solution", "answer", "ground_truth", "reference")


def _text(content: Any) -> str | None:
    """A message's text: a string, or (multimodal) the text parts of a list of parts
    like ``{"type": "text", "text": ...}`` joined by newlines (images are not sent)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, Mapping) for p in content):
        return "\n".join(str(p["text"]) for p in content if p.get("type") == "text")
    return None


def _messages(value: Any, what: str) -> list[dict[str, str]]:
    out = []
    for message in value:
        text = _text(message.get("content")) if isinstance(message, Mapping) else None
        if text is None:
            raise ValueError(
                f"{what}: expected messages like {{'role': ..., 'content': str or "
                "[{'type': 'text', 'text': str}, ...]}"
            )
        out.append({"role": str(message.get("role", "assistant")), "content": text})
    return out


def _json_like(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class RefereeReward:
    """A TRL reward function backed by a Referee pipeline."""

    def __init__(
        self, base_url: str | None = None, *, pipeline: str = "default",
        reference_columns: Sequence[str] = DEFAULT_REFERENCE_COLUMNS,
        metadata_columns: Sequence[str] | None = None, name: str | None = None,
        error_value: float | None = None, client: RewardClient | None = None,
        api_key: str | None = None, group_size: int | None = None,
    ) -> None:  # fmt: skip
        if group_size is not None and group_size < 1:
            raise ValueError("group_size must be >= 1 (GRPOConfig.num_generations)")
        self.pipeline = pipeline
        self.group_size = group_size
        self.reference_columns = tuple(reference_columns)
        self.metadata_columns = None if metadata_columns is None else tuple(metadata_columns)
        self.error_value = error_value
        self.__name__ = name or f"referee_{pipeline}"  # TRL logs rewards under this name
        self._client = client
        self._base_url = base_url
        self._api_key = api_key
        self._calls = itertools.count()

    @property
    def client(self) -> RewardClient:
        return self._client or process_client(self._base_url, self._api_key)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        items = self.items(prompts, completions, **kwargs)
        response = self.client.score(items, pipeline=self.pipeline, options=self.options)
        return rewards_of(response, self.error_value)

    @property
    def options(self) -> RewardOptions:
        return RewardOptions(group_size=self.group_size)

    def _group(self, call: int, prompt_key: str, groups: dict[str, str], state: Any) -> str:
        if self.group_size is None:  # whole groups in this call: numbered per call
            return groups.setdefault(prompt_key, f"{call}-p{len(groups)}")
        # The same id on every process: the prompt and the training step.
        step = getattr(state, "global_step", None)
        digest = hashlib.blake2b(prompt_key.encode(), digest_size=12).hexdigest()
        return f"{self.__name__}:{step}:{digest}"

    def items(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[RewardItem]:
        """The request items for TRL's arguments (one per completion, in order)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        columns = {k: v for k, v in kwargs.items() if k not in TRAINER_KWARGS}
        reference = next((c for c in self.reference_columns if c in columns), None)
        wanted = self.metadata_columns
        extra = {
            k: v for k, v in columns.items() if k != reference and (wanted is None or k in wanted)
        }
        call = next(self._calls)
        groups: dict[str, str] = {}
        items = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            prompt_key = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
            group = self._group(call, prompt_key, groups, kwargs.get("trainer_state"))
            item: dict[str, Any] = {"id": f"{call}-{i}", "group": group}
            if isinstance(completion, str):
                item["response"] = completion
                item["prompt"] = prompt if isinstance(prompt, str) else None
            else:
                history = [] if isinstance(prompt, str) else _messages(prompt, f"prompts[{i}]")
                item["messages"] = history + _messages(completion, f"completions[{i}]")
            if reference is not None and columns[reference][i] is not None:
                item["reference"] = str(columns[reference][i])
            metadata = {k: v[i] for k, v in extra.items() if _json_like(v[i])}
            if metadata:
                item["metadata"] = metadata
            items.append(RewardItem.model_validate(item))
        return items


class AsyncRefereeReward(RefereeReward):
    """``RefereeReward`` as a coroutine function (TRL awaits it on its event loop)."""

    def __init__(self, base_url: str | None = None, *, client: AsyncRewardClient | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(base_url, **kwargs)
        self._async_client = client
        self._async_clients: dict[tuple[int, int], AsyncRewardClient] = {}

    def async_client(self) -> AsyncRewardClient:
        if self._async_client is not None:
            return self._async_client
        key = (os.getpid(), id(asyncio.get_running_loop()))  # a client per loop
        client = self._async_clients.get(key)
        if client is None:
            client = AsyncRewardClient(self._base_url, api_key=self._api_key)
            self._async_clients[key] = client
        return client

    async def __call__(  # type: ignore[override]
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        items = self.items(prompts, completions, **kwargs)
        response = await self.async_client().score(
            items, pipeline=self.pipeline, options=self.options
        )
        return rewards_of(response, self.error_value)
