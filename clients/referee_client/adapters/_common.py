"""What the trainer adapters share: one client per process, rewards out of a response."""

from __future__ import annotations

import os
import threading

from referee_client.client import RewardClient
from referee_client.schema import RewardResponse, RewardResult

__all__ = ["outcome_flags", "process_client", "rewards_of"]

_lock = threading.Lock()
_clients: dict[tuple[int, str, str | None], RewardClient] = {}


def process_client(base_url: str | None = None, api_key: str | None = None) -> RewardClient:
    """A client per process and URL (trainers fork and spawn workers; a client's loop
    thread does not survive a fork), from ``$REFEREE_URL`` / ``$REFEREE_API_KEY`` by default."""
    url = base_url or os.environ.get("REFEREE_URL")
    if not url:
        raise ValueError("set REFEREE_URL (e.g. http://referee:8000) or pass base_url")
    key = (os.getpid(), url, api_key)
    with _lock:
        client = _clients.get(key)
        if client is None:
            # Items whose verifier timed out or was overloaded are sent again once by
            # default: a trainer would otherwise have to drop them.
            retries = int(os.environ.get("REFEREE_RETRY_FAILED_ITEMS", "1"))
            client = _clients[key] = RewardClient(url, api_key=api_key, retry_failed_items=retries)
        return client


def rewards_of(response: RewardResponse, error_value: float | None) -> list[float | None]:
    """The reward of each scored item; a failed or invalid item gets ``error_value``
    (None: no reward, for trainers that mask it)."""
    return [r.reward if r.outcome == "scored" else error_value for r in response.results]


def outcome_flags(response: RewardResponse) -> list[dict[str, int]]:
    """Per item, 0/1 flags a trainer can filter or mask on: ``referee_failed`` (no verdict:
    the reward is a placeholder), ``referee_retryable`` (sending it again may help),
    ``referee_invalid`` (the item cannot be scored as sent)."""
    return [result_flags(r) for r in response.results]


def result_flags(result: RewardResult) -> dict[str, int]:
    """``outcome_flags`` of one result."""
    return {
        "referee_failed": int(result.outcome == "failed"),
        "referee_retryable": int(result.retryable),
        "referee_invalid": int(result.outcome == "invalid"),
    }
