"""Reward functions for exercising the service itself: values read from the item's
metadata, and a deliberately slow scorer. Tests and benchmarks use them through the
real ``python`` scorer, so the whole engine path runs."""

from __future__ import annotations

import asyncio

__all__ = ["metadata_value", "slow_reward"]


def metadata_value(metadata: dict[str, object] | None, key: str = "score") -> float:
    """``metadata[key]`` as the reward (raises when it is missing or not a number)."""
    if not metadata or key not in metadata:
        raise KeyError(f"metadata has no {key!r}")
    value = metadata[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"metadata[{key!r}] must be a number, got {type(value).__name__}")
    return float(value)


async def slow_reward(response: str, delay_s: float = 0.5) -> float:
    """Waits ``delay_s`` (a slow model or remote judge), then rewards the length in words."""
    await asyncio.sleep(delay_s)
    return float(len(response.split()))
