"""Where a judge runs, behind one interface: a local causal LM (``transformers``), any
OpenAI-compatible server (``openai``, which a vLLM server is), or an in-process vLLM
engine (``vllm``). Each backend answers two questions for a batch of chats: how likely is
each verdict label as the judge's next words (:meth:`JudgeBackend.label_probs`), and what
does the judge write (:meth:`JudgeBackend.generate`). A backend module is imported only
when configured.

Per-item failures come back as exceptions in the result list, in place of that item's
answer: one bad item never fails the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from referee.scorers.judge.options import JudgeOptions, SamplingOptions
from referee.scorers.judge.templates import Chat

__all__ = [
    "JudgeBackend",
    "JudgeCallError",
    "label_contexts",
    "label_token_ids",
    "make_backend",
    "verdict_distribution",
]

_BACKENDS = {
    "transformers": "referee.scorers.judge.backends.local:TransformersBackend",
    "openai": "referee.scorers.judge.backends.openai:OpenAIBackend",
    "vllm": "referee.scorers.judge.backends.vllm:VLLMBackend",
}


class JudgeCallError(Exception):
    """One judge call failed for one item (too long, the endpoint gave up)."""

    def __init__(self, message: str, error_type: str = "judge_error") -> None:
        super().__init__(message)
        self.error_type = error_type


class JudgeBackend:
    """The interface. ``prefix`` starts the judge's turn (``Score: ``) so its next token is
    the verdict; label probabilities are of the label's whole text after it."""

    libraries: tuple[str, ...] = ()

    def __init__(self, name: str, options: JudgeOptions) -> None:
        self.name = name
        self.options = options

    async def setup(self) -> None:
        """Load the model or check the endpoint's settings."""

    async def close(self) -> None:
        """Release the model or the connection pool."""

    def health(self) -> dict[str, object]:
        return {"ready": True}

    def identity(self) -> dict[str, object]:
        """What identifies the judge model in the scorer's fingerprint."""
        return {"model": self.options.model, "revision": self.options.revision}

    async def label_probs(
        self, chats: list[Chat], prefix: str, labels: list[str]
    ) -> list[dict[str, float] | JudgeCallError]:
        raise NotImplementedError

    async def generate(
        self, chats: list[Chat], sampling: SamplingOptions, n: int
    ) -> list[list[str] | JudgeCallError]:
        raise NotImplementedError


def make_backend(name: str, options: JudgeOptions) -> JudgeBackend:
    module, _, cls = _BACKENDS[options.backend].partition(":")
    backend: JudgeBackend = getattr(importlib.import_module(module), cls)(name, options)
    return backend


def label_token_ids(
    tokens: Callable[..., list[int]], prefix: str, labels: Sequence[str]
) -> dict[str, list[int]]:
    """Each label's tokens as they follow the prefix (a space may merge into them).
    ``tokens(text, add_special_tokens=False)`` is the judge model's tokenizer."""
    head = tokens(prefix, add_special_tokens=False) if prefix else []
    out = {}
    for label in labels:
        ids = tokens(prefix + label, add_special_tokens=False)
        out[label] = (
            ids[len(head) :]
            if ids[: len(head)] == head and len(ids) > len(head)
            else tokens(label, add_special_tokens=False)
        )
    return out


def label_contexts(label_ids: dict[str, list[int]]) -> list[tuple[int, ...]]:
    """The label-token prefixes after which some label token is read: () for every
    label's first token, ("1",) for the "0" of "10". Sorted, shortest first."""
    contexts = {tuple(ids[:k]) for ids in label_ids.values() for k in range(len(ids))}
    return sorted(contexts, key=lambda c: (len(c), c))


def verdict_distribution(label_probs: dict[str, float]) -> dict[str, float] | None:
    """Probabilities of each label as the *whole* verdict, normalised over the labels.

    A label's probability as text includes the labels it is a prefix of ("1" covers
    "10"): their mass is taken off it first. None when no label has any mass (the
    judge's likely next tokens are not verdicts).
    """
    exact = {}
    for label, p in label_probs.items():
        longer = sum(
            q for other, q in label_probs.items() if other != label and other.startswith(label)
        )
        exact[label] = max(0.0, p - longer)
    total = sum(exact.values())
    if total <= 0.0:
        return None
    return {label: p / total for label, p in exact.items()}
