"""One error type for every request-level failure, mapped to transports in one table each."""

from __future__ import annotations

import enum

from pydantic import ValidationError

__all__ = ["GRPC_STATUS", "HTTP_STATUS", "ErrorKind", "RefereeError", "from_validation_error"]


class ErrorKind(str, enum.Enum):
    BAD_REQUEST = "bad_request"  # malformed JSON, unreadable body
    UNAUTHORIZED = "unauthorized"  # missing or wrong API key
    NOT_FOUND = "not_found"  # unknown pipeline or route
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"  # the target is busy (a reload in progress) or would not fit
    PAYLOAD_TOO_LARGE = "payload_too_large"  # body size, item count, text length
    INVALID_REQUEST = "invalid_request"  # schema errors
    OVERLOADED = "overloaded"  # queue full: retry later
    NOT_READY = "not_ready"  # models still loading
    TIMEOUT = "timeout"  # request deadline passed
    INTERNAL = "internal"  # a bug: never for something a client sent
    CLIENT_CLOSED = "client_closed"  # the client went away before the body arrived


HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.BAD_REQUEST: 400,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.METHOD_NOT_ALLOWED: 405,
    ErrorKind.CONFLICT: 409,
    ErrorKind.PAYLOAD_TOO_LARGE: 413,
    ErrorKind.INVALID_REQUEST: 422,
    ErrorKind.OVERLOADED: 429,
    ErrorKind.NOT_READY: 503,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.INTERNAL: 500,
    ErrorKind.CLIENT_CLOSED: 499,  # nginx's convention; nobody reads the body
}

# Names of grpc.StatusCode members (kept as text so this module never imports grpc).
# A client retries only UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED, so a
# request that is too large is INVALID_ARGUMENT (split it), not RESOURCE_EXHAUSTED.
GRPC_STATUS: dict[ErrorKind, str] = {
    ErrorKind.BAD_REQUEST: "INVALID_ARGUMENT",
    ErrorKind.UNAUTHORIZED: "UNAUTHENTICATED",
    ErrorKind.NOT_FOUND: "NOT_FOUND",
    ErrorKind.METHOD_NOT_ALLOWED: "UNIMPLEMENTED",
    ErrorKind.CONFLICT: "ABORTED",
    ErrorKind.PAYLOAD_TOO_LARGE: "INVALID_ARGUMENT",
    ErrorKind.INVALID_REQUEST: "INVALID_ARGUMENT",
    ErrorKind.OVERLOADED: "RESOURCE_EXHAUSTED",
    ErrorKind.NOT_READY: "UNAVAILABLE",
    ErrorKind.TIMEOUT: "DEADLINE_EXCEEDED",
    ErrorKind.INTERNAL: "INTERNAL",
    ErrorKind.CLIENT_CLOSED: "CANCELLED",
}


class RefereeError(Exception):
    """A request-level failure with a kind, a message that says what to fix, and the field."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        param: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"RefereeError({self.kind.value}, {self.message!r}, param={self.param!r})"


def from_validation_error(exc: ValidationError) -> RefereeError:
    """A pydantic error on a request as INVALID_REQUEST, naming the first bad field
    (``items[3].response``) and how many more there are."""
    first = exc.errors()[0]
    param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
    message = first["msg"].removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return RefereeError(ErrorKind.INVALID_REQUEST, message, param=param or None)
