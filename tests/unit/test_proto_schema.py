"""The .proto and the pydantic wire schema cannot drift: fields compared both ways, values
round-tripped through protobuf, and the committed stubs equal a fresh generation."""

from __future__ import annotations

import subprocess
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from referee_client import _convert as convert
from referee_client import schema
from referee_client._proto import referee_pb2 as pb
from referee_client.schema import RewardRequest, RewardResponse

ROOT = Path(__file__).parents[2]

# pydantic model -> proto message of the same fields
MIRRORED: dict[type[BaseModel], str] = {
    schema.Image: "Image",
    schema.ContentPart: "ContentPart",
    schema.Message: "Message",
    schema.RewardItem: "RewardItem",
    schema.RewardOptions: "RewardOptions",
    schema.RewardRequest: "RewardRequest",
    schema.ItemError: "ItemError",
    schema.RewardResult: "RewardResult",
    schema.Usage: "Usage",
    schema.RewardResponse: "RewardResponse",
    schema.ErrorDetail: "ErrorDetail",
    schema.ServerLimits: "ServerLimits",
    schema.ScorerReloadRequest: "ScorerReloadRequest",
    schema.ConfigApplyRequest: "ConfigApplyRequest",
    schema.ReloadResult: "ReloadResult",
    schema.ScorerStatus: "ScorerStatus",
    schema.ScorerList: "ScorerList",
}
HTTP_ONLY = {schema.ErrorBody}  # the JSON error envelope; gRPC sends ErrorDetail in trailers
# a map value type, empty requests, and the admin reload call (the name is in the HTTP path)
PROTO_ONLY = {"DoubleList", "LimitsRequest", "ListScorersRequest", "ReloadScorerCall"}
# A field that is `text | list[parts]` in the model is two proto fields (a string and a
# repeated message: proto3 has no union of a scalar and a list that old clients can read).
SPLIT = {("Message", "content"): ("content", "content_parts")}


def _nullable(annotation: object) -> bool:
    return (
        type(None) in typing.get_args(annotation)
        or annotation is None
        or (isinstance(annotation, types.UnionType) and type(None) in annotation.__args__)
    )


def test_every_schema_model_is_mirrored_by_a_proto_message_and_back() -> None:
    exported = (getattr(schema, name) for name in schema.__all__)
    models = {m for m in exported if isinstance(m, type) and issubclass(m, BaseModel)}
    assert models == set(MIRRORED) | HTTP_ONLY, "a new schema model needs a proto message"
    messages = set(pb.DESCRIPTOR.message_types_by_name)
    assert messages == set(MIRRORED.values()) | PROTO_ONLY, "a new proto message needs a model"


@pytest.mark.parametrize("model", list(MIRRORED), ids=lambda m: m.__name__)
def test_fields_match_both_ways(model: type[BaseModel]) -> None:
    descriptor = pb.DESCRIPTOR.message_types_by_name[MIRRORED[model]]
    proto_fields = {f.name: f for f in descriptor.fields}
    for (message, name), (text, parts) in SPLIT.items():
        if message == MIRRORED[model]:
            assert proto_fields[text].type == proto_fields[text].TYPE_STRING
            assert proto_fields[parts].is_repeated
            del proto_fields[parts]
            annotation = model.model_fields[name].annotation
            assert set(typing.get_args(annotation)) - {str} and str in typing.get_args(annotation)
    assert set(model.model_fields) - set(proto_fields) == set(), "fields missing from the .proto"
    assert set(proto_fields) - set(model.model_fields) == set(), "fields missing from the model"
    for name, info in model.model_fields.items():
        field = proto_fields[name]
        repeated = field.is_repeated  # lists and maps
        if _nullable(info.annotation) and not repeated:
            # a value that can be null needs presence in proto3 (optional or a message)
            assert field.has_presence, f"{model.__name__}.{name} is nullable: make it optional"
        origin = typing.get_origin(info.annotation) or info.annotation
        inner = [typing.get_origin(a) or a for a in typing.get_args(info.annotation)]
        if (MIRRORED[model], name) in SPLIT:
            continue
        if origin is list or list in inner:
            assert repeated, f"{model.__name__}.{name} is a list in the model"
        if origin is dict or dict in inner:  # a map, or a Struct for free-form JSON
            struct = (
                field.message_type is not None
                and field.message_type.full_name == "google.protobuf.Struct"
            )
            assert repeated or struct, f"{model.__name__}.{name} is a mapping in the model"


FULL_REQUEST = RewardRequest.model_validate({
    "pipeline": "p",
    "items": [
        {"id": "a", "prompt": "q", "response": "r", "reference": "42", "group": "g",
         "reference_rewards": [0.5, -1.0], "metadata": {"score": 3, "w": 0.25, "tags": ["x", 2], "n": None}},
        {"id": "b", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"id": "c", "prompt": "a cat", "response_images": [{"data": b"\x89PNG\r\n\x1a\n..."}],
         "prompt_images": ["/srv/media/a.png", {"url": "https://example.com/b.jpg", "detail": "low"}],
         "reference_images": [{"data": b"\xff\xd8\xff..."}]},
        {"id": "d", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"data": b"\x00"}},
                                         {"type": "text", "text": "what is this?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a cat"}]}]},
    ],
    "options": {"return_components": False, "timeout_s": 2.5, "group_reference_rewards": {"g": [0.1]}},
})  # fmt: skip
FULL_RESPONSE = RewardResponse.model_validate({
    "pipeline": "p", "pipeline_version": "sha256:0123",
    "results": [
        {"id": "a", "reward": 0.5, "components": {"m": 1.0, "skipped": None}, "steps": [0.1, 0.9],
         "cached": True, "info": {"m": "why"}},
        {"id": "b", "outcome": "failed", "reward": None,
         "error": {"type": "verifier_timeout", "message": "boom", "retryable": True}},
        {"id": "c", "outcome": "invalid", "reward": None,
         "error": {"type": "missing_field", "message": "no reference"}},
    ],
    "usage": {"items": 3, "cache_hits": 1, "errors": 2},
})  # fmt: skip


def test_request_survives_protobuf_unchanged() -> None:
    message = pb.RewardRequest.FromString(
        convert.request_to_proto(FULL_REQUEST).SerializeToString()
    )
    assert RewardRequest.model_validate(convert.request_from_proto(message)) == FULL_REQUEST


def test_response_survives_protobuf_unchanged() -> None:
    message = pb.RewardResponse.FromString(
        convert.response_to_proto(FULL_RESPONSE).SerializeToString()
    )
    assert convert.response_from_proto(message) == FULL_RESPONSE


def test_committed_stubs_equal_a_fresh_generation(tmp_path: Path) -> None:
    subprocess.run(["bash", str(ROOT / "scripts/gen_proto.sh"), str(tmp_path)], check=True,
                   capture_output=True, text=True)  # fmt: skip
    committed = ROOT / "clients/referee_client/_proto"
    for name in ("referee_pb2.py", "referee_pb2.pyi", "referee_pb2_grpc.py"):
        assert (tmp_path / name).read_text() == (committed / name).read_text(), (
            f"{name} is stale: run `bash scripts/gen_proto.sh` and commit the result"
        )
