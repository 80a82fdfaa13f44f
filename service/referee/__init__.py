"""Referee: reward-as-a-service for RL post-training of language models."""

__version__ = "0.1.0"

__all__ = ["__version__"]
