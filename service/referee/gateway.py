"""What the gateways share (HTTP routes, trainer protocols, gRPC): the API-key check, the
published limits, and reading a bounded JSON body."""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from referee.config import ServerSettings
from referee.errors import ErrorKind, RefereeError
from referee_client.schema import ServerLimits

__all__ = ["check_api_key", "parse_json", "read_body", "require_json", "server_limits"]


def check_api_key(keys: list[str], *, api_key: str | None, authorization: str | None) -> None:
    """Pass when no keys are configured or the caller's key is one of them; otherwise
    raise UNAUTHORIZED. The key comes from ``X-API-Key`` or ``Authorization: Bearer``
    (HTTP headers or gRPC metadata of the same names)."""
    if not keys:
        return
    supplied = api_key
    auth = authorization or ""
    if supplied is None and auth[:7].lower() == "bearer ":
        supplied = auth[7:].strip()
    if not supplied:
        raise RefereeError(
            ErrorKind.UNAUTHORIZED,
            "missing API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`",
        )
    matched = False
    for key in keys:  # compare with every key, in constant time each
        matched |= hmac.compare_digest(supplied.encode(), key.encode())
    if not matched:
        raise RefereeError(ErrorKind.UNAUTHORIZED, "invalid API key")


def server_limits(server: ServerSettings) -> ServerLimits:
    return ServerLimits(
        max_items_per_request=server.max_items_per_request,
        max_request_bytes=server.max_request_bytes,
        max_text_chars=server.max_text_chars,
        request_timeout_s=server.request_timeout_s,
    )


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RefereeError(
            ErrorKind.PAYLOAD_TOO_LARGE,
            f"request body is {declared} bytes; the limit is {limit}: split the request",
        )
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RefereeError(
                    ErrorKind.PAYLOAD_TOO_LARGE,
                    f"request body exceeds {limit} bytes: split the request",
                )
            chunks.append(chunk)
    except ClientDisconnect:
        raise RefereeError(ErrorKind.CLIENT_CLOSED, "client closed the connection") from None
    return b"".join(chunks)


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RefereeError(ErrorKind.BAD_REQUEST, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise RefereeError(ErrorKind.BAD_REQUEST, "body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        raise RefereeError(ErrorKind.BAD_REQUEST, f"body could not be read: {exc}") from None
    if not isinstance(payload, dict):
        raise RefereeError(ErrorKind.BAD_REQUEST, "body must be a JSON object")
    if b"\\ud" in body or b"\\uD" in body:  # only then can a lone surrogate be in there
        bad = _lone_surrogate_path(payload)
        if bad is not None:
            raise RefereeError(
                ErrorKind.INVALID_REQUEST,
                "text contains a lone UTF-16 surrogate (a truncated character?); "
                "send valid Unicode",
                param=bad,
            )
    return payload


def _lone_surrogate_path(payload: object) -> str | None:
    """The path of the first string (value or key) that is not encodable as UTF-8."""
    stack: list[tuple[object, str]] = [(payload, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return path or None
        elif isinstance(value, dict):
            for key, child in value.items():
                stack.append((key, path))
                stack.append((child, f"{path}.{key}" if path else str(key)))
        elif isinstance(value, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(value))
    return None


def require_json(request: Request) -> None:
    """415 unless the body is declared JSON (``application/json`` or ``application/*+json``,
    parameters aside); a request without a ``content-type`` is read as JSON."""
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    raise RefereeError(
        ErrorKind.UNSUPPORTED_MEDIA_TYPE,
        f"content-type {media or declared!r} is not JSON: send the body as application/json",
        param="content-type",
    )
