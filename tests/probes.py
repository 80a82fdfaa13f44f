"""Test probes: reward functions for exercising the service itself (never shipped in the
package: `gated_reward` reads a path from request metadata). Values read from the item's
metadata, and a deliberately slow scorer. Tests and benchmarks use them through the
real ``python`` scorer, so the whole engine path runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

__all__ = ["gated_reward", "metadata_value", "slow_first_time", "slow_reward"]


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


async def gated_reward(response: str, metadata: dict[str, object] | None) -> float:
    """Waits until the file named by ``metadata['gate']`` exists (a test opens the gate
    once it has seen what it waits for, so no timing window decides the outcome), then
    rewards the length in words."""
    if not metadata or not isinstance(metadata.get("gate"), str):
        raise KeyError("metadata has no 'gate' path")
    gate = Path(str(metadata["gate"]))
    while not await asyncio.to_thread(gate.exists):
        await asyncio.sleep(0.01)
    return float(len(response.split()))


_SEEN: set[str] = set()


async def slow_first_time(response: str, id: str, delay_s: float = 1.0) -> float:
    """A verifier that is overloaded once: the first time it sees an item id whose response
    starts with "slow" it waits ``delay_s`` (past its scorer's timeout), then answers at
    once. Rewards the length in words."""
    if response.startswith("slow") and id not in _SEEN:
        _SEEN.add(id)
        await asyncio.sleep(delay_s)
    return float(len(response.split()))
