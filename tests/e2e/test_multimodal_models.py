"""`referee serve` with a CLIP scorer, a VLM reward model (`kind: classifier`) and a VLM
judge (`kind: judge`, transformers backend) in one config, scoring image items that the SDK
sends over HTTP and gRPC: the served rewards equal a plain transformers script (the reward
model) and the in-process judge to 1e-4, the judge's verdict follows the image it was
shown, both transports give the same rewards, and a broken image is that item's error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from referee_client import RewardClient
from tests.e2e.server import free_port, running_server
from tests.integration.test_vlm_classifier import plain_reward
from tests.media import truncated_jpeg
from tests.models import colour_square

pytestmark = pytest.mark.slow
pytest.importorskip("transformers", reason="the model scorers need the models extra")

Q = "What is in the picture?"


@dataclass
class Server:
    http: str
    grpc: str


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_clip: Path,
    tiny_llava_rm: Path,
    tiny_llava_judge: Path,
) -> Iterator[Server]:
    config = {
        "scorers": {
            "caption": {"kind": "clip", "options": {
                "model": str(tiny_clip), "compare": "captioning", "score": "cosine"}},
            "rm": {"kind": "classifier", "options": {"model": str(tiny_llava_rm)}},
            "judge": {"kind": "judge", "options": {"model": str(tiny_llava_judge), "scale": [1, 5]}},
        },
        "pipelines": {
            "vlm": {"reward": {"type": "weighted_sum", "weights": [1.0, 1.0, 1.0],
                               "inputs": ["caption", "rm", "judge"]}},
        },
        "cache": {"backend": "none"},  # each transport computes its own rewards
    }  # fmt: skip
    path = tmp_path_factory.mktemp("config") / "vlm.yaml"
    path.write_text(yaml.safe_dump(config))
    grpc_port = free_port()
    with running_server("--config", str(path), "--grpc-port", str(grpc_port), ready_s=300) as (
        url,
        _,
    ):
        yield Server(url, f"grpc://127.0.0.1:{grpc_port}")


def conversation(i: int, red: bool) -> list[dict[str, Any]]:
    image = colour_square(red, 5000 + i)
    return [
        {"role": "user", "content": [{"type": "image_url", "image_url": image},
                                     {"type": "text", "text": Q}]},
        {"role": "assistant", "content": "A square." * (1 + i)},
    ]  # fmt: skip


def in_process_judge(model: Path, items: list[dict[str, Any]]) -> list[float | None]:
    from referee.scorers import ScoreInput, scorer_class
    from referee_client.schema import RewardItem

    cls = scorer_class("judge")
    judge = cls("judge", cls.Options.model_validate({"model": str(model), "scale": [1, 5]}))

    async def run() -> list[float | None]:
        await judge.setup()
        inputs = [ScoreInput.from_item(RewardItem(**item)) for item in items]
        return [r.value for r in await judge.score_batch(inputs)]

    return asyncio.run(run())


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_clip_a_vlm_reward_model_and_a_vlm_judge_score_image_items(
    server: Server, transport: str, tiny_llava_rm: Path, tiny_llava_judge: Path
) -> None:
    items: list[dict[str, Any]] = [
        {"id": f"m{i}", "messages": conversation(i, red=i % 2 == 0)} for i in range(4)
    ]
    items.append({"id": "broken", "prompt": Q, "prompt_images": [truncated_jpeg()],
                  "response": "A square."})  # fmt: skip
    url = server.http if transport == "http" else server.grpc
    with RewardClient(url) as client:
        results = client.score(items, pipeline="vlm", options={"return_components": True}).results
    assert [r.id for r in results] == [i["id"] for i in items]
    judged = in_process_judge(tiny_llava_judge, items[:4])
    for i, (item, result) in enumerate(zip(items[:4], results, strict=False)):
        assert result.outcome == "scored", result.error
        components = result.components or {}
        assert components["rm"] == pytest.approx(
            plain_reward(tiny_llava_rm, item["messages"]), abs=1e-4
        )
        assert components["judge"] == pytest.approx(judged[i], abs=1e-4)
        assert (components["judge"] > 0.8) if i % 2 == 0 else (components["judge"] < 0.2)
        parts = components["caption"] + components["rm"] + components["judge"]
        assert result.reward == pytest.approx(parts, abs=1e-5)
    assert results[4].outcome == "invalid" and results[4].error is not None
    assert results[4].error.type == "invalid_image"
