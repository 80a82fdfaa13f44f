"""Small builders shared by the tests."""

from __future__ import annotations

from typing import Any

from referee.scorers.base import ScoreInput


def score_input(
    response: str,
    reference: str | None = None,
    id: str = "i",
    *,
    prompt: str = "",
    group: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> ScoreInput:
    """A ScoreInput with only what a test cares about set."""
    return ScoreInput(id=id, prompt=prompt, response=response, reference=reference,
                      group=group, messages=None, metadata=metadata)  # fmt: skip
