"""Kind name -> "module:Class", imported lazily so unused heavy dependencies never load.

Where each family lives (one sub-package each):
  rules/      math, match, format, length, repetition, python
  models/     classifier, prm, similarity, likelihood (and their shared loading/batching)
  judge/      judge (templates, verdicts, guard, backends)
  execution/  code and SQL execution, and the sandbox they run in
  multimodal/ image-text scorers (CLIP-style) and their image handling
"""

from __future__ import annotations

import importlib

from referee.scorers.base import Scorer

_KINDS: dict[str, str] = {
    "math": "referee.scorers.rules.math:MathScorer",
    "match": "referee.scorers.rules.match:MatchScorer",
    "format": "referee.scorers.rules.format:FormatScorer",
    "length": "referee.scorers.rules.length:LengthScorer",
    "repetition": "referee.scorers.rules.repetition:RepetitionScorer",
    "python": "referee.scorers.rules.python:PythonScorer",
    "classifier": "referee.scorers.models.classifier:ClassifierScorer",
    "prm": "referee.scorers.models.prm:ProcessRewardScorer",
    "similarity": "referee.scorers.models.similarity:SimilarityScorer",
    "likelihood": "referee.scorers.models.likelihood:LikelihoodScorer",
    "judge": "referee.scorers.judge:JudgeScorer",
    "code": "referee.scorers.execution.code:CodeScorer",
    "sql": "referee.scorers.execution.sql:SqlScorer",
    "clip": "referee.scorers.multimodal.clip:ClipScorer",
}

KNOWN_KINDS: tuple[str, ...] = tuple(sorted(_KINDS))


class UnknownKindError(ValueError):
    pass


def scorer_class(kind: str) -> type[Scorer]:
    try:
        target = _KINDS[kind]
    except KeyError:
        raise UnknownKindError(
            f"unknown scorer kind {kind!r}; known kinds: {', '.join(KNOWN_KINDS)}"
        ) from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise TypeError(f"{target} is not a Scorer")
    return cls
