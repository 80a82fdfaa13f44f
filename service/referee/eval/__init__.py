"""``referee eval``: how well a reward pipeline ranks labelled responses, before training.

Preference pairs and best-of-N sets (JSONL or Parquet), scored through the engine in this
process or by a running server, measured per subset, per component and for length bias,
and reported as a Markdown table, a JSON file and an HTML page with plots.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

from referee.eval.data import EvalData, EvalDataError, load_eval_data
from referee.eval.report import html_report, markdown_table
from referee.eval.runner import (
    EngineSource,
    EvalRun,
    RewardSource,
    ServerSource,
    evaluate,
    run_eval,
)

if TYPE_CHECKING:
    from referee.config import Settings

__all__ = [
    "SAMPLES",
    "EngineSource",
    "EvalData",
    "EvalDataError",
    "EvalRun",
    "RewardSource",
    "ServerSource",
    "evaluate",
    "evaluate_file",
    "html_report",
    "load_eval_data",
    "markdown_table",
    "run_eval",
]

SAMPLES = Path(__file__).with_name("samples")  # small labelled sets shipped with the package


def evaluate_file(
    path: Path,
    *,
    pipeline: str = "default",
    settings: Settings | None = None,
    url: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 120.0,
    json_out: Path | None = None,
    html_out: Path | None = None,
    skip_bad: bool = False,
    chunk_items: int = 256,
    progress: bool = True,
) -> dict[str, object]:
    """Load, score, measure, write the files asked for; return the report."""
    data = load_eval_data(path, skip_bad=skip_bad)
    source: RewardSource
    if url is not None:
        source = ServerSource(url, pipeline, api_key, timeout_s)
    else:
        if settings is None:
            raise ValueError("give settings (offline) or url (a running server)")
        source = EngineSource(settings, pipeline)
    run = asyncio.run(run_eval(data, source, chunk_items=chunk_items, progress=progress))
    report = evaluate(run)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if html_out is not None:
        html_out.write_text(html_report(report), encoding="utf-8")
    return report
