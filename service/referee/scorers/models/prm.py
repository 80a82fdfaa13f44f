"""Process reward models (``kind: prm``), in the Qwen2.5-Math-PRM convention.

The response is split into steps at ``separator``; the assistant turn is the steps, each
followed by ``step_token``; the model's per-token logits at the step tokens give each
step's probability of the positive label (softmax over the labels; sigmoid for a model
with one output). The result carries every step's score in ``steps`` and, as the value,
their ``aggregate`` (min, last, mean or product).

The model is a token classifier (``AutoModelForTokenClassification``), or a hub PRM
loaded through ``auto_class: AutoModel`` with ``trust_remote_code`` whose first output is
the per-token logits (Qwen2.5-Math-PRM-7B).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from referee.scorers.base import ScoreInput, ScoreResult
from referee.scorers.models._backends import Output, PoolingBackendOptions
from referee.scorers.models._hf import LoadedModel, ModelOptions
from referee.scorers.models._model import Encoded, ItemRejected, Seq
from referee.scorers.models._pooled import PooledScorer

__all__ = ["ProcessRewardScorer"]


class PRMOptions(PoolingBackendOptions):
    separator: str = Field(default="\n\n", min_length=1, description="Splits steps.")
    step_token: str = Field(default="<extra_0>", min_length=1)
    """Token inserted after each step; the model's score is read at each one."""
    aggregate: Literal["min", "last", "mean", "product"] = "min"
    """How the step scores become the item's value."""
    positive_label: int = Field(default=1, ge=0)
    """Index of the label whose probability is a step's score."""
    input: Literal["auto", "chat", "pair"] = Field(
        default="auto",
        description="chat: system/user/assistant through the chat template (Qwen PRM); "
        "pair: (prompt, marked steps) as a sentence pair; auto: chat when there is a template.",
    )
    auto_class: Literal["AutoModelForTokenClassification", "AutoModel"] = (
        "AutoModelForTokenClassification"
    )
    """transformers class to load with; AutoModel for remote-code PRMs (Qwen2.5-Math-PRM)."""


class ProcessRewardScorer(PooledScorer):
    kind = "prm"
    Options: ClassVar[type[ModelOptions]] = PRMOptions
    options: PRMOptions
    pooling_task = "token_classify"

    def check_backend(self) -> None:
        o = self.options
        if o.auto_class != "AutoModelForTokenClassification":
            raise ValueError(
                f"auto_class {o.auto_class}: remote-code PRMs run on backend transformers only"
            )
        if o.backend == "remote" and o.remote is not None and o.remote.api == "tei":
            raise ValueError(
                "backend remote with api tei: TEI serves no token classification; "
                "use api: vllm (`vllm serve MODEL --runner pooling`)"
            )

    def __init__(self, name: str, options: PoolingBackendOptions) -> None:
        super().__init__(name, options)
        self.step_id = -1

    def model_class(self) -> str:
        return self.options.auto_class

    def after_load(self, loaded: LoadedModel) -> None:
        tok = loaded.tokenizer
        marker = self.options.step_token
        if len(tok(marker, add_special_tokens=False)["input_ids"]) != 1:
            if tok.convert_tokens_to_ids(marker) in (None, tok.unk_token_id):
                raise ValueError(
                    f"scorer {self.name!r}: step_token {marker!r} is not a token of this "
                    "model's vocabulary; use one that is (Qwen PRM: <extra_0>)"
                )
            # In the vocabulary but split by the pre-tokenizer: mark it as one token.
            tok.add_special_tokens({"additional_special_tokens": [marker]})
        self.step_id = int(tok.convert_tokens_to_ids(marker))

    def steps_of(self, response: str) -> list[str]:
        """The response's steps; a step token written in the response itself is removed
        so that text cannot add or move step scores."""
        text = response.replace(self.options.step_token, "")
        return [s.strip() for s in text.split(self.options.separator) if s.strip()]

    def encode(self, item: ScoreInput) -> Encoded:
        steps = self.steps_of(item.response)
        if not steps:
            raise ItemRejected("the response has no steps to score (it is empty)", "empty_response")
        marker = self.options.step_token
        marked = marker.join(steps) + marker
        chat = self.options.input == "chat" or (
            self.options.input == "auto" and self.has_chat_template()
        )
        if chat:
            seq = Seq(self.tokens(self.render(self.conversation(item, response=marked))))
        else:
            enc = self.model.tokenizer(item.prompt, marked)
            types = enc.get("token_type_ids")
            seq = Seq(list(enc["input_ids"]), list(types) if types is not None else None)
        seq, note = self.fit(seq)
        found = seq.ids.count(self.step_id)
        if found == 0:
            raise ItemRejected("no step is left after truncation to max_length", "input_too_long")
        if note is not None and found < len(steps):
            note = f"{note}; {found} of {len(steps)} steps scored"
        return Encoded([seq], truncated=note)

    def forward(self, encoded: list[Encoded]) -> list[ScoreResult]:
        import torch

        seqs = [e.seqs[0] for e in encoded]
        output = self.model.model(**self.collate(seqs))
        logits = output.logits if hasattr(output, "logits") else output[0]
        logits = logits.float()
        if logits.shape[-1] == 1:
            probs = torch.sigmoid(logits[..., 0])
        else:
            probs = torch.softmax(logits, dim=-1)[..., self.options.positive_label]
        results = []
        for row, (seq, start) in enumerate(zip(seqs, self.offsets(seqs), strict=True)):
            ids = torch.tensor(seq.ids)
            cols = (ids == self.step_id).nonzero().flatten() + start
            steps = [float(p) for p in probs[row, cols]]
            results.append(ScoreResult(_aggregate(steps, self.options.aggregate), steps=steps))
        return results

    def check_output(self, output: Output) -> None:
        width = len(output[0]) if output and isinstance(output[0], list) else 0
        if width <= self.options.positive_label and width != 1:
            raise ValueError(
                f"scorer {self.name!r}: the model has {width} label(s) per token; "
                f"positive_label is {self.options.positive_label}"
            )

    def from_outputs(self, encoded: Encoded, outputs: list[Output]) -> ScoreResult:
        rows: list[list[float]] = outputs[0]  # type: ignore[assignment]
        seq = encoded.seqs[0]
        if len(rows) != len(seq.ids):
            raise ValueError(f"{len(rows)} rows of logits for {len(seq.ids)} tokens")
        steps = [
            _probability(rows[i], self.options.positive_label)
            for i, token in enumerate(seq.ids)
            if token == self.step_id
        ]
        return ScoreResult(_aggregate(steps, self.options.aggregate), steps=steps)


def _probability(logits: list[float], label: int) -> float:
    """The label's probability: softmax over the labels, sigmoid for a single output (as
    the transformers backend computes it, in float64 here)."""
    if len(logits) == 1:
        return 1.0 / (1.0 + math.exp(-logits[0]))
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    return exps[label] / sum(exps)


def _aggregate(steps: list[float], how: str) -> float:
    if how == "min":
        return min(steps)
    if how == "last":
        return steps[-1]
    if how == "mean":
        return sum(steps) / len(steps)
    return math.prod(steps)
