"""Reward pipelines: the expression tree (config) and its evaluation."""

from referee.pipeline.evaluate import EvalState, LeafScore, PipelineEvaluator
from referee.pipeline.nodes import Node

__all__ = ["EvalState", "LeafScore", "Node", "PipelineEvaluator"]
