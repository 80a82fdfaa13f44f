"""Kind name -> "module:Class", imported lazily so unused heavy dependencies never load."""

from __future__ import annotations

import importlib

from referee.scorers.base import Scorer

_KINDS: dict[str, str] = {
    "math": "referee.scorers.math:MathScorer",
    "match": "referee.scorers.match:MatchScorer",
    "format": "referee.scorers.format:FormatScorer",
    "length": "referee.scorers.length:LengthScorer",
    "repetition": "referee.scorers.repetition:RepetitionScorer",
    "python": "referee.scorers.python:PythonScorer",
    "classifier": "referee.scorers.classifier:ClassifierScorer",
    "prm": "referee.scorers.prm:ProcessRewardScorer",
    "similarity": "referee.scorers.similarity:SimilarityScorer",
    "likelihood": "referee.scorers.likelihood:LikelihoodScorer",
    "judge": "referee.scorers.judge:JudgeScorer",
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
