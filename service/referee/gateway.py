"""What the HTTP and gRPC gateways share: the API-key check and the published limits."""

from __future__ import annotations

import hmac

from referee.config import ServerSettings
from referee.errors import ErrorKind, RefereeError
from referee_client.schema import ServerLimits

__all__ = ["check_api_key", "server_limits"]


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
