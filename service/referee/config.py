"""Settings: one model, loaded from YAML, overridden from the environment, validated whole.

Environment overrides use ``REFEREE_<SECTION>__<KEY>[__<KEY>...]=value`` (values parsed as
YAML), e.g. ``REFEREE_SERVER__PORT=9000`` or ``REFEREE_SERVER__API_KEYS=k1,k2``.
Every invalid value fails at load time with the dotted path of the field.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from referee.media.settings import MediaSettings
from referee.pipeline.nodes import SCORER_NAME_RE, CombineNode, GateNode, Node, ScorerNode
from referee.scorers import UnknownKindError, scorer_class

__all__ = [
    "BatchingSettings",
    "CacheSettings",
    "ConfigError",
    "GroupSettings",
    "MediaSettings",
    "PipelineConfig",
    "ScorerConfig",
    "ServerSettings",
    "Settings",
    "default_config_path",
    "load_settings",
    "scorer_refs",
]

ENV_PREFIX = "REFEREE_"
_SECTIONS = ("server", "batching", "cache", "groups", "media", "scorers", "pipelines")


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` are ``path: what is wrong`` lines."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"invalid {source}:\n" + "\n".join(f"  {p}" for p in problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = Field(
        default="127.0.0.1", description="Address to listen on (0.0.0.0: every interface)."
    )
    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port.")
    grpc_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="Serve the gRPC API (referee.v1) on this port next to HTTP; null or 0: off.",
    )  # fmt: skip
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="When non-empty, /v1 routes need `Authorization: Bearer KEY` or "
        "`X-API-Key: KEY`.",
    )
    api_keys_file: Path | None = Field(
        default=None, description="A file with one API key per line (a mounted secret)."
    )
    admin_api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Keys for the admin API (/v1/admin: live reloads); the admin API is "
        "off while this is empty. The ordinary `api_keys` never open it.",
    )
    memory_limit_bytes: int | None = Field(
        default=None, gt=0,
        description="Resident memory this process may use. A reload that loads a new "
        "model beside the old one is refused (use `swap: in_place`) when it would not fit "
        "under this, nor under the host's available memory or the cgroup limit.",
    )  # fmt: skip
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Largest request body; larger: 413."
    )
    max_items_per_request: int = Field(
        default=10_000, gt=0, description="Most items in one request; more: 413 (split it)."
    )
    max_text_chars: int = Field(
        default=1_000_000, gt=0, description="Longest prompt/response/reference/message."
    )
    request_timeout_s: float = Field(
        default=120.0, gt=0,
        description="Deadline of a request (504 after); a request may ask for less with "
        "`options.timeout_s`.",
    )  # fmt: skip
    shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="On SIGTERM/SIGINT: how long requests in flight may finish before they "
        "are answered 503 and the server exits.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the server and its access log."
    )
    gc_freeze: bool = Field(
        default=True,
        description="Once the scorers are ready, freeze the start-up heap out of Python's "
        "cyclic garbage collector (`gc.freeze()`): its full collections then skip tens of "
        "thousands of long-lived objects and no longer stall the event loop for tens of "
        "milliseconds under load. Retiring a version after a live reload collects once.",
    )  # fmt: skip
    gc_young_threshold: int | None = Field(
        default=5000, ge=100, le=1_000_000,
        description="Allocations between collections of the collector's youngest generation, "
        "applied with gc_freeze (Python's default is 700). A request's objects mostly die young "
        "by reference counting; collecting less often promotes fewer of them to the older "
        "generations, whose collections are the long pauses. null: Python's default.",
    )  # fmt: skip
    # -- admission control (per server process) --
    max_concurrent_requests: int = Field(
        default=64, ge=1, le=100_000,
        description="Reward requests in service at once per process (an upper bound: while "
        "the event loop lags, admission lowers the limit so that rejections stay fast).",
    )  # fmt: skip
    max_queue_wait_s: float | None = Field(
        default=None, ge=0, le=3600,
        description="Longest a request may wait at the door for a slot; null: as long as "
        "it is predicted to finish within half of request_timeout_s (the rest is headroom). "
        "A request predicted to need longer (from the work admitted ahead of it and the "
        "measured throughput) is refused at once with 429 and Retry-After.",
    )  # fmt: skip
    max_admitted_bytes: int = Field(
        default=256 * 1024 * 1024, gt=0,
        description="Request bodies admitted at once per process (waiting and in service): "
        "the bound on memory held for requests. Must be at least max_request_bytes.",
    )  # fmt: skip
    max_admitted_items: int = Field(
        default=100_000, gt=0,
        description="Items in requests being scored at once per process; a request that "
        "would pass it gets 429. Must be at least max_items_per_request.",
    )  # fmt: skip
    # -- connections (HTTP) --
    max_connections: int = Field(
        default=1000, ge=1, le=1_000_000,
        description="Open HTTP connections per process. At the limit a new connection "
        "closes the longest-idle one; if none is idle it gets 503 and is closed.",
    )  # fmt: skip
    header_read_timeout_s: float = Field(
        default=10.0, gt=0, le=3600,
        description="A request head (request line and headers) must arrive within this "
        "long of the connection opening or of the request's first byte; else 408 and close.",
    )  # fmt: skip
    body_read_timeout_s: float = Field(
        default=60.0, gt=0, le=3600,
        description="A request body must arrive within this long of its head; else 408 and "
        "close.",
    )  # fmt: skip
    keep_alive_timeout_s: float = Field(
        default=5.0, gt=0, le=3600,
        description="An idle keep-alive connection is closed after this long.",
    )  # fmt: skip
    max_header_bytes: int = Field(
        default=65536, ge=1024, le=16 * 1024 * 1024,
        description="Largest request head (request line and headers); larger gets 431.",
    )  # fmt: skip
    workers: int = Field(
        default=1, ge=1, le=256,
        description="HTTP gateway processes sharing the port, each with its own engine "
        "(scorers, caches, admission limits): more cores for CPU-bound rule pipelines. "
        "Model scorers load once per process; for shared model replicas use Ray Serve.",
    )  # fmt: skip
    monitor_window: int = Field(
        default=10_000, ge=10, le=1_000_000,
        description="Items per pipeline in the reward-health window (/v1/pipelines/NAME/stats).",
    )  # fmt: skip

    @field_validator("api_keys", "admin_api_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        if isinstance(value, list):
            return [str(k) if isinstance(k, int | float) else k for k in value]
        return value

    @field_validator("api_keys_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                value.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read {value}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _admission_fits_one_request(self) -> ServerSettings:
        if self.max_admitted_bytes < self.max_request_bytes:
            raise ValueError(
                f"max_admitted_bytes ({self.max_admitted_bytes}) must be at least "
                f"max_request_bytes ({self.max_request_bytes}), or no largest request fits"
            )
        if self.max_admitted_items < self.max_items_per_request:
            raise ValueError(
                f"max_admitted_items ({self.max_admitted_items}) must be at least "
                f"max_items_per_request ({self.max_items_per_request})"
            )
        return self

    def all_api_keys(self) -> list[str]:
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.api_keys_file is not None:
            text = self.api_keys_file.read_text(encoding="utf-8")
            keys += [line.strip() for line in text.splitlines() if line.strip()]
        return keys


class BatchingSettings(_Section):
    max_batch_size: int = Field(default=256, gt=0, description="Most items in one batch.")
    max_batch_tokens: int = Field(default=1_048_576, gt=0, description="padded tokens a batch")
    max_wait_ms: float = Field(
        default=0.0, ge=0, le=10_000,
        description="How long an idle scorer waits for more items before it starts a batch. "
        "0 (continuous batching): start at once; a busy scorer's next batch is formed when a "
        "slot frees, from everything queued by then.",
    )  # fmt: skip
    max_queue_items: int = Field(
        default=100_000, gt=0,
        description="Items a scorer queue holds; beyond this, requests get 429 with Retry-After.",
    )  # fmt: skip
    max_concurrent_batches: int = Field(
        default=2, gt=0, description="Batches of one scorer computed at the same time."
    )
    order: Literal["arrival", "length"] | None = Field(
        default=None,
        description="arrival: oldest first; length: the oldest item with the waiting items "
        "nearest in length (less padding). Unset: the scorer kind's choice (models: length).",
    )


class CacheSettings(_Section):
    backend: Literal["memory", "redis", "none"] = Field(
        default="memory",
        description="memory: an in-process LRU; redis: the LRU in front of a Redis shared by "
        "every process and replica; none: no cache.",
    )
    max_entries: int = Field(
        default=200_000, ge=0, description="In-process LRU entries (the first level, also "
        "in front of Redis); 0 turns it off."
    )  # fmt: skip
    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="redis:// or rediss:// (TLS) URL; credentials as redis://:PASSWORD@host "
        "or user:password@. Prefer REFEREE_CACHE__URL from a secret to a file.",
    )
    ttl_s: int | None = Field(default=7 * 24 * 3600, gt=0, description="null: no expiry")
    namespace: str = Field(
        default="referee", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Prefix of the Redis keys: {namespace}:v{schema}:{sha256}.",
    )  # fmt: skip
    op_timeout_s: float = Field(default=0.25, gt=0, le=10, description="per Redis call")
    breaker_cooldown_s: float = Field(
        default=5.0, gt=0, le=600, description="after a Redis failure, skip it this long"
    )

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value


class ScorerConfig(_Section):
    kind: str = Field(description="The scorer kind (see Scorer kinds below).")
    options: dict[str, Any] = Field(
        default_factory=dict, description="The kind's options (see its table below)."
    )
    batching: BatchingSettings | None = Field(
        default=None, description="Overrides the global batching settings for this scorer."
    )

    @model_validator(mode="after")
    def _known_kind_and_options(self) -> ScorerConfig:
        try:
            cls = scorer_class(self.kind)
        except UnknownKindError as exc:
            raise ValueError(str(exc)) from None
        # Validate now so a bad option fails at start-up, naming the option.
        try:
            options = cls.Options.model_validate(self.options)
        except ValidationError as exc:
            raise ValueError(
                "; ".join(f"options.{p}" for p in format_validation_error(exc))
            ) from None
        try:  # the fingerprint reads what the options point at (a file, a function)
            cls("check", options).fingerprint()
        except Exception as exc:
            raise ValueError(f"options: {type(exc).__name__}: {exc}") from None
        return self


class GroupSettings(_Section):
    """Group assembly: the items of a group sent over several requests (see groups.py)."""

    timeout_s: float | None = Field(
        default=None, gt=0, le=3600,
        description="How long the first item of a group waits for the rest; then the group "
        "is answered as `on_timeout` says. Must be under server.request_timeout_s (and the "
        "trainer's own HTTP timeout: OpenRLHF 180 s). Default: half of "
        "server.request_timeout_s, at most 60 s.",
    )  # fmt: skip
    on_timeout: Literal["score", "error"] = Field(
        default="score",
        description="score: normalise over the items that arrived, each saying so in "
        "`info.group`; error: a `group_incomplete` error per item.",
    )
    max_pending_items: int = Field(
        default=100_000, gt=0,
        description="Items that may wait for their groups at once; above it requests get 429.",
    )  # fmt: skip
    max_group_size: int = Field(default=1024, gt=0, description="Largest group_size accepted.")


class PipelineConfig(_Section):
    description: str = Field(
        default="", description="Shown by /v1/pipelines and `referee pipelines`."
    )
    reward: Node = Field(
        description="The expression tree: a scorer name or a node (see Pipeline nodes below)."
    )
    group_size: int | None = Field(
        default=None, ge=1,
        description="Items per group when a request does not say (options.group_size, the "
        "OpenRLHF route's ?group_size=): the engine assembles groups sent over several "
        "requests. Used only by pipelines with group steps (group_norm, group judging, "
        "group similarity).",
    )  # fmt: skip


def scorer_refs(node: Node) -> Iterator[ScorerNode]:
    """Every scorer leaf in a tree, conditions included."""
    if isinstance(node, ScorerNode):
        yield node
    elif isinstance(node, CombineNode):
        for child in node.inputs:
            yield from scorer_refs(child)
    elif isinstance(node, GateNode):
        yield from scorer_refs(node.when.node)
        yield from scorer_refs(node.then)


class Settings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    groups: GroupSettings = Field(default_factory=GroupSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    scorers: dict[str, ScorerConfig] = Field(default_factory=dict)
    pipelines: dict[str, PipelineConfig] = Field(default_factory=dict)

    @field_validator("scorers")
    @classmethod
    def _scorer_names(cls, value: dict[str, ScorerConfig]) -> dict[str, ScorerConfig]:
        for name in value:
            if not SCORER_NAME_RE.match(name):
                raise ValueError(
                    f"scorer name {name!r} must be letters, digits, '_' or '-' (no dots)"
                )
        return value

    @model_validator(mode="after")
    def _references_resolve(self) -> Settings:
        if not self.pipelines:
            raise ValueError("at least one pipeline must be defined under `pipelines`")
        for pname, pipeline in self.pipelines.items():
            for leaf in scorer_refs(pipeline.reward):
                if leaf.scorer_name not in self.scorers:
                    known = ", ".join(sorted(self.scorers)) or "none"
                    raise ValueError(
                        f"pipelines.{pname}.reward: unknown scorer {leaf.scorer_name!r} "
                        f"(configured scorers: {known})"
                    )
            if pipeline.group_size is not None and pipeline.group_size > self.groups.max_group_size:
                raise ValueError(
                    f"pipelines.{pname}.group_size: {pipeline.group_size} is over "
                    f"groups.max_group_size ({self.groups.max_group_size})"
                )
        if self.groups.timeout_s is None:
            self.groups.timeout_s = min(60.0, self.server.request_timeout_s / 2)
        elif self.groups.timeout_s >= self.server.request_timeout_s:
            raise ValueError(
                f"groups.timeout_s ({self.groups.timeout_s:g}) must be under "
                f"server.request_timeout_s ({self.server.request_timeout_s:g}), or a request "
                "would time out before its group is answered"
            )
        return self

    def batching_for(self, scorer: str) -> BatchingSettings:
        """Global batching settings, then the defaults the scorer's kind needs (a model
        scorer: one batch at a time, a token budget for a model), then the keys set in the
        scorer's own ``batching`` section."""
        cfg = self.scorers[scorer]
        cls = scorer_class(cfg.kind)
        defaults = cls.batching_defaults(cls.Options.model_validate(cfg.options))
        merged = self.batching.model_copy(update=defaults)
        if cfg.batching is not None:
            own = {key: getattr(cfg.batching, key) for key in cfg.batching.model_fields_set}
            merged = merged.model_copy(update=own)
        return merged


# -- loading ------------------------------------------------------------------------------
def default_config_path() -> Path:
    return Path(str(resources.files("referee").joinpath("default_config.yaml")))


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
        if path[0] not in _SECTIONS or len(path) < 2:
            continue
        if path[-1] in ("api_keys", "admin_api_keys"):
            value: Any = raw  # keys are text: YAML would turn `yes` or `0123` into other things
        else:
            try:
                value = yaml.safe_load(raw) if raw.strip() else raw
            except yaml.YAMLError:
                value = raw
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return overrides


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


_UNION_TAGS = frozenset(
    {"scorer", "combine", "gate"}
    | {"clip", "affine", "sigmoid_centered", "log_sigmoid_centered", "group_norm"}
    | {"running_zscore"}
)
_UNION_FIELDS = frozenset({"reward", "then", "node", "inputs", "transforms"})


def format_validation_error(exc: ValidationError) -> list[str]:
    """pydantic errors as ``dotted.path[2].field: message`` lines, union tags dropped."""
    lines = []
    for err in exc.errors():
        path = ""
        previous: object = None
        for part in err["loc"]:
            before, previous = previous, part
            if isinstance(part, int):
                path += f"[{part}]"
            elif str(part).startswith("function-"):
                continue
            elif part in _UNION_TAGS and (isinstance(before, int) or before in _UNION_FIELDS):
                continue  # the discriminator value pydantic adds to the location
            else:
                path += f".{part}" if path else str(part)
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{path or '(top level)'}: {msg}")
    return lines


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    data: Mapping[str, Any] | None = None,
) -> Settings:
    """Load a config file (or the embedded default), apply env overrides, validate."""
    if path is not None:
        source = str(path)
    else:
        source = "config" if data is not None else "embedded default config"
    if data is None:
        file = Path(path) if path is not None else default_config_path()
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"cannot read {file}: {exc.strerror or exc}"], source) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"not valid YAML: {exc}"], source) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(["the top level must be a mapping"], source)
        data = loaded
    merged = _merge(dict(data), _env_overrides(os.environ if environ is None else environ))
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc), source) from None
