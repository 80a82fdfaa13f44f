"""The wire schema to and from its protobuf mirror (``proto/referee/v1/referee.proto``).

Shared by the SDK's gRPC transport and the server's gRPC gateway. Absent optional
fields, empty repeated fields and empty maps read as ``None``, as in the pydantic models.
Needs the ``grpc`` extra (protobuf).
"""

from __future__ import annotations

import binascii
from typing import Any

from google.protobuf import json_format, struct_pb2

from referee_client._media import b64decode
from referee_client._proto import referee_pb2 as pb
from referee_client.schema import (
    ErrorDetail,
    Image,
    ItemError,
    Message,
    RewardRequest,
    RewardResponse,
    RewardResult,
    ServerLimits,
    Usage,
)

__all__ = [
    "error_detail_from_proto",
    "error_detail_to_proto",
    "limits_from_proto",
    "limits_to_proto",
    "request_from_proto",
    "request_to_proto",
    "response_from_proto",
    "response_to_proto",
]

_EXACT_INT = 2**53


def _integral(value: Any) -> Any:
    """Struct numbers are doubles: give integral ones back as ints, as JSON would."""
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INT:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


# -- images --------------------------------------------------------------------------------
_IMAGE_FIELDS = ("prompt_images", "response_images", "reference_images")


def _image_to_proto(image: Image, out: pb.Image) -> None:
    """gRPC carries raw bytes: a ``data:`` URL travels as its decoded bytes."""
    data = image.data
    if data is None and image.url is not None and image.url.startswith("data:"):
        head, _, payload = image.url.partition(",")
        if head.endswith(";base64"):
            try:
                data = b64decode(payload)
            except (binascii.Error, ValueError):
                data = None  # the server names the field that is not base64
    if data is not None:
        out.data = data
    elif image.url is not None:
        out.url = image.url
    if image.detail is not None:
        out.detail = image.detail


def _image_from_proto(msg: pb.Image) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in ("url", "data", "detail"):
        if msg.HasField(name):
            data[name] = getattr(msg, name)
    return data


def _message_to_proto(message: Message, out: pb.Message) -> None:
    out.role = message.role
    if isinstance(message.content, str):
        out.content = message.content
        return
    for part in message.content:
        p = out.content_parts.add(type=part.type)
        if part.text is not None:
            p.text = part.text
        if part.image_url is not None:
            _image_to_proto(part.image_url, p.image_url)


def _message_from_proto(msg: pb.Message) -> dict[str, Any]:
    if not msg.content_parts:
        return {"role": msg.role, "content": msg.content}
    parts: list[dict[str, Any]] = []
    for p in msg.content_parts:
        part: dict[str, Any] = {"type": p.type}
        if p.HasField("text"):
            part["text"] = p.text
        if p.HasField("image_url"):
            part["image_url"] = _image_from_proto(p.image_url)
        parts.append(part)
    return {"role": msg.role, "content": parts}


# -- requests ------------------------------------------------------------------------------
def request_to_proto(request: RewardRequest) -> pb.RewardRequest:
    msg = pb.RewardRequest(pipeline=request.pipeline)
    for item in request.items:
        out = msg.items.add(id=item.id)
        for name in ("prompt", "response", "reference", "group"):
            value = getattr(item, name)
            if value is not None:
                setattr(out, name, value)
        for message in item.messages or ():
            _message_to_proto(message, out.messages.add())
        for name in _IMAGE_FIELDS:
            for image in getattr(item, name) or ():
                _image_to_proto(image, getattr(out, name).add())
        if item.reference_rewards:
            out.reference_rewards.extend(item.reference_rewards)
        if item.metadata is not None:
            out.metadata.update(item.metadata)
    options = request.options
    msg.options.return_components = options.return_components
    if options.timeout_s is not None:
        msg.options.timeout_s = options.timeout_s
    if options.group_size is not None:
        msg.options.group_size = options.group_size
    for group, rewards in (options.group_reference_rewards or {}).items():
        msg.options.group_reference_rewards[group].values.extend(rewards)
    return msg


def request_from_proto(msg: pb.RewardRequest) -> dict[str, Any]:
    """A plain dict for ``RewardRequest.model_validate`` (the server validates it)."""
    items: list[dict[str, Any]] = []
    for item in msg.items:
        data: dict[str, Any] = {"id": item.id}
        for name in ("prompt", "response", "reference", "group"):
            if item.HasField(name):
                data[name] = getattr(item, name)
        if item.messages:
            data["messages"] = [_message_from_proto(m) for m in item.messages]
        for name in _IMAGE_FIELDS:
            images = getattr(item, name)
            if images:
                data[name] = [_image_from_proto(image) for image in images]
        if item.reference_rewards:
            data["reference_rewards"] = list(item.reference_rewards)
        if item.HasField("metadata"):
            data["metadata"] = _integral(json_format.MessageToDict(item.metadata))
        items.append(data)
    options: dict[str, Any] = {}
    if msg.HasField("options"):
        o = msg.options
        if o.HasField("return_components"):
            options["return_components"] = o.return_components
        if o.HasField("timeout_s"):
            options["timeout_s"] = o.timeout_s
        if o.HasField("group_size"):
            options["group_size"] = o.group_size
        if o.group_reference_rewards:
            options["group_reference_rewards"] = {
                group: list(rewards.values) for group, rewards in o.group_reference_rewards.items()
            }
    return {"pipeline": msg.pipeline or "default", "items": items, "options": options}


# -- responses -----------------------------------------------------------------------------
def response_to_proto(response: RewardResponse) -> pb.RewardResponse:
    msg = pb.RewardResponse(pipeline=response.pipeline, pipeline_version=response.pipeline_version)
    for result in response.results:
        out = msg.results.add(
            id=result.id, outcome=result.outcome, cached=result.cached, truncated=result.truncated
        )
        if result.reward is not None:
            out.reward = result.reward
        for name, value in (result.components or {}).items():
            if value is None:
                out.components[name].null_value = struct_pb2.NULL_VALUE
            else:
                out.components[name].number_value = value
        if result.steps:
            out.steps.extend(result.steps)
        if result.error is not None:
            out.error.type = result.error.type
            out.error.message = result.error.message
            out.error.retryable = result.error.retryable
        if result.info:
            out.info.update(result.info)
    usage = response.usage
    msg.usage.items, msg.usage.cache_hits, msg.usage.errors = (
        usage.items,
        usage.cache_hits,
        usage.errors,
    )
    return msg


def _component(value: struct_pb2.Value) -> float | None:
    return value.number_value if value.WhichOneof("kind") == "number_value" else None


def _item_error(result: pb.RewardResult) -> ItemError | None:
    if not result.HasField("error"):
        return None
    return ItemError(
        type=result.error.type, message=result.error.message, retryable=result.error.retryable
    )


def response_from_proto(msg: pb.RewardResponse) -> RewardResponse:
    results = []
    for r in msg.results:
        results.append(
            RewardResult.model_validate(
                {
                    "id": r.id,
                    # An older server sends no outcome: derived from the error, as over HTTP.
                    **({"outcome": r.outcome} if r.outcome else {}),
                    "reward": r.reward if r.HasField("reward") else None,
                    "components": {k: _component(v) for k, v in r.components.items()} or None,
                    "steps": list(r.steps) or None,
                    "cached": r.cached,
                    "error": _item_error(r),
                    "info": dict(r.info) or None,
                    "truncated": r.truncated,
                }
            )
        )
    usage = Usage(items=msg.usage.items, cache_hits=msg.usage.cache_hits, errors=msg.usage.errors)
    return RewardResponse(
        pipeline=msg.pipeline, pipeline_version=msg.pipeline_version, results=results, usage=usage
    )


# -- errors and limits ---------------------------------------------------------------------
def error_detail_to_proto(detail: ErrorDetail) -> pb.ErrorDetail:
    msg = pb.ErrorDetail(type=detail.type, message=detail.message)
    if detail.param is not None:
        msg.param = detail.param
    return msg


def error_detail_from_proto(msg: pb.ErrorDetail) -> ErrorDetail:
    return ErrorDetail(
        type=msg.type, message=msg.message, param=msg.param if msg.HasField("param") else None
    )


def limits_to_proto(limits: ServerLimits) -> pb.ServerLimits:
    return pb.ServerLimits(**limits.model_dump())


def limits_from_proto(msg: pb.ServerLimits) -> ServerLimits:
    return ServerLimits(
        max_items_per_request=msg.max_items_per_request,
        max_request_bytes=msg.max_request_bytes,
        max_text_chars=msg.max_text_chars,
        request_timeout_s=msg.request_timeout_s,
    )
