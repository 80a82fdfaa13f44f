"""The door: an ASGI middleware that admits reward requests before their body is read
(``referee.admission``) and refuses the rest at once, 429 with Retry-After."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from referee.admission import ACCEPTED_AT, AdmissionController
from referee.errors import RefereeError

__all__ = ["AdmissionMiddleware", "body_size", "is_reward_path"]

# What a body without Content-Length (chunked) is counted as until it has been read.
_UNKNOWN_SIZE = 64 * 1024


def body_size(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The Content-Length of a head, or what a body of unknown length counts as."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else _UNKNOWN_SIZE
    return _UNKNOWN_SIZE


def is_reward_path(path: str) -> bool:
    """The routes that score: admission applies to these, not to health or metrics."""
    return path == "/v1/rewards" or path.startswith("/openrlhf/")


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, controller: AdmissionController,
                 error_response: Callable[[RefereeError], Response]) -> None:  # fmt: skip
        self.app = app
        self.controller = controller
        self.error_response = error_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not is_reward_path(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        accepted_at = state.get("accepted_at")  # stamped by the protocol at the first byte
        if not isinstance(accepted_at, float):
            accepted_at = state["accepted_at"] = time.monotonic()
        size = body_size(scope["headers"])
        if size > self.controller.max_request_bytes:  # the route answers 413 from the header
            await self.app(scope, receive, send)
            return
        try:
            ticket = await self.controller.admit(size, accepted_at)
        except RefereeError as exc:
            await self.error_response(exc)(scope, receive, send)
            return
        token = ACCEPTED_AT.set(accepted_at)
        try:
            await self.app(scope, receive, send)
        finally:
            ACCEPTED_AT.reset(token)
            ticket.release()
