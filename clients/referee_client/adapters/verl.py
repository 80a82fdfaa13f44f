"""verl: a custom reward function, configured through the environment.

    export REFEREE_URL=http://referee:8000 REFEREE_PIPELINE=math_rl
    VERL_REWARD=$(python -c 'import referee_client.adapters.verl as m; print(m.__file__)')
    python -m verl.trainer.main_ppo ... \\
        custom_reward_function.path=$VERL_REWARD \\
        custom_reward_function.name=compute_score_batch \\
        reward_model.reward_manager=batch

``compute_score`` has the per-item signature verl's default (naive) reward manager calls;
``compute_score_batch`` the one its ``batch`` reward manager calls, one request per batch
(much faster). ``extra_info`` goes into the item's ``metadata``: numpy values become plain
numbers and lists, values JSON cannot carry are dropped with a warning. verl passes no
rollout ``uid`` to reward functions, so items are grouped only when the dataset's
``extra_info`` carries a ``group`` key. A ``ground_truth`` that is not a string (a list of
accepted answers, a dict) is sent as its JSON text. An item the pipeline could not score
(outcome ``failed`` or ``invalid``) gets ``$REFEREE_ERROR_REWARD`` (default 0.0), since verl
needs a number; items that failed retryably are first sent again
(``$REFEREE_RETRY_FAILED_ITEMS`` rounds, default 1).

With ``REFEREE_VERL_FLAGS=1`` each item's result is a dict, ``{"score": reward,
"referee_failed": 0|1, "referee_retryable": 0|1, "referee_invalid": 0|1}``: verl's reward
managers put ``score`` in the reward tensor and every other key into the batch's
``non_tensor_batch`` (``reward_extra_info``), where a trainer can mask or filter the
placeholder rewards (e.g. a ``filter_groups`` metric, or a custom advantage step). Off by
default because verl releases before dict support read a dict as 0.0.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

from referee_client._json import json_data
from referee_client.adapters._common import outcome_flags, process_client, rewards_of
from referee_client.schema import RewardItem

__all__ = ["compute_score", "compute_score_batch"]


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


def _item(i: int, data_source: Any, solution: str, truth: Any, extra: Any) -> RewardItem:
    metadata = _metadata(data_source, extra)
    group = metadata.get("group")
    return RewardItem(
        id=str(i), response=solution, metadata=metadata, reference=_reference(truth),
        group=None if group is None else str(group),
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
