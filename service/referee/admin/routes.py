"""The admin API over HTTP: /v1/admin, behind its own keys (``server.admin_api_keys``).
With no admin keys configured it does not exist (404), and the ordinary API keys never
open it (401)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from referee.admin.reload import Reloader
from referee.config import ConfigError, Settings, load_settings
from referee.errors import HTTP_STATUS, ErrorKind, RefereeError, from_validation_error
from referee.gateway import check_api_key, parse_json, read_body
from referee_client.schema import (
    ConfigApplyRequest,
    ErrorBody,
    ReloadResult,
    ScorerList,
    ScorerReloadRequest,
)

__all__ = ["install_sighup", "router", "settings_from"]

log = logging.getLogger(__name__)


def require_admin_key(request: Request) -> None:
    keys: list[str] = request.app.state.admin_keys
    if not keys:
        raise RefereeError(
            ErrorKind.NOT_FOUND, "the admin API is off: set server.admin_api_keys to use it"
        )
    check_api_key(
        keys,
        api_key=request.headers.get("x-api-key"),
        authorization=request.headers.get("authorization"),
    )


router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin_key)])
_ERRORS: dict[int | str, dict[str, Any]] = {
    HTTP_STATUS[kind]: {"model": ErrorBody}
    for kind in (
        ErrorKind.UNAUTHORIZED,
        ErrorKind.NOT_FOUND,
        ErrorKind.CONFLICT,
        ErrorKind.INVALID_REQUEST,
    )
}


def _reloader(request: Request) -> Reloader:
    reloader: Reloader = request.app.state.reloader
    return reloader


async def _body(request: Request, model: type[Any]) -> Any:
    payload = parse_json(
        await read_body(request, request.app.state.settings.server.max_request_bytes)
    )
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


@router.get("/scorers", response_model=ScorerList, responses=_ERRORS)
async def list_scorers(request: Request) -> ScorerList:
    """Each scorer's version (fingerprint), load state, memory and when it was loaded."""
    return ScorerList(scorers=_reloader(request).scorers())


@router.post(
    "/scorers/{name}/reload", response_model=ReloadResult, responses=_ERRORS,
    openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ScorerReloadRequest"}}}}},
)  # fmt: skip
async def reload_scorer(name: str, request: Request) -> Response:
    """Load a scorer's new version beside the old one, warm it up, then switch."""
    body: ScorerReloadRequest = await _body(request, ScorerReloadRequest)
    result = await _reloader(request).reload_scorer(name, body.options, swap=body.swap)
    return Response(result.model_dump_json(), media_type="application/json")


@router.post(
    "/config", response_model=ReloadResult, responses=_ERRORS,
    openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ConfigApplyRequest"}}}}},
)  # fmt: skip
async def apply_config(request: Request) -> Response:
    """Validate a whole new config, then apply it live: new scorers and pipelines added,
    changed ones reloaded, removed ones drained. An invalid config changes nothing."""
    body: ConfigApplyRequest = await _body(request, ConfigApplyRequest)
    settings = settings_from(body.config, overrides=request.app.state.server_overrides)
    result = await _reloader(request).apply_config(settings, swap=body.swap)
    return Response(result.model_dump_json(), media_type="application/json")


def settings_from(
    config: dict[str, Any] | None = None, path: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:  # fmt: skip
    """A config validated whole, with the environment's and the command line's
    overrides applied as at start-up (``overrides``: ``server`` fields set by
    `referee serve --port ...`), or a 422 listing every problem with its field path."""
    try:
        settings = load_settings(path, data=config)
    except ConfigError as exc:
        raise RefereeError(
            ErrorKind.INVALID_REQUEST,
            "invalid config, nothing was changed: " + "; ".join(exc.problems),
            param="config",
        ) from None
    for key, value in (overrides or {}).items():
        setattr(settings.server, key, value)
    return settings


def install_sighup(reloader: Reloader, path: Path, overrides: dict[str, Any]) -> None:
    """On SIGHUP, read ``path`` again and apply it (a failure is logged; nothing changes)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def apply() -> None:
        try:
            result = await reloader.apply_config(settings_from(path=path, overrides=overrides))
        except RefereeError as exc:
            log.error("SIGHUP: config %s not applied: %s", path, exc.message)
            return
        log.info("SIGHUP: applied %s (added %s, reloaded %s, removed %s)",
                 path, result.added, result.reloaded, result.removed)  # fmt: skip

    def on_signal() -> None:
        task = loop.create_task(apply())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_signal)
