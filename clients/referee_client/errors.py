"""The SDK's errors, keyed by status in one place (``error_for_status``).

    RefereeError
    ├── APIConnectionError          could not reach the server, or the connection broke
    ├── APITimeoutError             no answer within the call's timeout
    └── APIStatusError              the server answered with an error (status_code, type, param)
        ├── BadRequestError         400/415/422: the request is wrong; the message says what to fix
        ├── AuthenticationError     401
        ├── NotFoundError           404: unknown pipeline or route
        ├── ConflictError           409: a reload is already in progress, or would not fit
        ├── PayloadTooLargeError    413: over a server limit (the SDK splits batches itself)
        ├── RateLimitError          429: a scorer queue is full; retried after Retry-After
        └── ServerError             5xx
            ├── ServiceUnavailableError  503: starting up or shutting down; retried
            └── GatewayTimeoutError      504 (also an APITimeoutError); retried

gRPC calls raise the same classes: the server sends the error's ``type`` with the status
(so a gRPC error has the HTTP status it would have had), and a transport failure maps
UNAVAILABLE to APIConnectionError and DEADLINE_EXCEEDED to APITimeoutError.
"""

from __future__ import annotations

__all__ = [
    "RETRY_STATUSES",
    "TYPE_STATUS",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "GatewayTimeoutError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitError",
    "RefereeError",
    "ServerError",
    "ServiceUnavailableError",
    "error_for_status",
    "is_retryable",
]

# Statuses worth retrying unchanged: the same request can succeed later.
RETRY_STATUSES = frozenset({408, 429, 503, 504})

# The server's error `type` -> HTTP status (the table in the README's API section).
TYPE_STATUS: dict[str, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_request": 422,
    "overloaded": 429,
    "not_ready": 503,
    "timeout": 504,
    "internal": 500,
    "client_closed": 499,
}


class RefereeError(Exception):
    """Every error the SDK raises for a call."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIConnectionError(RefereeError):
    pass


class APITimeoutError(RefereeError):
    pass


class APIStatusError(RefereeError):
    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        type: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.type = type
        self.param = param
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" (param: {self.param})" if self.param else ""
        return f"{self.status_code} {self.type or 'error'}: {self.message}{where}"


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class PayloadTooLargeError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class ServerError(APIStatusError):
    pass


class ServiceUnavailableError(ServerError):
    pass


class GatewayTimeoutError(ServerError, APITimeoutError):
    pass


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
    503: ServiceUnavailableError,
    504: GatewayTimeoutError,
}


def error_for_status(
    status: int,
    message: str,
    *,
    type: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
) -> APIStatusError:
    """The one place a status becomes an exception class."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIStatusError)
    return cls(message, status_code=status, type=type, param=param, retry_after=retry_after)


def is_retryable(exc: BaseException) -> bool:
    """Connection failures, timeouts and 408/429/503/504: scoring is idempotent, so the
    same request sent again is safe; any other error would fail again."""
    if isinstance(exc, APIStatusError):
        return exc.status_code in RETRY_STATUSES
    return isinstance(exc, APIConnectionError | APITimeoutError)


def parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: fall back to the computed backoff
    return seconds if seconds >= 0 else None
