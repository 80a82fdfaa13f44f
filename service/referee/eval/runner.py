"""Scoring an eval set: offline through the engine, or against a running server.

Every response of every example becomes one ``RewardItem`` (the examples' own prompt and
reference; the example's id as its ``group``, since a pair or a set is the rollouts of one
prompt). Requests hold whole examples, so group-relative pipelines see a whole group. The
rewards come back exactly as ``referee score`` or a trainer would get them: the eval only
reads them, it adds no scoring of its own.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from referee.eval.data import BestOfNSet, EvalData, PreferencePair
from referee.eval.metrics import best_of_n_metrics, pair_metrics
from referee_client.schema import RewardItem, RewardRequest, RewardResult

if TYPE_CHECKING:
    from referee.config import Settings
    from referee.engine import RewardEngine
    from referee_client import AsyncRewardClient

__all__ = ["EngineSource", "EvalRun", "RewardSource", "ServerSource", "evaluate", "run_eval"]


class RewardSource(Protocol):
    """Where rewards come from: one result per item, in order."""

    description: str

    async def start(self) -> tuple[str, str]:
        """Get ready; return the pipeline's (name, version)."""
        ...

    async def score(self, items: list[RewardItem]) -> list[RewardResult]: ...

    async def close(self) -> None: ...


class EngineSource:
    """The engine in this process (the same one `referee serve` runs)."""

    def __init__(self, settings: Settings, pipeline: str) -> None:
        from referee.engine import RewardEngine

        self.pipeline = pipeline
        self.engine: RewardEngine = RewardEngine(settings)
        self.description = "engine (offline)"

    async def start(self) -> tuple[str, str]:
        info = self.engine.pipeline(self.pipeline)  # unknown name: a RefereeError at once
        await self.engine.start()
        return info.name, info.version

    async def score(self, items: list[RewardItem]) -> list[RewardResult]:
        request = RewardRequest(pipeline=self.pipeline, items=items)
        response = await self.engine.score(request, enforce_limits=False)
        return response.results

    async def close(self) -> None:
        await self.engine.close()


class ServerSource:
    """A running Referee server (HTTP or gRPC URL), through the SDK."""

    def __init__(self, url: str, pipeline: str, api_key: str | None, timeout_s: float) -> None:
        from referee_client import AsyncRewardClient

        self.pipeline = pipeline
        self.client: AsyncRewardClient = AsyncRewardClient(url, api_key=api_key, timeout=timeout_s)
        self.description = f"server {url}"
        self.version = "?"

    async def start(self) -> tuple[str, str]:
        return self.pipeline, "?"  # the version arrives with the first response

    async def score(self, items: list[RewardItem]) -> list[RewardResult]:
        response = await self.client.score(items, pipeline=self.pipeline)
        self.version = response.pipeline_version
        return response.results

    async def close(self) -> None:
        await self.client.aclose()


def _items(example: PreferencePair | BestOfNSet) -> list[RewardItem]:
    texts = (
        [("chosen", example.chosen), ("rejected", example.rejected)]
        if isinstance(example, PreferencePair)
        else [(str(k), r) for k, r in enumerate(example.responses)]
    )
    return [
        RewardItem(
            id=f"{example.id}/{tag}",
            prompt=example.prompt,
            response=text,
            reference=example.reference,
            group=example.id,
        )
        for tag, text in texts
    ]


def _chunks(
    examples: Sequence[PreferencePair | BestOfNSet], chunk_items: int
) -> Iterable[list[RewardItem]]:
    """Requests of whole examples, about ``chunk_items`` items each."""
    chunk: list[RewardItem] = []
    for example in examples:
        items = _items(example)
        if chunk and len(chunk) + len(items) > chunk_items:
            yield chunk
            chunk = []
        chunk.extend(items)
    if chunk:
        yield chunk


@dataclass
class EvalRun:
    """The raw material of a report: the data and one result per response, in order."""

    data: EvalData
    pipeline: str
    version: str
    source: str
    results: list[RewardResult]
    elapsed_s: float
    components: list[str] = field(default_factory=list)


async def run_eval(
    data: EvalData, source: RewardSource, *, chunk_items: int = 256, progress: bool = True
) -> EvalRun:
    from tqdm import tqdm

    examples = data.examples
    total = sum(2 if isinstance(e, PreferencePair) else len(e.responses) for e in examples)
    pipeline, version = await source.start()
    results: list[RewardResult] = []
    started = time.perf_counter()
    try:
        with tqdm(total=total, unit="item", desc=f"eval {pipeline}", file=sys.stderr,
                  disable=not progress, dynamic_ncols=True) as bar:  # fmt: skip
            for chunk in _chunks(examples, chunk_items):
                got = await source.score(chunk)
                if len(got) != len(chunk):  # the contract: one result per item, in order
                    raise RuntimeError(f"{len(got)} results for {len(chunk)} items")
                results.extend(got)
                bar.update(len(chunk))
    finally:
        await source.close()
    elapsed = time.perf_counter() - started
    if isinstance(source, ServerSource):
        version = source.version
    names: dict[str, None] = {}
    for result in results:
        names.update(dict.fromkeys(result.components or {}))
    return EvalRun(data, pipeline, version, source.description, results, elapsed, list(names))


def _value(result: RewardResult, signal: str) -> float | None:
    if result.error is not None:
        return None
    if signal == "reward":
        return result.reward
    return (result.components or {}).get(signal)


def evaluate(run: EvalRun) -> dict[str, object]:
    """The report as JSON-ready data: metrics per signal (the reward, then each component)
    and one row per example (for plots and the inspector)."""
    data = run.data
    signals = ["reward", *[c for c in run.components if c != "reward"]]
    by_id = {r.id: r for r in run.results}
    rows: list[dict[str, object]] = []
    metrics: dict[str, object] = {}
    if data.format == "pairs":
        pairs = data.pairs
        got = [(by_id[f"{p.id}/chosen"], by_id[f"{p.id}/rejected"]) for p in pairs]
        for signal in signals:
            metrics[signal] = pair_metrics(
                [_value(c, signal) for c, _ in got], [_value(r, signal) for _, r in got],
                [p.subset for p in pairs],
                [len(p.chosen) for p in pairs], [len(p.rejected) for p in pairs],
            )  # fmt: skip
        for p, (c, r) in zip(pairs, got, strict=True):
            chosen, rejected = _row(c, len(p.chosen)), _row(r, len(p.rejected))
            rows.append({"id": p.id, "line": p.line, "subset": p.subset,
                         "chosen": chosen, "rejected": rejected})  # fmt: skip
    else:
        sets = data.sets
        got_sets = [[by_id[f"{s.id}/{k}"] for k in range(len(s.responses))] for s in sets]
        graded = any(s.graded for s in sets)
        for signal in signals:
            metrics[signal] = best_of_n_metrics(
                [[_value(r, signal) for r in results] for results in got_sets],
                [s.labels for s in sets], [s.subset for s in sets],
                [[len(t) for t in s.responses] for s in sets], graded,
            )  # fmt: skip
        for s, results in zip(sets, got_sets, strict=True):
            cells = [_row(r, len(t)) for r, t in zip(results, s.responses, strict=True)]
            rows.append({"id": s.id, "line": s.line, "subset": s.subset,
                         "labels": list(s.labels), "responses": cells})  # fmt: skip
    errors = [r for r in run.results if r.error is not None]
    return {
        "format": data.format,
        "input": str(data.path),
        "pipeline": run.pipeline,
        "pipeline_version": run.version,
        "source": run.source,
        "examples": len(data.examples),
        "items": len(run.results),
        "item_errors": len(errors),
        "errors_by_type": _count(e.error.type for e in errors if e.error is not None),
        "bad_lines": [{"line": b.line, "message": b.message} for b in data.bad_lines],
        "elapsed_s": run.elapsed_s,
        "items_per_s": len(run.results) / run.elapsed_s if run.elapsed_s > 0 else None,
        "signals": metrics,
        "rows": rows,
    }


def _row(result: RewardResult, length: int) -> dict[str, object]:
    return {
        "reward": result.reward,
        "components": result.components,
        "length": length,
        "error": result.error.model_dump() if result.error else None,
    }


def _count(kinds: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for kind in kinds:
        out[kind] = out.get(kind, 0) + 1
    return out
