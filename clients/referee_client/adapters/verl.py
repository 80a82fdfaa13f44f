"""verl: custom reward functions.

verl >= 0.7 (its reward loop awaits one ``compute_score`` per rollout, all at once):

    reward.custom_reward_function.path=$(python -m referee_client.adapters.verl)
    reward.custom_reward_function.name=compute_score_async
    +reward.custom_reward_function.reward_kwargs.pipeline=math_rl
    +reward.custom_reward_function.reward_kwargs.group_size=8     # = rollout.n
    reward.reward_manager.source=importlib
    reward.reward_manager.module.path=$(python -m referee_client.adapters.verl manager)
    reward.reward_manager.name=RefereeRewardManager

``compute_score_async`` coalesces the calls awaited at the same time into batched
requests (a window of ``$REFEREE_BATCH_WINDOW_MS``, default 5 ms, at most
``$REFEREE_BATCH_MAX_ITEMS``, default 512, items per request). A rollout's group is its
``uid`` (verl's id of a prompt's rollouts), which verl's own reward managers do not pass
to reward functions: ``RefereeRewardManager`` (verl's naive manager plus the uid, in
``verl_manager.py``) does. Without it the group is ``extra_info["group"]``, else the
dataset row (``data_source`` + ``extra_info["index"]``). With ``group_size`` the server
assembles each group across requests before a group-normalised pipeline scores it.

verl <= 0.6 (``reward_model.reward_manager=batch``): ``compute_score_batch``, one request
per batch; ``compute_score``: the per-item signature of the naive manager.

Settings come from ``reward_kwargs`` first, then the environment: ``$REFEREE_URL``,
``$REFEREE_API_KEY``, ``$REFEREE_PIPELINE``, ``$REFEREE_GROUP_SIZE``.
``extra_info`` goes into the item's ``metadata``: numpy values become plain numbers and
lists, values JSON cannot carry are dropped with a warning. A ``ground_truth`` that is
not a string (a list of accepted answers, a dict) is sent as its JSON text. An item the
pipeline could not score (outcome ``failed`` or ``invalid``) gets ``$REFEREE_ERROR_REWARD``
(default 0.0), since verl needs a number; items that failed retryably are first sent
again (``$REFEREE_RETRY_FAILED_ITEMS`` rounds, default 1).

With ``REFEREE_VERL_FLAGS=1`` each item's result is a dict, ``{"score": reward,
"referee_failed": 0|1, "referee_retryable": 0|1, "referee_invalid": 0|1}``: verl's reward
managers put ``score`` in the reward tensor and every other key into the batch's
``non_tensor_batch`` (``reward_extra_info``), where a trainer can mask or filter the
placeholder rewards (e.g. a ``filter_groups`` metric, or a custom advantage step). Off by
default because verl releases before dict support read a dict as 0.0.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from referee_client._json import json_data
from referee_client.adapters._coalesce import Coalescer
from referee_client.adapters._common import (
    outcome_flags,
    process_client,
    result_flags,
    rewards_of,
)
from referee_client.client import AsyncRewardClient
from referee_client.schema import RewardItem, RewardOptions

__all__ = ["compute_score", "compute_score_async", "compute_score_batch"]


def _metadata(data_source: Any, extra: Any) -> dict[str, Any]:
    fields = {"data_source": data_source, **(extra if isinstance(extra, dict) else {})}
    metadata: dict[str, Any] = {}
    for key, value in fields.items():
        try:
            metadata[str(key)] = json_data(value, f".{key}")
        except ValueError as exc:
            warnings.warn(f"referee verl adapter: extra_info {exc}; dropped", stacklevel=4)
    return metadata


def _reference(truth: Any) -> str | None:
    if truth is None or isinstance(truth, str):
        return truth
    value = json_data(truth, ".ground_truth")  # numpy scalars and arrays included
    return value if isinstance(value, str) else json.dumps(value)


def _group(data_source: Any, metadata: dict[str, Any], uid: Any = None) -> str | None:
    """verl's rollout uid, else the dataset's ``group``, else the dataset row."""
    for value in (uid, metadata.get("uid"), metadata.get("group")):
        if value is not None:
            return str(value)
    if metadata.get("index") is not None:
        return f"row:{data_source}:{metadata.get('split', '')}:{metadata['index']}"
    return None


def _item(i: int, data_source: Any, solution: str, truth: Any, extra: Any) -> RewardItem:
    metadata = _metadata(data_source, extra)
    return RewardItem(
        id=str(i), response=solution, metadata=metadata, reference=_reference(truth),
        group=_group(data_source, metadata),
    )  # fmt: skip


def compute_score_batch(
    data_sources: Sequence[Any], solution_strs: Sequence[str], ground_truths: Sequence[Any],
    extra_infos: Sequence[Any] | None = None, **kwargs: Any,
) -> list[float] | list[dict[str, float]]:  # fmt: skip
    """Rewards for a batch, in order (verl's BatchRewardManager signature)."""
    extras = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    items = [
        _item(i, *row)
        for i, row in enumerate(
            zip(data_sources, solution_strs, ground_truths, extras, strict=True)
        )
    ]
    if not items:
        return []
    response = process_client().score(items, pipeline=os.environ.get("REFEREE_PIPELINE", "default"))
    fallback = float(os.environ.get("REFEREE_ERROR_REWARD", "0.0"))
    rewards = [fallback if r is None else r for r in rewards_of(response, fallback)]
    if os.environ.get("REFEREE_VERL_FLAGS", "0") not in ("1", "true", "yes"):
        return rewards
    return [
        {"score": reward, **flags}
        for reward, flags in zip(rewards, outcome_flags(response), strict=True)
    ]


def compute_score(
    data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None, **kwargs: Any
) -> float | dict[str, float]:
    """One reward (verl's default reward manager signature)."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info])[0]


_coalescers: dict[tuple[int, int, str, str | None, str, int | None], Coalescer] = {}


def _setting(kwargs: dict[str, Any], name: str) -> str | None:
    value = kwargs.get(name)
    return str(value) if value is not None else os.environ.get(f"REFEREE_{name.upper()}")


def _coalescer(kwargs: dict[str, Any]) -> Coalescer:
    url = _setting(kwargs, "url")
    if not url:
        raise ValueError("set REFEREE_URL (e.g. http://referee:8000) or reward_kwargs.url")
    api_key = _setting(kwargs, "api_key")
    pipeline = _setting(kwargs, "pipeline") or "default"
    size = _setting(kwargs, "group_size")
    group_size = int(size) if size else None
    key = (os.getpid(), id(asyncio.get_running_loop()), url, api_key, pipeline, group_size)
    coalescer = _coalescers.get(key)
    if coalescer is None:
        window_ms = float(os.environ.get("REFEREE_BATCH_WINDOW_MS", "5"))
        max_items = int(os.environ.get("REFEREE_BATCH_MAX_ITEMS", "512"))
        coalescer = _coalescers[key] = Coalescer(
            AsyncRewardClient(url, api_key=api_key), pipeline=pipeline,
            options=RewardOptions(group_size=group_size), window_s=window_ms / 1000,
            max_items=max_items,
        )  # fmt: skip
    return coalescer


async def compute_score_async(
    data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None,
    **kwargs: Any,
) -> float | dict[str, float]:  # fmt: skip
    """One reward, batched with the calls awaited at the same time (verl >= 0.7's reward
    loop). ``kwargs``: verl's ``reward_kwargs`` (``pipeline``, ``group_size``, ``url``,
    ``api_key``) and, from ``RefereeRewardManager``, ``uid``. With
    ``REFEREE_VERL_FLAGS=1``, a dict with the outcome flags, as ``compute_score_batch``."""
    metadata = _metadata(data_source, extra_info)
    item = RewardItem(
        id="0", response=solution_str, metadata=metadata, reference=_reference(ground_truth),
        group=_group(data_source, metadata, kwargs.get("uid")),
    )  # fmt: skip
    result = await _coalescer(kwargs).score(item)
    fallback = float(os.environ.get("REFEREE_ERROR_REWARD", "0.0"))
    reward = fallback if result.error is not None or result.reward is None else result.reward
    if os.environ.get("REFEREE_VERL_FLAGS", "0") not in ("1", "true", "yes"):
        return reward
    return {"score": reward, **result_flags(result)}


def _paths() -> None:
    """``python -m referee_client.adapters.verl [manager]``: the file verl loads."""
    here = Path(__file__).resolve()
    print(here.with_name("verl_manager.py") if sys.argv[1:] == ["manager"] else here)


if __name__ == "__main__":
    _paths()
