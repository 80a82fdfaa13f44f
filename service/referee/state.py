"""What the engine serves at one moment: the settings, the scorers and their runners, and
the pipelines over them (``EngineState``), swapped whole by a live reload."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from referee.config import Settings, scorer_refs
from referee.pipeline import PipelineEvaluator
from referee.pipeline.nodes import has_group_steps
from referee.scorers import Scorer
from referee.scorers.base import canonical_json

if TYPE_CHECKING:
    from referee.runner import ScorerRunner

__all__ = ["EngineState", "PipelineInfo", "build_pipelines"]


@dataclass(frozen=True)
class PipelineInfo:
    name: str
    description: str
    version: str
    scorers: tuple[str, ...]
    tree: dict[str, object]
    reads_peers: bool = False  # a scorer compares each item with the rest of its group
    components: tuple[str, ...] = ()  # every name a result's `components` can hold
    needs_groups: bool = False  # group steps: a group's items must be scored together
    group_size: int | None = None  # the default expected group size (group assembly)


def build_pipelines(
    settings: Settings, scorers: dict[str, Scorer]
) -> tuple[dict[str, PipelineInfo], dict[str, PipelineEvaluator]]:
    """Each pipeline's description and evaluator. A pipeline's version hashes its tree and
    the fingerprints of the scorers it uses, so new weights give a new version."""
    pipelines: dict[str, PipelineInfo] = {}
    evaluators: dict[str, PipelineEvaluator] = {}
    for pname, pcfg in settings.pipelines.items():
        used = tuple(sorted({leaf.scorer_name for leaf in scorer_refs(pcfg.reward)}))
        tree = pcfg.reward.model_dump(mode="json", exclude_defaults=False)
        material = {"tree": tree, "scorers": {s: scorers[s].fingerprint() for s in used}}
        digest = hashlib.sha256(canonical_json(material).encode()).hexdigest()
        peers = any("peers" in scorers[s].cache_fields() for s in used)
        evaluator = PipelineEvaluator(pcfg.reward)
        pipelines[pname] = PipelineInfo(
            pname, pcfg.description, f"sha256:{digest[:16]}", used, tree, peers,
            tuple(dict.fromkeys(evaluator.names.values())),
            peers or has_group_steps(pcfg.reward), pcfg.group_size,
        )  # fmt: skip
        evaluators[pname] = evaluator
    return pipelines, evaluators


@dataclass
class EngineState:
    """One consistent version of what the engine serves: the settings, the scorers and
    their runners, and the pipelines over them. A request uses one state from start to
    end; a reload builds the next state beside it and swaps, so no response mixes
    versions, and the old one is retired once the requests that hold it have finished."""

    settings: Settings
    scorers: dict[str, Scorer]
    pipelines: dict[str, PipelineInfo]
    evaluators: dict[str, PipelineEvaluator]
    runners: dict[str, ScorerRunner] = field(default_factory=dict)
    # scorer -> why it cannot serve now (an in-place reload unloaded it)
    unavailable: dict[str, str] = field(default_factory=dict)
    users: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def acquire(self) -> None:
        self.users += 1
        self.idle.clear()

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.idle.set()
