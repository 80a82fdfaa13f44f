"""OpenRLHF's remote reward-model protocol, so ``--remote_rm_url
http://HOST:PORT/openrlhf/PIPELINE`` works with OpenRLHF unchanged.

OpenRLHF (``openrlhf/utils/remote_rm_utils.py``) POSTs ``{"query": [...], "prompts": [...],
"labels": [...]}``, where each query is the prompt and the response decoded together, and
reads ``rewards`` (advantages), ``scores`` (dynamic filtering; it falls back to rewards) and
``extra_logs`` (logged per key) from the JSON answer. OpenRLHF sends no auth header, so
when API keys are configured this route also takes ``?api_key=KEY`` in the URL.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from referee.errors import ErrorKind, RefereeError, from_validation_error
from referee.gateway import check_api_key
from referee.http.routes import parse_json, read_body
from referee_client.schema import RewardRequest, RewardResponse

__all__ = ["router"]

router = APIRouter()


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


def build_request(payload: dict[str, Any], pipeline: str, strip: list[str]) -> RewardRequest:
    """Items from OpenRLHF's lists: the response is the query minus its prompt (and any
    ``strip`` suffix, e.g. an EOS token); rollouts of one prompt share a group."""
    queries = _texts(payload, "query", None)
    assert queries is not None
    prompts = _texts(payload, "prompts", len(queries))
    labels = _texts(payload, "labels", len(queries))
    groups: dict[str, str] = {}
    items = []
    for i, query in enumerate(queries):
        if not isinstance(query, str):
            raise RefereeError(ErrorKind.INVALID_REQUEST, "must be a string", param=f"query[{i}]")
        prompt = prompts[i] if prompts is not None else None
        response = query
        if isinstance(prompt, str) and prompt and query.startswith(prompt):
            response = query[len(prompt) :]
        for suffix in strip:
            response = response.removesuffix(suffix)
        reference = _label(labels[i]) if labels is not None else None
        item: dict[str, Any] = {"id": str(i), "response": response, "reference": reference}
        if isinstance(prompt, str):
            item["prompt"] = prompt
            item["group"] = groups.setdefault(prompt, f"p{len(groups)}")
        items.append(item)
    try:
        return RewardRequest.model_validate({"pipeline": pipeline, "items": items})
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def openrlhf_body(response: RewardResponse, error_reward: float) -> dict[str, Any]:
    rewards = [
        r.reward if r.error is None and r.reward is not None else error_reward
        for r in response.results
    ]
    logs: dict[str, list[float]] = {
        "referee_error": [0.0 if r.error is None else 1.0 for r in response.results]
    }
    first = response.results[0].components or {}
    for name in first:  # components every item has a number for (OpenRLHF stacks them)
        values = [(r.components or {}).get(name) for r in response.results]
        if all(isinstance(v, float) for v in values):
            logs[name] = [float(v) for v in values if v is not None]
    return {"rewards": rewards, "scores": rewards, "extra_logs": logs}


@router.post("/openrlhf/{pipeline}", tags=["compat"])
async def openrlhf_rewards(
    pipeline: str,
    request: Request,
    api_key: Annotated[str | None, Query(description="When headers cannot be sent.")] = None,
    strip: Annotated[
        list[str] | None, Query(description="Suffixes cut from responses (`<|im_end|>`).")
    ] = None,
    error_reward: Annotated[float, Query(description="Reward of an item that failed.")] = 0.0,
) -> JSONResponse:
    """OpenRLHF remote reward model: ``{query, prompts, labels}`` -> ``{rewards, scores,
    extra_logs}``, scored by the named pipeline."""
    engine = request.app.state.engine
    check_api_key(
        request.app.state.api_keys,
        api_key=request.headers.get("x-api-key") or api_key,
        authorization=request.headers.get("authorization"),
    )
    engine.pipeline(pipeline)  # 404 before reading the body
    request.state.pipeline = pipeline
    payload = parse_json(await read_body(request, engine.settings.server.max_request_bytes))
    reward_request = build_request(payload, pipeline, strip or [])
    response = await engine.score(reward_request)
    return JSONResponse(openrlhf_body(response, error_reward))
