"""LLM-as-judge scorers (``kind: judge``); see :mod:`referee.scorers.judge.scorer`."""

from referee.scorers.judge.scorer import JudgeScorer

__all__ = ["JudgeScorer"]
