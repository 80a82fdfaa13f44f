"""The ASGI app with a started engine, called in-process over httpx."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from referee.config import load_settings
from referee.engine import RewardEngine
from referee.http import build_app

RULES_CONFIG: dict[str, Any] = {
    "scorers": {
        "fmt": {"kind": "format", "options": {"mode": "think_answer"}},
        "exact": {
            "kind": "match",
            "options": {"mode": "normalized", "extract": "<answer>(.*?)</answer>"},
        },
        "overlong": {
            "kind": "length",
            "options": {"mode": "overlong", "max_length": 200, "buffer_length": 50},
        },
        "meta": {
            "kind": "python",
            "options": {"function": "tests.probes:metadata_value"},
        },
        "slow": {
            "kind": "python",
            "options": {
                "function": "tests.probes:slow_reward",
                "kwargs": {"delay_s": 0.3},
            },
            "batching": {
                "max_batch_size": 1,
                "max_concurrent_batches": 1,
                "max_queue_items": 4,
                "max_wait_ms": 0,
            },
        },
    },
    "pipelines": {
        "default": {
            "reward": {
                "type": "weighted_sum",
                "weights": [1.0, 1.0],
                "inputs": [
                    {"type": "gate", "when": {"node": "fmt", "value": 1}, "then": "exact"},
                    "overlong",
                ],
            }
        },
        "meta": {"reward": "meta"},
        "uwo": {
            "reward": {
                "type": "uwo",
                "inputs": [
                    "meta",
                    {
                        "type": "scorer",
                        "scorer": "meta",
                        "transforms": [{"type": "affine", "scale": -1}],
                    },
                ],
            }
        },
        "zscore": {
            "reward": {
                "type": "scorer",
                "scorer": "meta",
                "transforms": [{"type": "running_zscore"}],
            }
        },
        "par": {
            "reward": {
                "type": "scorer",
                "scorer": "meta",
                "transforms": [
                    {"type": "log_sigmoid_centered", "reference": "request"},
                    {"type": "group_norm"},
                ],
            }
        },
        "slow": {"reward": "slow"},
    },
}


@contextlib.asynccontextmanager
async def serve_app(
    data: dict[str, Any] | None = None, *, start: bool = True, **server: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, RewardEngine]]:
    config = dict(data or RULES_CONFIG)
    config["server"] = {**config.get("server", {}), **server}
    settings = load_settings(data=config, environ={})
    engine = RewardEngine(settings)
    if start:
        await engine.start()
    app = build_app(settings, engine=engine)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://referee") as client:
            yield client, engine
    finally:
        await engine.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app() as (client, _):
        yield client


def formatted(answer: str) -> str:
    return f"<think>reasoning</think><answer>{answer}</answer>"
