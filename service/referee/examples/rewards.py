"""Example reward functions for the ``python`` scorer.

Name one in the server config, e.g.::

    scorers:
      answer:
        kind: python
        options:
          function: referee.examples.rewards:exact_answer
          version: "1"

A function names the item fields it wants as parameters (``prompt``, ``response``,
``reference``, ``messages``, ``group``, ``metadata``, ``id``) or takes ``**fields``;
other parameters come from the config's ``kwargs``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

__all__ = [
    "constant",
    "exact_answer",
    "fields_present",
    "graded_answer",
    "keyword_reward",
    "length_ratio",
    "raises_on",
]

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _final_answer(response: str) -> str:
    """The content of the last ``<answer>…</answer>``, or the whole response, stripped."""
    found = _ANSWER.findall(response)
    return (found[-1] if found else response).strip()


def exact_answer(response: str, reference: str | None) -> float:
    """1.0 when the final answer equals the reference (both stripped), else 0.0."""
    if reference is None:
        raise ValueError("exact_answer needs a reference")
    return 1.0 if _final_answer(response) == reference.strip() else 0.0


async def keyword_reward(response: str, keywords: Sequence[str] = ()) -> float:
    """The fraction of ``keywords`` (from config ``kwargs``) found in the response,
    case-insensitively; 0.0 with no keywords. Async, as one that calls a service would be."""
    await asyncio.sleep(0)
    if not keywords:
        return 0.0
    text = response.casefold()
    return sum(1 for k in keywords if k.casefold() in text) / len(keywords)


def length_ratio(response: str, reference: str | None) -> float:
    """Shorter over longer of the response and reference lengths (1.0 when equal)."""
    a, b = len(response), len(reference or "")
    return 1.0 if a == b else min(a, b) / max(a, b)


def graded_answer(response: str, reference: str | None) -> dict[str, float | str]:
    """A dict result: the reward, two aspects and a reason."""
    answer, gold = _final_answer(response), (reference or "").strip()
    exact = answer == gold
    contains = bool(gold) and gold in answer
    reward = 1.0 if exact else 0.5 if contains else 0.0
    reason = "exact" if exact else "contains the reference" if contains else "wrong answer"
    return {"reward": reward, "exact": exact, "contains": contains, "reason": reason}


def raises_on(response: str, trigger: str = "boom") -> float:
    """1.0, but raises ``ValueError`` when the response contains ``trigger``."""
    if trigger in response:
        raise ValueError(f"response contains {trigger!r}")
    return 1.0


def constant(value: object = 1.0) -> object:
    """Returns ``value`` (from config ``kwargs``) as it is: handy for testing what a
    scorer does with a given return value (a NaN, a string)."""
    return value


def fields_present(**fields: object) -> dict[str, float]:
    """Takes ``**fields``, so it receives every item field: rewards the number present."""
    present = {name: float(value is not None) for name, value in fields.items()}
    return {"reward": sum(present.values()), **present}
