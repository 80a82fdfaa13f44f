"""HTTP gateway wiring: ``build_app(settings)`` composes; routes live in ``routes.py``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from referee import __version__
from referee.admission import ADMISSION_STATE, AdmissionController
from referee.config import Settings
from referee.engine import RewardEngine
from referee.errors import HTTP_STATUS, ErrorKind, RefereeError
from referee.http.admission import AdmissionMiddleware
from referee.http.routes import router
from referee.metrics import Metrics
from referee.protocols import openrlhf
from referee_client.schema import RewardRequest

__all__ = ["build_app", "error_response"]

log = logging.getLogger(__name__)

_STATUS_KIND = {
    400: ErrorKind.BAD_REQUEST,
    401: ErrorKind.UNAUTHORIZED,
    404: ErrorKind.NOT_FOUND,
    405: ErrorKind.METHOD_NOT_ALLOWED,
    413: ErrorKind.PAYLOAD_TOO_LARGE,
    422: ErrorKind.INVALID_REQUEST,
}


class RedactApiKey(logging.Filter):
    """Replaces the value of ``api_key=`` (the OpenRLHF route's query parameter) with
    ``***`` in uvicorn's access-log lines, so keys do not end up in log storage."""

    PATTERN = re.compile(r"((?:^|[?&])api_key=)[^&\s]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self.PATTERN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def error_response(exc: RefereeError) -> JSONResponse:
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    if exc.kind is ErrorKind.UNAUTHORIZED:
        headers["WWW-Authenticate"] = "Bearer"
    body = {"error": {"type": exc.kind.value, "message": exc.message, "param": exc.param}}
    return JSONResponse(body, status_code=HTTP_STATUS[exc.kind], headers=headers)


def _document_request_body(app: FastAPI) -> None:
    """/v1/rewards parses its body itself (to tell 400 from 413 from 422); put the
    request schema into the OpenAPI document so /docs still shows it."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            request_schema = RewardRequest.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(request_schema.pop("$defs", {}))
            components["RewardRequest"] = request_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_app(settings: Settings, *, engine: RewardEngine | None = None) -> FastAPI:
    """The FastAPI app around one engine. The engine starts in the background so
    /healthz answers at once and /readyz turns ready when every scorer is warm."""
    metrics = engine.metrics if engine is not None else Metrics()
    engine = engine or RewardEngine(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
        async def start() -> None:
            with contextlib.suppress(Exception):  # recorded in engine.startup_error
                await engine.start()

        access_log = logging.getLogger("uvicorn.access")  # configured by uvicorn by now
        redact = RedactApiKey()
        access_log.addFilter(redact)
        gateway = None
        server = settings.server
        if server.grpc_port:  # the gRPC gateway shares this loop and this engine
            from referee.grpc import start_grpc_gateway

            gateway = await start_grpc_gateway(
                engine, metrics, app.state.api_keys, host=server.host, port=server.grpc_port
            )
        app.state.grpc = gateway
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
    app.include_router(router)
    app.include_router(openrlhf.router)
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
        return error_response(RefereeError(kind, message))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            RefereeError(ErrorKind.INTERNAL, f"internal error ({type(exc).__name__}); see logs")
        )

    # Outermost: a refused request costs its head only, never its body or a JSON parse.
    app.add_middleware(AdmissionMiddleware, controller=admission, error_response=error_response)
    return app
