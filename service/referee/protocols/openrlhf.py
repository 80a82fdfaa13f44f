"""OpenRLHF's remote reward-model protocol, so ``--reward.remote_url
http://HOST:PORT/openrlhf/PIPELINE`` (OpenRLHF >= 0.11; ``--remote_rm_url`` before) works
with OpenRLHF unchanged.

OpenRLHF POSTs ``{"query": [...], "prompts": [...], "labels": [...]}``, where each query
is the prompt and the response decoded together, and reads ``rewards`` (advantages),
``scores`` (dynamic filtering; it falls back to rewards) and ``extra_logs`` from the JSON
answer. Up to 0.9 (``remote_rm_utils.py``) one POST holds a whole rollout batch; from 0.11
(``utils/agent.py``, ``SingleTurnAgentExecutor``) each rollout is posted on its own as
soon as it is generated. Rollouts of one prompt share a group keyed by the prompt text
(and ``?run=``, so two runs on one server never share groups); with a group size
(``?group_size=N``, default the pipeline's ``group_size``) a group-normalised pipeline
holds a prompt's rollouts until all N have arrived (the engine's group assembly).
OpenRLHF merges the answers of its workers with
``rewards_info[0]["extra_logs"].keys()`` and turns each list into a tensor, so the keys
are a fixed set per pipeline (``referee/<component>`` for every component, and the outcome
flags ``referee/error``, ``referee/failed``, ``referee/retryable``, ``referee/invalid``) and
every value is a number (0.0 where an item has no such component).

OpenRLHF needs a number for every item, so an item that was not scored (outcome ``failed``
or ``invalid``) gets ``error_reward`` (finite; 0.0 by default) in ``rewards`` and ``scores``;
the flags say which numbers are such placeholders, for a trainer that masks them.

The response is the query minus its prompt. A query that does not start with its prompt
(a tokenizer that does not round-trip the prompt) is scored whole, logged, and counted in
``referee_openrlhf_prompt_mismatch_total``. Trailing end-of-sequence tokens are stripped
(``strip``; common EOS tokens by default). The whole rollout comes in one POST, so the
route splits it under ``max_items_per_request`` itself. OpenRLHF sends no auth header, so
when API keys are configured this route also takes ``?api_key=KEY`` in the URL (redacted
from the access log). OpenRLHF logs only the status line of a failed POST (at INFO, retried
5 times), so ``GET /openrlhf/PIPELINE`` answers the same key check and the pipeline's
group settings: a start-up probe (``curl --fail-with-body``) that fails fast on a wrong key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from referee.engine import RewardEngine
from referee.errors import HTTP_STATUS, ErrorKind, RefereeError, from_validation_error
from referee.gateway import check_api_key, parse_json, read_body, require_json
from referee_client._core import combine, plan_chunks
from referee_client.schema import (
    ErrorBody,
    RewardItem,
    RewardOptions,
    RewardRequest,
    RewardResponse,
)

__all__ = [
    "DEFAULT_STRIP",
    "OpenRLHFRequest",
    "OpenRLHFResponse",
    "build_request",
    "prompt_group",
    "router",
]

log = logging.getLogger(__name__)
router = APIRouter()


class OpenRLHFRequest(BaseModel):
    """What OpenRLHF posts (extra keys are ignored)."""

    query: list[str] = Field(
        min_length=1, description="Prompt + response, decoded together, one per rollout."
    )
    prompts: list[Any] | None = Field(
        default=None,
        description="The prompt of each query (same length as `query`); a string prompt is "
        "cut off the front of its query, and rollouts of one prompt share a group.",
    )
    labels: list[Any] | None = Field(
        default=None,
        description="The reference of each query (same length as `query`): a string, a "
        "number, or JSON (sent as its text).",
    )


class OpenRLHFResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in sorted(set(HTTP_STATUS.values()))
}

# End-of-sequence tokens OpenRLHF's decoded queries commonly end with.
DEFAULT_STRIP = ("</s>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>")


def _texts(payload: dict[str, Any], key: str, n: int | None) -> list[Any] | None:
    value = payload.get(key)
    if value is None and n is not None:
        return None
    if not isinstance(value, list) or (n is not None and len(value) != n):
        want = "a list of strings" if n is None else f"a list of {n} entries, one per query"
        raise RefereeError(ErrorKind.INVALID_REQUEST, f"`{key}` must be {want}", param=key)
    return value


def _label(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _strip_suffixes(text: str, suffixes: tuple[str, ...]) -> str:
    """Cut any of ``suffixes`` off the end, repeatedly (``...<|im_end|></s>``)."""
    while True:
        cut = next((s for s in suffixes if s and text.endswith(s)), None)
        if cut is None:
            return text
        text = text[: -len(cut)]


def prompt_group(prompt: str, run: str) -> str:
    """The group id of a prompt's rollouts: a digest of the prompt, under the run's name."""
    digest = hashlib.blake2b(prompt.encode(), digest_size=16).hexdigest()
    return f"{run}:{digest}" if run else digest


def build_request(
    payload: dict[str, Any], pipeline: str, strip: tuple[str, ...], run: str = ""
) -> tuple[list[RewardItem], int]:
    """Items from OpenRLHF's lists (rollouts of one prompt share a group, across requests
    too), and how many queries did not start with their prompt (scored whole)."""
    queries = _texts(payload, "query", None)
    assert queries is not None
    prompts = _texts(payload, "prompts", len(queries))
    labels = _texts(payload, "labels", len(queries))
    items = []
    mismatched = 0
    for i, query in enumerate(queries):
        if not isinstance(query, str):
            raise RefereeError(ErrorKind.INVALID_REQUEST, "must be a string", param=f"query[{i}]")
        prompt = prompts[i] if prompts is not None else None
        response = query
        if isinstance(prompt, str) and prompt:
            if query.startswith(prompt):
                response = query[len(prompt) :]
            else:
                mismatched += 1
        reference = _label(labels[i]) if labels is not None else None
        item: dict[str, Any] = {
            "id": str(i), "response": _strip_suffixes(response, strip), "reference": reference,
        }  # fmt: skip
        if isinstance(prompt, str):
            item["prompt"] = prompt
            item["group"] = prompt_group(prompt, run)
        items.append(item)
    try:
        request = RewardRequest.model_validate({"pipeline": pipeline, "items": items})
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    return request.items, mismatched


async def score_in_chunks(
    engine: RewardEngine, pipeline: str, items: list[RewardItem], group_size: int | None = None
) -> RewardResponse:
    """Score a batch of any size under ``max_items_per_request``, a prompt's group kept in
    one request (as the SDK does)."""
    chunks = plan_chunks(items, engine.settings.server.max_items_per_request)
    options = RewardOptions(group_size=group_size)
    parts = await asyncio.gather(
        *(
            engine.score(
                RewardRequest(pipeline=pipeline, items=[items[i] for i in chunk], options=options)
            )
            for chunk in chunks
        )
    )
    placed = {i: r for chunk, part in zip(chunks, parts, strict=True)
              for i, r in zip(chunk, part.results, strict=True)}  # fmt: skip
    return combine(parts, [placed[i] for i in range(len(items))])


def openrlhf_body(
    response: RewardResponse,
    components: tuple[str, ...],
    error_reward: float,
    score_component: str | None,
) -> dict[str, Any]:
    def value(component: str | None, missing: float) -> list[float]:
        out = []
        for r in response.results:
            v = r.reward if component is None else (r.components or {}).get(component)
            out.append(float(v) if r.error is None and v is not None else missing)
        return out

    rewards = value(None, error_reward)
    logs = {f"referee/{name}": value(name, 0.0) for name in components}
    logs["referee/error"] = [0.0 if r.error is None else 1.0 for r in response.results]
    logs["referee/failed"] = [float(r.outcome == "failed") for r in response.results]
    logs["referee/retryable"] = [float(r.retryable) for r in response.results]
    logs["referee/invalid"] = [float(r.outcome == "invalid") for r in response.results]
    scores = rewards if score_component is None else value(score_component, error_reward)
    return {"rewards": rewards, "scores": scores, "extra_logs": logs}


def _check_key(request: Request, api_key: str | None) -> None:
    try:
        check_api_key(
            request.app.state.api_keys,
            api_key=request.headers.get("x-api-key") or api_key,
            authorization=request.headers.get("authorization"),
        )
    except RefereeError as exc:
        raise RefereeError(
            exc.kind,
            f"{exc.message}. OpenRLHF sends no headers: put the key in the URL, "
            "--reward.remote_url 'http://HOST:PORT/openrlhf/PIPELINE?api_key=KEY'",
            param="api_key",
        ) from None


@router.get("/openrlhf/{pipeline}", tags=["compat"], responses=_ERRORS)
async def openrlhf_probe(
    pipeline: str,
    request: Request,
    api_key: Annotated[str | None, Query(description="When headers cannot be sent.")] = None,
    group_size: Annotated[int | None, Query(ge=1)] = None,
) -> JSONResponse:
    """A start-up check for ``--reward.remote_url``: 401 on a wrong key, 404 on an unknown
    pipeline, else what a POST to this URL would use."""
    engine = request.app.state.engine
    _check_key(request, api_key)
    info = engine.pipeline(pipeline)
    size = group_size or info.group_size
    return JSONResponse({
        "pipeline": pipeline, "pipeline_version": info.version, "ready": engine.ready,
        "group_steps": info.needs_groups,
        "group_size": size if info.needs_groups else None,
        "group_timeout_s": engine.settings.groups.timeout_s if info.needs_groups else None,
        "components": list(info.components),
    })  # fmt: skip


@router.post(
    "/openrlhf/{pipeline}",
    tags=["compat"],
    response_model=OpenRLHFResponse,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/OpenRLHFRequest"}}
            },
        }
    },
)
async def openrlhf_rewards(
    pipeline: str,
    request: Request,
    api_key: Annotated[str | None, Query(description="When headers cannot be sent.")] = None,
    group_size: Annotated[
        int | None,
        Query(
            ge=1,
            description="Rollouts per prompt (OpenRLHF's --rollout.n_samples_per_prompt): "
            "a group-normalised pipeline scores a prompt's rollouts together once all have "
            "arrived. Default: the pipeline's group_size.",
        ),
    ] = None,
    run: Annotated[
        str,
        Query(
            max_length=64,
            description="Names the run's groups (two runs sharing a "
            "server and a dataset never share a group).",
        ),
    ] = "",
    strip: Annotated[
        list[str] | None,
        Query(description="Suffixes cut from responses; default: common EOS tokens."),
    ] = None,
    error_reward: Annotated[
        float,
        Query(
            allow_inf_nan=False,
            description="The number sent for an item that was not scored (failed or "
            "invalid): a finite number; `extra_logs` flags such items.",
        ),
    ] = 0.0,
    score_component: Annotated[
        str | None,
        Query(
            description="Component sent as `scores` (e.g. a pre-normalisation reward in "
            "(0, 1) for dynamic filtering); default: the reward."
        ),
    ] = None,
) -> JSONResponse:
    """OpenRLHF remote reward model: ``{query, prompts, labels}`` -> ``{rewards, scores,
    extra_logs}``, scored by the named pipeline."""
    engine = request.app.state.engine
    _check_key(request, api_key)
    info = engine.pipeline(pipeline)  # 404 before reading the body
    request.state.pipeline = pipeline
    if score_component is not None and score_component not in info.components:
        raise RefereeError(
            ErrorKind.INVALID_REQUEST,
            f"pipeline {pipeline!r} has no component {score_component!r}; it has: "
            + ", ".join(info.components),
            param="score_component",
        )
    require_json(request)
    payload = parse_json(await read_body(request, engine.settings.server.max_request_bytes))
    items, mismatched = build_request(
        payload, pipeline, DEFAULT_STRIP if strip is None else tuple(strip), run
    )
    if mismatched:
        engine.metrics.openrlhf_prompt_mismatch.labels(pipeline).inc(mismatched)
        log.warning(
            "openrlhf/%s: %d of %d queries do not start with their prompt; scored whole "
            "(prompt + response)", pipeline, mismatched, len(items),
        )  # fmt: skip
    response = await score_in_chunks(engine, pipeline, items, group_size)
    return JSONResponse(openrlhf_body(response, info.components, error_reward, score_component))
