"""Referee client SDK: the wire schema (and, later, the HTTP/gRPC clients)."""

from referee_client.schema import (
    ErrorBody,
    ErrorDetail,
    ItemError,
    Message,
    RewardItem,
    RewardOptions,
    RewardRequest,
    RewardResponse,
    RewardResult,
    Usage,
)

__all__ = [
    "ErrorBody",
    "ErrorDetail",
    "ItemError",
    "Message",
    "RewardItem",
    "RewardOptions",
    "RewardRequest",
    "RewardResponse",
    "RewardResult",
    "Usage",
]
