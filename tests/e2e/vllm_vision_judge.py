"""Run in the vLLM environment by tests/e2e/test_judge_vllm_vision.py: a VLM judge on the
`vllm` backend (in-process engine, images as multi-modal data) scores red- and blue-image
items; prints the rewards (or the error) as one JSON line.

    python -m tests.e2e.vllm_vision_judge MODEL_DIR
"""

from __future__ import annotations

import asyncio
import json
import sys

from referee.scorers import scorer_class
from referee.scorers.base import ScoreInput
from referee_client.schema import RewardItem
from tests.models import colour_square

Q = "What is in the picture?"


def items() -> list[ScoreInput]:
    """Chat items with one image in the user turn, red for even ids and blue for odd ones,
    as the server sees them: built by the SDK (each PIL image encoded as PNG) and
    normalised, so the image is the item's (``prompt_images``), not only a message part."""
    out = []
    for i in range(4):
        image = {"type": "image_url", "image_url": colour_square(i % 2 == 0, 1000 + i)}
        item = RewardItem(id=f"i{i}", messages=[
            {"role": "user", "content": [image, {"type": "text", "text": Q}]},
            {"role": "assistant", "content": "A square."},
        ])  # fmt: skip
        out.append(ScoreInput.from_item(item))
    return out


async def main(model: str) -> None:
    cls = scorer_class("judge")
    options = {"model": model, "scale": [1, 5], "backend": "vllm",
               "vllm": {"kv_cache_memory_bytes": 1 << 28, "enforce_eager": True}}  # fmt: skip
    judge = cls("vlm-judge", cls.Options.model_validate(options))
    try:
        await judge.setup()
        results = await judge.score_batch(items())
        print(json.dumps({"rewards": [r.value for r in results],
                          "errors": [r.error for r in results]}))  # fmt: skip
    except Exception as exc:
        print(json.dumps({"failed": f"{type(exc).__name__}: {exc}"}))
    finally:
        await judge.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
