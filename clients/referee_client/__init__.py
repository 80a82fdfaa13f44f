"""Referee client SDK: the wire schema, ``RewardClient`` / ``AsyncRewardClient`` (HTTP or
gRPC by URL scheme) and the error tree. Trainer adapters live in
``referee_client.adapters`` (trl, verl)."""

from referee_client.client import AsyncRewardClient, AsyncRewardStream, RewardClient, RewardStream
from referee_client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    GatewayTimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    RefereeError,
    ServerError,
    ServiceUnavailableError,
)
from referee_client.schema import (
    ErrorBody,
    ErrorDetail,
    ItemError,
    Message,
    Outcome,
    RewardItem,
    RewardOptions,
    RewardRequest,
    RewardResponse,
    RewardResult,
    ServerLimits,
    Usage,
)

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncRewardClient",
    "AsyncRewardStream",
    "AuthenticationError",
    "BadRequestError",
    "ErrorBody",
    "ErrorDetail",
    "GatewayTimeoutError",
    "ItemError",
    "Message",
    "NotFoundError",
    "Outcome",
    "PayloadTooLargeError",
    "RateLimitError",
    "RefereeError",
    "RewardClient",
    "RewardItem",
    "RewardOptions",
    "RewardRequest",
    "RewardResponse",
    "RewardResult",
    "RewardStream",
    "ServerError",
    "ServerLimits",
    "ServiceUnavailableError",
    "Usage",
]
