"""Sequence-classification reward models (``kind: classifier``).

Skywork-Reward-V2 and InternLM2-style RMs read the conversation through the model's chat
template (``input: chat``); DeBERTa-style RMs read a (question, answer) pair with no
template (``input: pair``). The reward is the logit at ``index``. A multi-objective head
returns named aspects too (``aspects``: logit index per name, each addressable in a
pipeline as ``scorer.aspect``); a model whose output carries ``score`` and ``rewards``
(ArmoRM: gated scalar and objective vector, ``trust_remote_code``) is read from those.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from referee.scorers.base import ScoreInput, ScoreResult
from referee.scorers.models._backends import Output, PoolingBackendOptions
from referee.scorers.models._hf import ModelOptions
from referee.scorers.models._model import TEXT_ONLY, Encoded, ItemRejected, Seq
from referee.scorers.models._pooled import PooledScorer

__all__ = ["ClassifierScorer"]


class ClassifierOptions(PoolingBackendOptions):
    input: Literal["auto", "chat", "pair", "text"] = Field(
        default="auto",
        description="chat: the conversation through the chat template; pair: (prompt, "
        "response) as a sentence pair; text: text_template filled in; auto: chat when the "
        "tokenizer has a template, else pair.",
    )
    text_template: str = Field(
        default="{prompt}{response}", description="For input: text ({prompt}, {response})."
    )
    index: int = Field(default=0, ge=0, description="The logit that is the reward.")
    auto_class: Literal["AutoModelForSequenceClassification", "AutoModel"] = Field(
        default="AutoModelForSequenceClassification",
        description="AutoModel for remote-code reward models (InternLM2-Reward, ArmoRM).",
    )
    add_special_tokens: bool = Field(
        default=True, description="Let the tokenizer add its BOS/EOS to the rendered text."
    )
    append_token_id: int | None = Field(
        default=None,
        ge=0,
        description="A token appended after the rendered input, for models that read their "
        "reward at a dedicated token (InternLM2-Reward: 92527).",
    )
    aspects: dict[str, int] | None = Field(
        default=None,
        description="Named logits (or, for models with a `rewards` output, named entries of "
        "that vector) returned as aspects: {helpfulness: 0, correctness: 1}.",
    )

    @model_validator(mode="after")
    def _template_fields(self) -> ClassifierOptions:
        try:
            self.text_template.format(prompt="", response="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"text_template may use only {{prompt}} and {{response}}: {exc!r}"
            ) from None
        return self


class ClassifierScorer(PooledScorer):
    kind = "classifier"
    Options: ClassVar[type[ModelOptions]] = ClassifierOptions
    options: ClassifierOptions
    auto_class = "AutoModelForSequenceClassification"
    # a vision-language reward model reads the images too
    reads = ("prompt", "response", "messages", "prompt_images", "response_images")

    pooling_task = "classify"

    def check_backend(self) -> None:
        o = self.options
        if o.auto_class != "AutoModelForSequenceClassification":
            raise ValueError(
                f"auto_class {o.auto_class}: remote-code reward models run on backend "
                "transformers only"
            )
        if o.remote is not None and o.backend == "remote" and o.remote.api == "tei":
            if o.append_token_id is not None:
                raise ValueError("append_token_id: TEI tokenizes texts itself; use api: vllm")
            if o.truncation == "left":
                raise ValueError("truncation left: TEI cuts inputs on the right only")

    def model_class(self) -> str:
        return self.options.auto_class

    def input_mode(self) -> str:
        mode = self.options.input
        if mode == "auto":
            return "chat" if self.has_chat_template() else "pair"
        return mode

    def encode(self, item: ScoreInput) -> Encoded:
        mode = self.input_mode()
        special = self.options.add_special_tokens
        if mode != "chat" and self.has_images(item):
            raise ItemRejected(
                f"this item has images; input: {mode} reads text only (a vision-language "
                "reward model reads images with input: chat)"
            )
        if mode == "chat" and self.is_vision:
            messages, images = self.vision_conversation(item)
            seq = self.vision_seq(self.render(messages), images)
        elif mode == "chat":
            if self.has_images(item):
                raise ItemRejected(TEXT_ONLY)
            text = self.render(self.conversation(item))
            seq = Seq(self.tokens(text, special), text=[text])
        elif mode == "pair":
            enc = self.model.tokenizer(item.prompt, item.response)
            seq = Seq(list(enc["input_ids"]), _type_ids(enc), text=[item.prompt, item.response])
        else:
            text = self.options.text_template.format(prompt=item.prompt, response=item.response)
            seq = Seq(self.tokens(text, special), text=[text])
        if self.options.append_token_id is not None:
            seq.ids.append(self.options.append_token_id)
            if seq.type_ids is not None:
                seq.type_ids.append(seq.type_ids[-1])
        seq, note = self.fit(seq)
        return Encoded([seq], truncated=note)

    def forward(self, encoded: list[Encoded]) -> list[ScoreResult]:
        seqs = [e.seqs[0] for e in encoded]
        output = self.model.model(**self.collate(seqs))
        score = getattr(output, "score", None)
        rewards = getattr(output, "rewards", None)
        logits = (output.logits if hasattr(output, "logits") else output[0]).float()
        values = (score if score is not None else logits[:, self.options.index]).float()
        vector = (rewards if rewards is not None else logits).float()
        results = []
        for row in range(len(seqs)):
            aspects = {
                name: float(vector[row, i]) for name, i in (self.options.aspects or {}).items()
            }
            results.append(ScoreResult(float(values[row].reshape(-1)[0]), aspects=aspects))
        return results

    def from_outputs(self, encoded: Encoded, outputs: list[Output]) -> ScoreResult:
        logits: list[float] = outputs[0]  # type: ignore[assignment]
        aspects = {name: float(logits[i]) for name, i in (self.options.aspects or {}).items()}
        return ScoreResult(float(logits[self.options.index]), aspects=aspects)

    def check_output(self, output: Output) -> None:
        self._check_width(len(output))

    def _check_width(self, width: int) -> None:
        wanted = [self.options.index, *(self.options.aspects or {}).values()]
        if max(wanted) >= width:
            raise ValueError(
                f"scorer {self.name!r}: the model has {width} logit(s); index/aspects ask "
                f"for index {max(wanted)}"
            )

    def after_load(self, loaded: object) -> None:
        model = self.model.model
        if model is not None and not getattr(model.config, "auto_map", None):
            self._check_width(int(getattr(model.config, "num_labels", 1)))
        if self.input_mode() == "chat":
            self.render([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
        if self.is_vision and self.input_mode() != "chat":
            raise ValueError(
                f"scorer {self.name!r}: a vision-language reward model reads the conversation "
                "through its processor's chat template: input: chat (or auto)"
            )


def _type_ids(enc: object) -> list[int] | None:
    try:
        values = enc["token_type_ids"]  # type: ignore[index]
    except KeyError:
        return None
    return list(values)
