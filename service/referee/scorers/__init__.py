"""Scorers, registered by kind and imported only when a config names them."""

from referee.scorers._registry import KNOWN_KINDS, UnknownKindError, scorer_class
from referee.scorers.base import ScoreInput, Scorer, ScoreResult, ScorerOptions, SyncScorer

__all__ = [
    "KNOWN_KINDS",
    "ScoreInput",
    "ScoreResult",
    "Scorer",
    "ScorerOptions",
    "SyncScorer",
    "UnknownKindError",
    "scorer_class",
]
