"""HTTP routes: translate and delegate to the engine; nothing else."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from referee.engine import PipelineInfo, RewardEngine
from referee.errors import HTTP_STATUS, ErrorKind, RefereeError, from_validation_error
from referee.gateway import check_api_key, parse_json, read_body, require_json, server_limits
from referee.metrics import CONTENT_TYPE_LATEST, Metrics
from referee_client.schema import ErrorBody, RewardRequest, RewardResponse, ServerLimits

__all__ = ["router"]


def _engine(request: Request) -> RewardEngine:
    engine: RewardEngine = request.app.state.engine
    return engine


def require_api_key(request: Request) -> None:
    check_api_key(
        request.app.state.api_keys,
        api_key=request.headers.get("x-api-key"),
        authorization=request.headers.get("authorization"),
    )


router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in sorted(set(HTTP_STATUS.values()))
}


@v1.post(
    "/rewards",
    response_model=RewardResponse,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/RewardRequest"}}
            },
        }
    },
)
async def score_rewards(request: Request) -> Response:
    """Score rollouts with a pipeline: one result per item, in request order."""
    engine = _engine(request)
    require_json(request)
    body = await read_body(request, engine.settings.server.max_request_bytes)
    reward_request = _validated_at_once(body)
    if reward_request is not None:  # the common case: one pass of pydantic's JSON parser
        named = reward_request.pipeline
        if named in engine.pipelines:
            request.state.pipeline = named
        if len(reward_request.items) > engine.settings.server.max_items_per_request:
            raise _too_many(len(reward_request.items), engine)
        return _answer(await engine.score(reward_request))
    payload = parse_json(body)  # something is wrong: find what, to say it precisely
    named = payload.get("pipeline", "default")
    if isinstance(named, str) and named in engine.pipelines:
        request.state.pipeline = named  # unknown names stay "?": clients cannot grow label sets
    items = payload.get("items")
    if isinstance(items, list) and len(items) > engine.settings.server.max_items_per_request:
        raise _too_many(len(items), engine)
    try:
        reward_request = RewardRequest.model_validate(payload)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    except RecursionError:
        raise RefereeError(ErrorKind.BAD_REQUEST, "body is nested too deeply") from None
    return _answer(await engine.score(reward_request))


def _validated_at_once(body: bytes) -> RewardRequest | None:
    """The request validated straight from its bytes, or None when anything is off (then
    the slow path parses it again to give the precise 400/413/422). A body that may hold a
    lone surrogate escape always takes the slow path, which checks for it."""
    if b"\\ud" in body or b"\\uD" in body:
        return None
    try:
        return RewardRequest.model_validate_json(body)
    except (ValidationError, ValueError, RecursionError):
        return None


def _too_many(n: int, engine: RewardEngine) -> RefereeError:
    limit = engine.settings.server.max_items_per_request
    return RefereeError(
        ErrorKind.PAYLOAD_TOO_LARGE,
        f"{n} items in one request; the limit is {limit}: split the request",
        param="items",
    )


def _answer(response: RewardResponse) -> Response:
    return Response(response.model_dump_json(), media_type="application/json")


def _describe(info: PipelineInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "description": info.description,
        "version": info.version,
        "scorers": list(info.scorers),
        "tree": info.tree,
    }


@v1.get("/pipelines", responses=_ERRORS)
async def list_pipelines(request: Request) -> dict[str, object]:
    """Every pipeline: name, description, version, scorers and tree."""
    engine = _engine(request)
    return {"pipelines": [_describe(p) for p in engine.pipelines.values()]}


@v1.get("/pipelines/{name}", responses=_ERRORS)
async def get_pipeline(name: str, request: Request) -> dict[str, object]:
    """One pipeline, with the kind and fingerprint of each of its scorers."""
    engine = _engine(request)
    info = engine.pipeline(name)
    described = _describe(info)
    described["scorer_configs"] = {
        s: {"kind": engine.scorers[s].kind, "fingerprint": engine.scorers[s].fingerprint()}
        for s in info.scorers
    }
    return described


@v1.get("/pipelines/{name}/stats", responses=_ERRORS)
async def pipeline_stats(name: str, request: Request) -> dict[str, object]:
    """Reward health over the monitor window: distributions, length bias, disagreement."""
    engine = _engine(request)
    engine.pipeline(name)  # 404 for an unknown name
    return engine.monitors[name].export(request.app.state.metrics)


@v1.get("/limits", response_model=ServerLimits, responses=_ERRORS)
async def limits(request: Request) -> ServerLimits:
    """What one request may hold; the SDK splits larger batches under these."""
    return server_limits(_engine(request).settings.server)


router.include_router(v1)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorBody}})
async def readyz(request: Request) -> JSONResponse:
    """Ready: every scorer is loaded and warmed up."""
    engine = _engine(request)
    health = engine.health()
    if engine.ready:
        return JSONResponse({"status": "ready", **health})
    message = "scorers are still loading"
    if engine.startup_error:
        message = f"start-up failed: {engine.startup_error}"
    body = {"error": {"type": ErrorKind.NOT_READY.value, "message": message, "param": None}}
    return JSONResponse({**body, **health}, status_code=503)


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    engine = _engine(request)
    for name, runner in engine.runners.items():
        metrics.queue_depth.labels(name).set(runner.batcher.depth)
    for monitor in engine.monitors.values():
        monitor.export(metrics)
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
