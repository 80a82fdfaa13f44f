"""Stand-in for vLLM (GPU-only): the names OpenRLHF's ``vllm_engine`` and
``samples_generator`` modules import at module level. Generation itself is done by the
test's engine object, which returns fixed completions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__version__ = "0.11.0"  # OpenRLHF asserts a streaming-capable vLLM (> 0.8.5)


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int | None = None
    min_tokens: int = 0
    skip_special_tokens: bool = True
    logprobs: int | None = None
    n: int = 1


class _Unavailable:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("vLLM is not installed here (stand-in): no engine can be built")


AsyncEngineArgs = AsyncLLMEngine = LLM = _Unavailable
