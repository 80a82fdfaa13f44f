"""HTTP gateway wiring: ``build_app(settings)`` composes; routes live in ``routes.py``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from referee import __version__, heap
from referee.admin import Reloader
from referee.admin.routes import install_sighup
from referee.admin.routes import router as admin_router
from referee.admission import ADMISSION_STATE, AdmissionController
from referee.config import Settings
from referee.engine import RewardEngine
from referee.errors import HTTP_STATUS, ErrorKind, RefereeError
from referee.http._redact import RedactSecrets
from referee.http._unexpected import AnswerUnexpectedErrors
from referee.http.admission import AdmissionMiddleware
from referee.http.routes import router
from referee.metrics import Metrics
from referee.protocols import openrlhf
from referee.ui import router as ui_router
from referee_client.schema import ConfigApplyRequest, RewardRequest, ScorerReloadRequest

__all__ = ["build_app", "error_response"]

log = logging.getLogger(__name__)

_STATUS_KIND = {
    400: ErrorKind.BAD_REQUEST,
    401: ErrorKind.UNAUTHORIZED,
    404: ErrorKind.NOT_FOUND,
    405: ErrorKind.METHOD_NOT_ALLOWED,
    413: ErrorKind.PAYLOAD_TOO_LARGE,
    415: ErrorKind.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorKind.INVALID_REQUEST,
}


def error_response(exc: RefereeError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    if exc.kind is ErrorKind.UNAUTHORIZED:
        headers["WWW-Authenticate"] = "Bearer"
    body = {"error": {"type": exc.kind.value, "message": exc.message, "param": exc.param}}
    return JSONResponse(body, status_code=HTTP_STATUS[exc.kind], headers=headers)


def _document_request_body(app: FastAPI) -> None:
    """/v1/rewards and /openrlhf parse their bodies themselves (to tell 400 from 413 from
    415 from 422); put the request schemas into the OpenAPI document so /docs shows them."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (
                RewardRequest,
                openrlhf.OpenRLHFRequest,
                ScorerReloadRequest,
                ConfigApplyRequest,
            ):
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at this request's path (asked of the router with
    each method in turn, so routers nested by include_router count too)."""
    return [
        method for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
               for route in app.router.routes)
    ]  # fmt: skip


def build_app(
    settings: Settings, *, engine: RewardEngine | None = None,
    config_path: Path | None = None, server_overrides: dict[str, Any] | None = None,
) -> FastAPI:  # fmt: skip
    """The FastAPI app around one engine. The engine starts in the background so
    /healthz answers at once and /readyz turns ready when every scorer is warm.
    ``config_path``: the file the config came from; SIGHUP applies it again, live.
    ``server_overrides``: ``server`` fields the command line set (they win over any
    config applied later, as over the file at start-up)."""
    metrics = engine.metrics if engine is not None else Metrics()
    engine = engine or RewardEngine(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
        async def start() -> None:
            with contextlib.suppress(Exception):  # recorded in engine.startup_error
                await engine.start()
                if settings.server.gc_freeze:
                    heap.freeze(settings.server.gc_young_threshold)

        access_log = logging.getLogger("uvicorn.access")  # configured by uvicorn by now
        redact = RedactSecrets()
        access_log.addFilter(redact)
        gateway = None
        server = settings.server
        if server.grpc_port:  # the gRPC gateway shares this loop and this engine
            from referee.grpc import start_grpc_gateway

            gateway = await start_grpc_gateway(
                engine, metrics, app.state.api_keys, host=server.host, port=server.grpc_port,
                reloader=app.state.reloader, admin_keys=app.state.admin_keys,
                overrides=app.state.server_overrides,
            )  # fmt: skip
        app.state.grpc = gateway
        if config_path is not None:
            install_sighup(app.state.reloader, config_path, app.state.server_overrides)
        starter = asyncio.create_task(start())
        app.state.starter = starter
        try:
            yield {ADMISSION_STATE: admission}  # the HTTP protocol refuses from the head
        finally:
            if gateway is not None:  # calls in flight are answered by the engine at the grace
                await gateway.stop(grace_s=server.shutdown_grace_s + 1.0)
            if not starter.done():
                starter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starter
            access_log.removeFilter(redact)
            await app.state.admission.close()
            await engine.close(grace_s=2.0)

    app = FastAPI(
        title="Referee",
        version=__version__,
        summary="Reward-as-a-service for RL post-training of language models.",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.api_keys = settings.server.all_api_keys()
    app.state.admin_keys = [k.get_secret_value() for k in settings.server.admin_api_keys]
    app.state.reloader = Reloader(engine)
    app.state.server_overrides = dict(server_overrides or {})
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(openrlhf.router)
    app.include_router(ui_router)  # the reward inspector page at /ui
    _document_request_body(app)
    admission = AdmissionController(settings.server, metrics)
    app.state.admission = admission

    @app.middleware("http")
    async def _count_reward_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path != "/v1/rewards" and not request.url.path.startswith("/openrlhf/"):
            return await call_next(request)
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            pipeline = getattr(request.state, "pipeline", "?")
            metrics.requests.labels(pipeline, str(status)).inc()
            metrics.request_latency.labels(pipeline, str(status)).observe(
                time.perf_counter() - started
            )

    @app.exception_handler(RefereeError)
    async def _referee_error(request: Request, exc: RefereeError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        message = str(first["msg"])
        return error_response(RefereeError(ErrorKind.INVALID_REQUEST, message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _STATUS_KIND.get(exc.status_code, ErrorKind.BAD_REQUEST)
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs"
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette names the methods of the first route matching the path only; a
            # path served by several routes (GET and POST /openrlhf/...) allows them all.
            allowed = ", ".join(_allowed_methods(app, request)) or (headers or {}).get("Allow", "")
            headers = {**(headers or {}), "Allow": allowed}
            message = f"{request.method} is not allowed here; allowed: {allowed}"
        return error_response(RefereeError(kind, message), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            RefereeError(ErrorKind.INTERNAL, f"internal error ({type(exc).__name__}); see logs")
        )

    app.add_middleware(AnswerUnexpectedErrors)  # a 500 must not cost the client its connection
    # Outermost: a refused request costs its head only, never its body or a JSON parse.
    app.add_middleware(AdmissionMiddleware, controller=admission, error_response=error_response)
    return app
