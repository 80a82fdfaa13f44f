"""verl >= 0.7: ``RefereeRewardManager``, verl's naive reward manager that also passes each
rollout's ``uid`` (verl's id shared by the rollouts of one prompt) to the reward function,
in ``extra_info["uid"]``, so that Referee groups a prompt's rollouts exactly as verl's GRPO
does. verl loads this file itself (``reward.reward_manager.source=importlib``); it imports
verl, so nothing else imports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

__all__ = ["RefereeRewardManager"]


class RefereeRewardManager(NaiveRewardManager):
    async def run_single(self, data: Any) -> dict[str, Any]:
        item = data[-1:]  # a new DataProto: the batch's own rows stay as they were
        uid = item.non_tensor_batch.get("uid")
        if uid is not None:
            extra = item.non_tensor_batch.get("extra_info")
            own = dict(extra[0]) if extra is not None and isinstance(extra[0], dict) else {}
            column = np.empty(1, dtype=object)
            column[0] = {**own, "uid": str(uid[0])}
            item.non_tensor_batch["extra_info"] = column
        return await super().run_single(item)
