"""The ``transformers`` judge backend: a local causal LM loaded, rendered, tokenized,
truncated and batched by the model scorers' machinery (:class:`ModelScorer`).

Label probabilities come from one forward pass per chat: the prompt (chat template +
verdict prefix) followed by the tokens of the longest multi-token label, so "1" and
"10" are both read off the same pass. Greedy generation runs batched (left padding);
sampled generation runs one item at a time under its own seed, so an item's samples do
not depend on which other items shared its batch (the cache stays truthful).
"""

from __future__ import annotations

import asyncio
import math

from referee.scorers.judge.backends import JudgeBackend, JudgeCallError, label_token_ids
from referee.scorers.judge.options import JudgeOptions, SamplingOptions
from referee.scorers.judge.templates import Chat
from referee.scorers.models._hf import LoadedModel, load_tokenizer, load_vision_processor
from referee.scorers.models._model import TEXT_ONLY, ItemRejected, ModelScorer, Seq
from referee.scorers.models._vision import ImageLike, chat_images, strip_images

__all__ = ["TransformersBackend"]


class _JudgeLM(ModelScorer):
    """The model half of a judge: never registered as a scorer of its own."""

    kind = "judge-lm"
    auto_class = "AutoModelForCausalLM"

    def after_load(self, loaded: LoadedModel) -> None:
        if not self.has_chat_template():
            raise ValueError(
                f"judge {self.name!r}: the model has no chat template; configure `chat_template`"
            )

    def load_tokenizer_only(self, max_length: int) -> None:
        """For a backend that runs the model elsewhere (vLLM): the same chat rendering,
        tokenizing and max_length handling as here, without loading the weights."""
        import torch

        processor = load_vision_processor(self.options)
        tokenizer = processor.tokenizer if processor is not None else load_tokenizer(self.options)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.loaded = LoadedModel(
            tokenizer=tokenizer, model=None, device=torch.device("cpu"), dtype=torch.float32,
            padding_side="left", pad_id=int(pad), max_length=max_length, processor=processor,
        )  # fmt: skip
        self.after_load(self.loaded)

    def engine_prompt(self, chat: Chat, prefix: str) -> tuple[list[int], list[ImageLike]]:
        """For an engine that expands image placeholders itself (vLLM): the prompt's tokens
        with one placeholder per image, and the images in order."""
        images = chat_images(chat)
        if images and not self.is_vision:
            raise ItemRejected(TEXT_ONLY)
        text = self.render(strip_images(chat), add_generation_prompt=True) + prefix
        return self.tokens(text), images

    def prompt_seq(self, chat: Chat, prefix: str) -> Seq:
        """The judge prompt as tokens (a VLM's with its images' placeholders expanded and
        its image tensors); a text-only model given images rejects the item."""
        images = chat_images(chat)
        if images and not self.is_vision:
            raise ItemRejected(TEXT_ONLY)
        text = self.render(strip_images(chat), add_generation_prompt=True) + prefix
        if not self.is_vision:
            return Seq(self.tokens(text))
        return self.vision_seq(text, images)

    def prompt_ids(self, chat: Chat, prefix: str) -> list[int]:
        return self.prompt_seq(chat, prefix).ids


class TransformersBackend(JudgeBackend):
    libraries = ("torch", "transformers")

    def __init__(self, name: str, options: JudgeOptions) -> None:
        super().__init__(name, options)
        # Generation appends to the end of each row: pad on the left unless told otherwise.
        side = "left" if options.padding_side == "auto" else options.padding_side
        self.lm = _JudgeLM(name, options.model_copy(update={"padding_side": side}))

    async def setup(self) -> None:
        await self.lm.setup()

    async def close(self) -> None:
        await self.lm.close()

    def health(self) -> dict[str, object]:
        return self.lm.health()

    def identity(self) -> dict[str, object]:
        options = self.lm.fingerprint_options()
        options.pop("vllm")  # another backend's settings
        return {"options": options, **self.lm.fingerprint_extra()}

    async def _on_model_thread(self, fn, *args):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.lm._executor, fn, *args)

    # -- label probabilities -------------------------------------------------------------
    async def label_probs(
        self, chats: list[Chat], prefix: str, labels: list[str]
    ) -> list[dict[str, float] | JudgeCallError]:
        result: list[dict[str, float] | JudgeCallError] = await self._on_model_thread(
            self._label_probs, chats, prefix, labels
        )
        return result

    def _label_probs(
        self, chats: list[Chat], prefix: str, labels: list[str]
    ) -> list[dict[str, float] | JudgeCallError]:
        import torch

        label_ids = label_token_ids(self.lm.tokens, prefix, labels)
        # Token contexts after the prompt that every label's tokens can be read from.
        tails: list[list[int]] = []
        for ids in sorted(label_ids.values(), key=len, reverse=True):
            if not any(t[: len(ids) - 1] == ids[:-1] for t in tails):
                tails.append(ids[:-1])
        rows: list[Seq] = []
        owners: list[int] = []
        out: list[dict[str, float] | JudgeCallError] = [{} for _ in chats]
        for i, chat in enumerate(chats):
            try:
                head = self.lm.prompt_seq(chat, prefix)
                for tail in tails:  # truncation is reject or left: the tail stays whole
                    seq, _ = self.lm.fit(
                        Seq(head.ids + tail, vision=head.vision), "the judge prompt"
                    )
                    seq.span = (len(seq.ids) - len(tail), len(seq.ids))
                    rows.append(seq)
                    owners.append(i)
            except ItemRejected as exc:
                out[i] = JudgeCallError(str(exc), exc.error_type)
        if not rows:
            return out
        with torch.inference_mode():
            inputs = self.lm.collate(rows)
            offsets = self.lm.offsets(rows)
            wanted = [
                torch.arange(off + s.span[0] - 1, off + s.span[1])  # type: ignore[index]
                for s, off in zip(rows, offsets, strict=True)
            ]
            logits = self.lm.logits_at(inputs, wanted)
        for seq, owner, row_logits in zip(rows, owners, logits, strict=True):
            target = out[owner]
            if isinstance(target, JudgeCallError):
                continue
            logp = torch.log_softmax(row_logits.float(), dim=-1)
            assert seq.span is not None
            tail = seq.ids[seq.span[0] : seq.span[1]]
            for label, ids in label_ids.items():
                if label in target or tail[: len(ids) - 1] != ids[:-1]:
                    continue
                target[label] = math.exp(sum(float(logp[j, t]) for j, t in enumerate(ids)))
        return out

    # -- generation ----------------------------------------------------------------------
    async def generate(
        self, chats: list[Chat], sampling: SamplingOptions, n: int
    ) -> list[list[str] | JudgeCallError]:
        result: list[list[str] | JudgeCallError] = await self._on_model_thread(
            self._generate, chats, sampling, n
        )
        return result

    def _generate(
        self, chats: list[Chat], sampling: SamplingOptions, n: int
    ) -> list[list[str] | JudgeCallError]:
        import torch

        out: list[list[str] | JudgeCallError] = [[] for _ in chats]
        ready: list[tuple[int, Seq]] = []
        for i, chat in enumerate(chats):
            try:
                seq, _ = self.lm.fit(self.lm.prompt_seq(chat, ""), "the judge prompt")
                ready.append((i, seq))
            except ItemRejected as exc:
                out[i] = JudgeCallError(str(exc), exc.error_type)
        greedy = sampling.temperature == 0
        # A batch needs left padding (new tokens go after each row's last real token).
        batched = greedy and self.lm.model.padding_side == "left"
        groups = [ready] if batched else [[r] for r in ready]
        with torch.inference_mode():
            for group in groups:
                if not group:
                    continue
                if not greedy:
                    torch.manual_seed(sampling.seed)
                texts = self._sample([s for _, s in group], sampling, 1 if greedy else n)
                for k, (i, _) in enumerate(group):
                    per = 1 if greedy else n
                    out[i] = texts[k * per : (k + 1) * per] * (n if greedy else 1)
        return out

    def _sample(self, seqs: list[Seq], sampling: SamplingOptions, n: int) -> list[str]:
        loaded = self.lm.model
        inputs = self.lm.collate(seqs)
        inputs.pop("position_ids", None)  # generate() derives them from the mask
        kwargs: dict[str, object] = {"do_sample": False}
        if sampling.temperature > 0:
            kwargs = {
                "do_sample": True,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "top_k": 0,
                "num_return_sequences": n,
            }
        generated = loaded.model.generate(
            **inputs,
            max_new_tokens=sampling.max_new_tokens,
            pad_token_id=loaded.pad_id,
            **kwargs,
        )
        width = inputs["input_ids"].shape[1]
        return [
            str(t)
            for t in loaded.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
        ]
