"""What every transformers-backed scorer shares: tokenize once (before queueing, so the
token count is the batcher's cost), explicit truncation, padded batches with correct
attention masks and positions, one forward pass at a time per model in its own thread,
out-of-memory splitting, and inference mode.

A subclass says how an item becomes token sequences (:meth:`ModelScorer.encode`) and how
a forward pass over a padded batch becomes results (:meth:`ModelScorer.forward`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar

from referee.media import INVALID_IMAGE, ImageDecodeError
from referee.scorers.base import (
    Prepared,
    ScoreInput,
    Scorer,
    ScoreResult,
    deadline_passed,
    past_deadline_result,
)
from referee.scorers.models._hf import (
    LoadedModel,
    ModelOptions,
    ModelSource,
    load_model,
    resolve_device_dtype,
)
from referee.scorers.models._vision import (
    ImageLike,
    item_conversation,
    item_has_images,
    merge_vision,
    vision_encode,
)

if TYPE_CHECKING:
    import torch

__all__ = ["Encoded", "ItemRejected", "ModelScorer", "Seq", "split_on_oom"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Tokenizing more characters than this happens in a thread, off the event loop.
_INLINE_CHARS = 50_000
# Model outputs that rescale logits after the LM head: read the model's own logits then.
_LOGIT_RESCALING = ("final_logit_softcapping", "logit_scale", "logits_scaling")


TEXT_ONLY = (
    "this item has images and this scorer's model reads text only: use a vision-language "
    "model, or send the item without images"
)


class ItemRejected(Exception):
    """An item this scorer cannot score (too long, nothing to score): a per-item error."""

    def __init__(self, message: str, error_type: str = "invalid_input") -> None:
        super().__init__(message)
        self.error_type = error_type


@dataclass(slots=True)
class Seq:
    """One token sequence of an item. ``span`` marks the tokens a scorer reads (for the
    likelihood scorer: the tokens whose probabilities count)."""

    ids: list[int]
    type_ids: list[int] | None = None
    span: tuple[int, int] | None = None
    # A vision-language model's image tensors for this sequence (pixel_values...), from
    # its processor; the ids hold the images' placeholder tokens.
    vision: dict[str, torch.Tensor] | None = None
    # The text (or text pair) behind the ids, for a pooling server that tokenizes itself
    text: list[str] | None = None


@dataclass(slots=True)
class Encoded:
    """An item made of one or more sequences (none: nothing to run the model on)."""

    seqs: list[Seq]
    truncated: str | None = None  # a note saying what was cut

    @property
    def cost(self) -> int:
        """Padded tokens this item adds to a batch: its longest sequence per sequence."""
        return max(len(s.ids) for s in self.seqs) * len(self.seqs) if self.seqs else 1


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def split_on_oom(
    run: Callable[[list[T]], list[R]],
    items: list[T],
    too_big: Callable[[T], R],
    oom: Callable[[BaseException], bool] = is_oom,
    on_split: Callable[[], None] = lambda: None,
) -> list[R]:
    """``run(items)``; when it runs out of memory, run each half on its own (recursively).
    An item that does not fit even alone gets ``too_big(item)``."""
    try:
        return run(items)
    except Exception as exc:
        if not oom(exc):
            raise
    on_split()
    if len(items) == 1:
        return [too_big(items[0])]
    mid = len(items) // 2
    return split_on_oom(run, items[:mid], too_big, oom, on_split) + split_on_oom(
        run, items[mid:], too_big, oom, on_split
    )


class ModelScorer(Scorer):
    """Base of the classifier, prm, similarity and likelihood scorers."""

    Options: ClassVar[type[ModelOptions]] = ModelOptions
    options: ModelOptions
    batch_order = "length"
    default_batching: ClassVar[dict[str, object]] = {
        "max_batch_size": 64,
        "max_batch_tokens": 8_192,
        "max_concurrent_batches": 1,
    }
    libraries = ("torch", "transformers")
    reads: ClassVar[tuple[str, ...]] = ("prompt", "response", "messages")  # the chat template
    auto_class: ClassVar[str] = "AutoModel"

    def __init__(self, name: str, options: ModelOptions) -> None:
        super().__init__(name, options)
        self.loaded: LoadedModel | None = None
        # One forward pass at a time per model: torch already uses every core for one.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, f"referee-{name}")
        self._accepts_positions = False
        # A fast tokenizer resets its truncation state on every call and fails with
        # "Already borrowed" when two threads use it at once: one tokenizing thread at a time.
        self._tokenizing = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------
    def model_class(self) -> str:
        """The transformers Auto class that loads this scorer's model."""
        return self.auto_class

    async def setup(self) -> None:
        loop = asyncio.get_running_loop()
        self.loaded = await loop.run_in_executor(
            self._executor,
            lambda: load_model(self.options, self.model_class()),
        )
        params = inspect.signature(self.loaded.model.forward).parameters
        # Models that derive positions from their images (Qwen2-VL's multimodal RoPE) are
        # given none: they compute them from the attention mask themselves.
        self._accepts_positions = "position_ids" in params and not _own_positions(self.loaded.model)
        self.after_load(self.loaded)
        log.info(
            "scorer %s: loaded %s on %s (%s), max_length %d, padding %s", self.name,
            self.options.model, self.loaded.device, self.loaded.dtype,
            self.loaded.max_length, self.loaded.padding_side,
        )  # fmt: skip

    def after_load(self, loaded: LoadedModel) -> None:
        """Checks and lookups that need the tokenizer (a step token's id)."""

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.loaded = None

    def health(self) -> dict[str, object]:
        if self.loaded is None:
            return {"ready": False, "model": self.options.model}
        return {
            "ready": True,
            "model": self.options.model,
            "device": str(self.loaded.device),
            "dtype": str(self.loaded.dtype).removeprefix("torch."),
            "max_length": self.loaded.max_length,
        }

    def memory_bytes(self) -> int | None:
        if self.loaded is None:
            return None
        model = self.loaded.model
        return sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
            b.numel() * b.element_size() for b in model.buffers()
        )

    def memory_estimate(self) -> int | None:
        """The weight files' size on disk (a hub id: unknown). A GGUF file is dequantised
        when loaded, so it counts four times its size."""
        local = ModelSource.parse(self.options.model).local
        if local is None:
            return None
        files = [local] if local.is_file() else list(local.rglob("*"))
        total = 0
        for file in files:
            if file.suffix in (".safetensors", ".bin", ".pt", ".pth"):
                total += file.stat().st_size
            elif file.suffix == ".gguf":
                total += 4 * file.stat().st_size
        return total or None

    def fingerprint_options(self) -> dict[str, object]:
        """Local weights enter the fingerprint by content (fingerprint_extra), not by path:
        the same files moved elsewhere keep their cache entries."""
        options = super().fingerprint_options()
        for key in ("model", "tokenizer"):
            value = options.get(key)
            if isinstance(value, str) and ModelSource.parse(value).local is not None:
                options[key] = "local"
        return options

    def fingerprint_extra(self) -> dict[str, object]:
        identity = ModelSource.parse(self.options.model).identity(self.options.revision)
        if self.options.tokenizer is not None:
            tok = ModelSource.parse(self.options.tokenizer).identity(self.options.revision)
            identity["tokenizer"] = tok
        _, dtype = resolve_device_dtype(self.options.device, self.options.dtype)
        return {**identity, "effective_dtype": dtype}

    @property
    def model(self) -> LoadedModel:
        if self.loaded is None:
            raise RuntimeError(f"scorer {self.name!r} is not loaded (setup() not run)")
        return self.loaded

    # -- tokenizing ------------------------------------------------------------------
    def encode(self, item: ScoreInput) -> Encoded:
        raise NotImplementedError

    def conversation(self, item: ScoreInput, response: str | None = None) -> list[dict[str, str]]:
        """The item as chat messages (``messages``, else prompt as user and response as
        assistant), with the configured system prompt first when it has none."""
        if item.messages is not None:
            messages = [dict(m) for m in item.messages]
            if response is not None:
                messages[-1]["content"] = response
        else:
            text = item.response if response is None else response
            messages = [
                {"role": "user", "content": item.prompt},
                {"role": "assistant", "content": text},
            ]
        if self.options.system_prompt is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.options.system_prompt})
        return messages

    @property
    def is_vision(self) -> bool:
        """A vision-language model (loaded with its processor)."""
        return self.model.processor is not None

    def vision_conversation(
        self, item: ScoreInput, response: str | None = None
    ) -> tuple[list[dict[str, object]], list[ImageLike]]:
        """The item as chat messages of content parts, and its images in order, with the
        configured system prompt first when it has none."""
        messages, images = item_conversation(item, response)
        if self.options.system_prompt is not None and messages[0]["role"] != "system":
            system = [{"type": "text", "text": self.options.system_prompt}]
            messages.insert(0, {"role": "system", "content": system})
        return messages, images

    def has_images(self, item: ScoreInput) -> bool:
        return item_has_images(item)

    def vision_seq(self, text: str, images: Sequence[ImageLike]) -> Seq:
        """A rendered conversation and its images as one sequence (placeholders expanded)."""
        if images and not self.is_vision:
            raise ItemRejected(TEXT_ONLY)
        if not self.is_vision:
            return Seq(self.tokens(text))
        try:
            ids, vision = vision_encode(self.model.processor, text, images)
        except ImageDecodeError as exc:
            raise ItemRejected(str(exc), INVALID_IMAGE) from None
        return Seq(ids, vision=vision or None)

    def has_chat_template(self) -> bool:
        tok = self.model.tokenizer
        processor = self.model.processor
        return (
            self.options.chat_template is not None
            or bool(getattr(tok, "chat_template", None))
            or bool(getattr(processor, "chat_template", None))
        )

    def render(
        self, messages: Sequence[Mapping[str, object]], add_generation_prompt: bool = False
    ) -> str:
        """Messages as text, through the model's chat template (or the configured one); a
        vision-language model's through its processor's."""
        if not self.has_chat_template():
            raise ItemRejected(
                "this model's tokenizer has no chat template: configure `chat_template`, "
                "or an input mode that does not need one"
            )
        processor = self.model.processor
        if processor is not None and getattr(processor, "chat_template", None):
            messages = [_as_parts(m) for m in messages]
        renderer = processor if processor is not None else self.model.tokenizer
        text = renderer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt,
            chat_template=self.options.chat_template,
        )  # fmt: skip
        return str(text)

    def tokens(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; a BOS the template already wrote is not doubled."""
        ids: list[int] = self.model.tokenizer(text, add_special_tokens=add_special_tokens)[
            "input_ids"
        ]
        bos = self.model.tokenizer.bos_token_id
        if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]
        return ids

    def fit(self, seq: Seq, what: str = "input") -> tuple[Seq, str | None]:
        """Apply max_length to one sequence: reject it, or cut it and say so."""
        limit = self.model.max_length
        n = len(seq.ids)
        if n <= limit:
            return seq, None
        mode = self.options.truncation
        if seq.vision:
            raise ItemRejected(
                f"{what} is {n} tokens with its images; this scorer takes at most {limit} "
                "(max_length), and an input with images is never cut (that would cut an "
                "image's tokens): send fewer or smaller images, or a shorter text",
                "input_too_long",
            )
        if mode == "reject":
            raise ItemRejected(
                f"{what} is {n} tokens; this scorer takes at most {limit} (max_length): "
                "shorten it, or configure truncation: left|right",
                "input_too_long",
            )
        special = set(self.model.tokenizer.all_special_ids)
        if mode == "left":  # keep a leading BOS/CLS, drop the oldest tokens after it
            head = 1 if seq.ids[0] in special else 0
            kept = [*range(head), *range(n - (limit - head), n)]
        else:  # keep a trailing EOS/SEP
            tail = 1 if seq.ids[-1] in special else 0
            kept = [*range(limit - tail), *range(n - tail, n)]
        span = None
        if seq.span is not None:
            where = {old: new for new, old in enumerate(kept)}
            inside = [where[i] for i in range(*seq.span) if i in where]
            if not inside:
                raise ItemRejected(
                    f"{what} is {n} tokens and truncation to {limit} would cut all of the "
                    "part this scorer reads", "input_too_long",
                )  # fmt: skip
            span = (inside[0], inside[-1] + 1)
        fitted = Seq(
            [seq.ids[i] for i in kept],
            [seq.type_ids[i] for i in kept] if seq.type_ids else None,
            span,
            text=seq.text,
        )
        return fitted, f"truncated ({mode}): kept {limit} of {n} tokens"

    async def prepare(self, items: Sequence[ScoreInput]) -> list[Prepared]:
        """Small requests tokenize on the event loop (a thread hop costs more), unless a
        big one holds the tokenizer: then they wait in a thread, never on the loop."""
        small = sum(len(i.response) + len(i.prompt) for i in items) <= _INLINE_CHARS
        small = small and not any(item_has_images(i) for i in items)  # image preprocessing
        if small and self._tokenizing.acquire(blocking=False):
            try:
                return self._prepare_locked(items)
            finally:
                self._tokenizing.release()
        return await asyncio.to_thread(self._prepare_all, items)

    def _prepare_all(self, items: Sequence[ScoreInput]) -> list[Prepared]:
        with self._tokenizing:
            return self._prepare_locked(items)

    def _prepare_locked(self, items: Sequence[ScoreInput]) -> list[Prepared]:
        out: list[Prepared] = []
        for item in items:
            try:
                encoded = self.encode(item)
                out.append(Prepared(encoded.cost, encoded))
            except ItemRejected as exc:
                out.append(Prepared(1, ScoreResult.failed(str(exc), exc.error_type)))
            except Exception as exc:  # a tokenizer failing on odd text fails the item
                message = f"could not tokenize: {type(exc).__name__}: {exc}"
                out.append(Prepared(1, ScoreResult.failed(message, "invalid_input")))
        return out

    # -- scoring ---------------------------------------------------------------------
    async def score_batch(self, items: Sequence[ScoreInput]) -> list[ScoreResult]:
        return await self.score_prepared(items, await self.prepare(items))

    async def score_prepared(
        self, items: Sequence[ScoreInput], prepared: Sequence[Prepared]
    ) -> list[ScoreResult]:
        results: list[ScoreResult | None] = [
            p.payload if isinstance(p.payload, ScoreResult) else None for p in prepared
        ]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            if deadline_passed():
                return [r if r is not None else past_deadline_result() for r in results]
            encoded: list[Encoded] = [prepared[i].payload for i in todo]  # type: ignore[misc]
            scored = await self.score_encoded(encoded)
            for i, enc, result in zip(todo, encoded, scored, strict=True):
                note = enc.truncated
                if note is not None and result.error is None:
                    result.truncated = True
                    result.reason = f"{result.reason}; {note}" if result.reason else note
                results[i] = result
        return [r for r in results if r is not None]

    async def score_encoded(self, encoded: list[Encoded]) -> list[ScoreResult]:
        """One result per encoded item: a forward pass on the model's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, encoded)

    def _run(self, encoded: list[Encoded]) -> list[ScoreResult]:
        import torch

        def too_big(_: Encoded) -> ScoreResult:
            return ScoreResult.failed(
                "out of memory scoring this item alone: shorten it or lower max_length",
                "out_of_memory",
            )

        def release() -> None:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

        with torch.inference_mode():
            return split_on_oom(self.forward, encoded, too_big, on_split=release)

    def forward(self, encoded: list[Encoded]) -> list[ScoreResult]:
        """Score the items of a batch (on the model's thread, in inference mode)."""
        raise NotImplementedError

    def collate(self, seqs: Sequence[Seq]) -> dict[str, torch.Tensor]:
        """Pad sequences into tensors. Left padding gets explicit position ids, so a padded
        row sees the same positions as it would alone (absolute and rotary embeddings)."""
        import torch

        loaded = self.model
        width = max(len(s.ids) for s in seqs)
        ids = torch.full((len(seqs), width), loaded.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        types = None
        if any(s.type_ids for s in seqs):
            types = torch.zeros((len(seqs), width), dtype=torch.long)
        left = loaded.padding_side == "left"
        for row, seq in enumerate(seqs):
            n = len(seq.ids)
            cols = slice(width - n, width) if left else slice(0, n)
            ids[row, cols] = torch.tensor(seq.ids, dtype=torch.long)
            mask[row, cols] = 1
            if types is not None and seq.type_ids:
                types[row, cols] = torch.tensor(seq.type_ids, dtype=torch.long)
        inputs = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            inputs["token_type_ids"] = types
        if left and self._accepts_positions:
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        out = {k: v.to(loaded.device) for k, v in inputs.items()}
        for key, value in merge_vision([s.vision for s in seqs]).items():
            floating = value.is_floating_point()
            out[key] = value.to(loaded.device, dtype=loaded.dtype if floating else None)
        return out

    def logits_at(
        self, inputs: dict[str, torch.Tensor], wanted: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """A causal LM's logits at columns ``wanted[r]`` of each row ``r`` of a batch from
        :meth:`collate`; the LM head runs on those positions only (a vocabulary-wide
        projection of every position would dominate memory on long inputs)."""
        model = self.model.model
        rescaled = any(getattr(model.config, k, None) for k in _LOGIT_RESCALING)
        head = model.get_output_embeddings()
        if head is not None and not rescaled and hasattr(model, "get_decoder"):
            # A VLM's base model takes the images too; a text LM's is its decoder.
            body = model.base_model if self.is_vision else model.get_decoder()
            hidden = body(**inputs).last_hidden_state
            return [head(hidden[r, cols]) for r, cols in enumerate(wanted)]
        logits = model(**inputs).logits
        return [logits[r, cols] for r, cols in enumerate(wanted)]

    def offsets(self, seqs: Sequence[Seq]) -> list[int]:
        """Column where each row's first real token sits in a batch from :meth:`collate`."""
        width = max(len(s.ids) for s in seqs)
        if self.model.padding_side == "left":
            return [width - len(s.ids) for s in seqs]
        return [0] * len(seqs)


def _own_positions(model: object) -> bool:
    """A model that computes its own (multimodal) position ids from its inputs."""
    inner = getattr(model, "model", model)
    return hasattr(model, "get_rope_index") or hasattr(inner, "get_rope_index")


def _as_parts(message: Mapping[str, object]) -> Mapping[str, object]:
    """A message whose text content is a list of one text part: VLM chat templates iterate
    over parts (a string would be read character by character)."""
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": [{"type": "text", "text": content}]}
    return message
