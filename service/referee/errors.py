"""One error type for every request-level failure, mapped to transports in one table each."""

from __future__ import annotations

import enum

from pydantic import ValidationError

from referee_client.schema import ItemError, Outcome

__all__ = [
    "GRPC_STATUS",
    "HTTP_STATUS",
    "ITEM_ERRORS",
    "ErrorKind",
    "RefereeError",
    "from_validation_error",
    "item_error",
    "item_outcome",
]


class ErrorKind(str, enum.Enum):
    BAD_REQUEST = "bad_request"  # malformed JSON, unreadable body
    UNAUTHORIZED = "unauthorized"  # missing or wrong API key
    NOT_FOUND = "not_found"  # unknown pipeline or route
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"  # the target is busy (a reload in progress) or would not fit
    PAYLOAD_TOO_LARGE = "payload_too_large"  # body size, item count, text length
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # a body that is not declared JSON
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
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: 415,
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
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: "INVALID_ARGUMENT",
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


# -- per-item errors -------------------------------------------------------------------------
# Every per-item error type a scorer, the pipeline or the engine gives, and what it means for
# the item: "failed" (no verdict could be reached; retryable when sending it again can help)
# or "invalid" (the item cannot be scored as sent: fix the item). A type not listed here (a
# user's python scorer naming its own) is failed and not retryable.
ITEM_ERRORS: dict[str, tuple[Outcome, bool]] = {
    # the verifier ran out of time or capacity: another try can succeed
    "timeout": ("failed", True),  # the request's deadline passed first
    "verifier_timeout": ("failed", True),  # a check spent its CPU budget (regex, math)
    "overloaded": ("failed", True),  # the verifier could not run the check in time
    "shutdown": ("failed", True),  # the server was stopping
    "replica_failed": ("failed", True),  # a Ray replica died or was unreachable
    "worker_crashed": ("failed", True),  # a math worker died under the item (twice)
    "judge_unavailable": ("failed", True),  # the judge endpoint or engine is down
    "model_unavailable": ("failed", True),  # a model's vLLM engine or pooling server is down
    "judge_parse_error": ("failed", True),  # sampled answers without a verdict
    "sandbox_error": ("failed", True),  # the sandbox could not run the program (not its fault)
    "sandbox_unavailable": ("failed", True),  # the sandbox backend (SandboxFusion) is down
    # the verifier is broken or cannot decide, and would be again
    "scorer_error": ("failed", False),  # the scorer raised on this item
    "internal": ("failed", False),  # a bug in the server
    "judge_error": ("failed", False),  # the judge endpoint refused the call
    "model_error": ("failed", False),  # a model's engine or server gave no usable numbers
    "judge_no_verdict": ("failed", False),  # no verdict label among likely tokens
    "judge_no_logprobs": ("failed", False),  # the endpoint gives no logprobs
    "non_finite": ("failed", False),  # a scorer or pipeline node gave no finite value
    "missing_aspect": ("failed", False),  # a pipeline reads an aspect the scorer lacks
    # the item itself cannot be scored
    "missing_field": ("invalid", False),  # e.g. no `reference` for a math check
    "invalid_reference": ("invalid", False),
    "invalid_input": ("invalid", False),
    "input_too_long": ("invalid", False),
    "out_of_memory": ("invalid", False),  # too large for the model even alone: shorten it
    "empty_response": ("invalid", False),
    "invalid_image": ("invalid", False),  # an image that does not decode, or too many pixels
    "missing_image": ("invalid", False),  # a scorer needs an image the item does not have
    "no_answer": ("invalid", False),  # likelihood: no answer to score in the response
    "invalid_node": ("invalid", False),
}


def item_outcome(error_type: str) -> tuple[Outcome, bool]:
    """The outcome and retryability of a per-item error type (see ``ITEM_ERRORS``)."""
    return ITEM_ERRORS.get(error_type, ("failed", False))


def item_error(error_type: str, message: str) -> tuple[Outcome, ItemError]:
    """A per-item error on the wire, with the outcome it gives its item."""
    outcome, retryable = item_outcome(error_type)
    return outcome, ItemError(type=error_type, message=message, retryable=retryable)
