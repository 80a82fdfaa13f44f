"""What the trainer adapters share: one client per process, rewards out of a response."""

from __future__ import annotations

import os
import threading

from referee_client.client import RewardClient
from referee_client.schema import RewardResponse

__all__ = ["process_client", "rewards_of"]

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
            client = _clients[key] = RewardClient(url, api_key=api_key)
        return client


def rewards_of(response: RewardResponse, error_value: float | None) -> list[float | None]:
    """The final reward per item; an item with a per-item error gets ``error_value``."""
    return [r.reward if r.error is None else error_value for r in response.results]
