"""The judge's `openai` backend with images: content parts go to a real OpenAI-compatible
server process (tests/e2e/openai_server.py serving the tiny LLaVA judge with its processor)
as `image_url` parts with `data:` URLs, and the verdicts equal the in-process transformers
backend's on the same model (to the endpoint's reading of top-20 logprobs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from referee.scorers import scorer_class
from tests.e2e.test_judge_openai import judge, serving
from tests.integration.test_vlm_judge import image_item

pytest.importorskip("torch", reason="the test server runs the model with transformers")
pytestmark = pytest.mark.slow  # the judge is trained first (a minute or more)


async def test_image_items_judged_through_an_endpoint_match_the_local_backend(
    tiny_llava_judge: Path,
) -> None:
    items = [image_item(i, red=i % 2 == 0) for i in range(4)]
    items.append(image_item(9, True, "", in_response=True))  # the image is the response
    cls = scorer_class("judge")
    local = cls("l", cls.Options.model_validate({"model": str(tiny_llava_judge), "scale": [1, 5]}))
    await local.setup()
    expected = await local.score_batch(items)
    with serving(tiny_llava_judge) as url:
        remote = await judge(tiny_llava_judge, url, scale=[1, 5])
        got = await remote.score_batch(items)
        parsed = await judge(tiny_llava_judge, url, scale=[1, 5], mode="parse",
                             sampling={"max_new_tokens": 6})  # fmt: skip
        texts = await parsed.score_batch(items[:2])
        await remote.close()
        await parsed.close()
    for want, have in zip(expected, got, strict=True):
        assert have.error is None, have.error
        assert want.aspects["verdict_mass"] > 0.9  # the labels are within the top 20
        # The endpoint continues the judge's turn after "Score:" (transformers strips the
        # trailing space of a continued message) and reads the labels along its greedy path
        # from the top 20, so a digit right after the colon counts too: measured 5e-4 off
        # the local backend's exact probabilities after "Score: ".
        assert have.value == pytest.approx(want.value, abs=2e-3)
    assert got[0].value > 0.8 and got[1].value < 0.2  # type: ignore[operator]  # the image arrived
    assert [t.value for t in texts] == [1.0, 0.0]  # "Score: 5" for red, "Score: 1" for blue
