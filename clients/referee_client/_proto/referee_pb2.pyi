from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Image(_message.Message):
    __slots__ = ("url", "data", "detail")
    URL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    url: str
    data: bytes
    detail: str
    def __init__(self, url: _Optional[str] = ..., data: _Optional[bytes] = ..., detail: _Optional[str] = ...) -> None: ...

class ContentPart(_message.Message):
    __slots__ = ("type", "text", "image_url")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    type: str
    text: str
    image_url: Image
    def __init__(self, type: _Optional[str] = ..., text: _Optional[str] = ..., image_url: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("role", "content", "content_parts")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_PARTS_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    content_parts: _containers.RepeatedCompositeFieldContainer[ContentPart]
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ..., content_parts: _Optional[_Iterable[_Union[ContentPart, _Mapping]]] = ...) -> None: ...

class RewardItem(_message.Message):
    __slots__ = ("id", "prompt", "response", "messages", "reference", "group", "reference_rewards", "metadata", "prompt_images", "response_images", "reference_images")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_REWARDS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PROMPT_IMAGES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    id: str
    prompt: str
    response: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    reference: str
    group: str
    reference_rewards: _containers.RepeatedScalarFieldContainer[float]
    metadata: _struct_pb2.Struct
    prompt_images: _containers.RepeatedCompositeFieldContainer[Image]
    response_images: _containers.RepeatedCompositeFieldContainer[Image]
    reference_images: _containers.RepeatedCompositeFieldContainer[Image]
    def __init__(self, id: _Optional[str] = ..., prompt: _Optional[str] = ..., response: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., reference: _Optional[str] = ..., group: _Optional[str] = ..., reference_rewards: _Optional[_Iterable[float]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., prompt_images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., response_images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., reference_images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ...) -> None: ...

class DoubleList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class RewardOptions(_message.Message):
    __slots__ = ("return_components", "timeout_s", "group_reference_rewards", "group_size")
    class GroupReferenceRewardsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: DoubleList
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[DoubleList, _Mapping]] = ...) -> None: ...
    RETURN_COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    GROUP_REFERENCE_REWARDS_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    return_components: bool
    timeout_s: float
    group_reference_rewards: _containers.MessageMap[str, DoubleList]
    group_size: int
    def __init__(self, return_components: _Optional[bool] = ..., timeout_s: _Optional[float] = ..., group_reference_rewards: _Optional[_Mapping[str, DoubleList]] = ..., group_size: _Optional[int] = ...) -> None: ...

class RewardRequest(_message.Message):
    __slots__ = ("pipeline", "items", "options")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    pipeline: str
    items: _containers.RepeatedCompositeFieldContainer[RewardItem]
    options: RewardOptions
    def __init__(self, pipeline: _Optional[str] = ..., items: _Optional[_Iterable[_Union[RewardItem, _Mapping]]] = ..., options: _Optional[_Union[RewardOptions, _Mapping]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("type", "message", "retryable")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    type: str
    message: str
    retryable: bool
    def __init__(self, type: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class RewardResult(_message.Message):
    __slots__ = ("id", "reward", "components", "steps", "cached", "error", "info", "truncated", "outcome")
    class ComponentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    class InfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    id: str
    reward: float
    components: _containers.MessageMap[str, _struct_pb2.Value]
    steps: _containers.RepeatedScalarFieldContainer[float]
    cached: bool
    error: ItemError
    info: _containers.ScalarMap[str, str]
    truncated: bool
    outcome: str
    def __init__(self, id: _Optional[str] = ..., reward: _Optional[float] = ..., components: _Optional[_Mapping[str, _struct_pb2.Value]] = ..., steps: _Optional[_Iterable[float]] = ..., cached: _Optional[bool] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ..., info: _Optional[_Mapping[str, str]] = ..., truncated: _Optional[bool] = ..., outcome: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("items", "cache_hits", "errors")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    items: int
    cache_hits: int
    errors: int
    def __init__(self, items: _Optional[int] = ..., cache_hits: _Optional[int] = ..., errors: _Optional[int] = ...) -> None: ...

class RewardResponse(_message.Message):
    __slots__ = ("pipeline", "pipeline_version", "results", "usage")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    pipeline: str
    pipeline_version: str
    results: _containers.RepeatedCompositeFieldContainer[RewardResult]
    usage: Usage
    def __init__(self, pipeline: _Optional[str] = ..., pipeline_version: _Optional[str] = ..., results: _Optional[_Iterable[_Union[RewardResult, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("type", "message", "param")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PARAM_FIELD_NUMBER: _ClassVar[int]
    type: str
    message: str
    param: str
    def __init__(self, type: _Optional[str] = ..., message: _Optional[str] = ..., param: _Optional[str] = ...) -> None: ...

class LimitsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_items_per_request", "max_request_bytes", "max_text_chars", "request_timeout_s")
    MAX_ITEMS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    max_items_per_request: int
    max_request_bytes: int
    max_text_chars: int
    request_timeout_s: float
    def __init__(self, max_items_per_request: _Optional[int] = ..., max_request_bytes: _Optional[int] = ..., max_text_chars: _Optional[int] = ..., request_timeout_s: _Optional[float] = ...) -> None: ...

class ListScorersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScorerReloadRequest(_message.Message):
    __slots__ = ("options", "swap")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SWAP_FIELD_NUMBER: _ClassVar[int]
    options: _struct_pb2.Struct
    swap: str
    def __init__(self, options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., swap: _Optional[str] = ...) -> None: ...

class ReloadScorerCall(_message.Message):
    __slots__ = ("name", "request")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    request: ScorerReloadRequest
    def __init__(self, name: _Optional[str] = ..., request: _Optional[_Union[ScorerReloadRequest, _Mapping]] = ...) -> None: ...

class ConfigApplyRequest(_message.Message):
    __slots__ = ("config", "swap")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SWAP_FIELD_NUMBER: _ClassVar[int]
    config: _struct_pb2.Struct
    swap: str
    def __init__(self, config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., swap: _Optional[str] = ...) -> None: ...

class ReloadResult(_message.Message):
    __slots__ = ("added", "reloaded", "removed", "pipelines", "fingerprints", "duration_s")
    class PipelinesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class FingerprintsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ADDED_FIELD_NUMBER: _ClassVar[int]
    RELOADED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    PIPELINES_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINTS_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    added: _containers.RepeatedScalarFieldContainer[str]
    reloaded: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    pipelines: _containers.ScalarMap[str, str]
    fingerprints: _containers.ScalarMap[str, str]
    duration_s: float
    def __init__(self, added: _Optional[_Iterable[str]] = ..., reloaded: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ..., pipelines: _Optional[_Mapping[str, str]] = ..., fingerprints: _Optional[_Mapping[str, str]] = ..., duration_s: _Optional[float] = ...) -> None: ...

class ScorerStatus(_message.Message):
    __slots__ = ("name", "kind", "fingerprint", "state", "loaded_at", "memory_bytes", "pipelines")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PIPELINES_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    fingerprint: str
    state: str
    loaded_at: float
    memory_bytes: int
    pipelines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., fingerprint: _Optional[str] = ..., state: _Optional[str] = ..., loaded_at: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., pipelines: _Optional[_Iterable[str]] = ...) -> None: ...

class ScorerList(_message.Message):
    __slots__ = ("scorers",)
    SCORERS_FIELD_NUMBER: _ClassVar[int]
    scorers: _containers.RepeatedCompositeFieldContainer[ScorerStatus]
    def __init__(self, scorers: _Optional[_Iterable[_Union[ScorerStatus, _Mapping]]] = ...) -> None: ...
