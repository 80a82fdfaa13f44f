"""Rewards read off a causal LM's token probabilities (``kind: likelihood``).

- ``sequence_logprob``: log p(response | prompt) under the model, summed or averaged over
  the response tokens (implicit-reward and endogenous-reward setups).
- ``answer_confidence``: the mean (or min) probability of the tokens of the final answer
  (the last match of ``answer_pattern`` in the response).
- ``followup``: the mean per-token log-probability of each ``positive`` follow-up utterance
  as the next user turn, averaged, minus the same for the ``negative`` ones (aspects
  ``positive`` and ``negative`` carry the two parts).

The prompt is rendered with the chat template (``input: chat``) or used as plain text
(``input: text``); the response's tokens are appended to the prompt's, so the scored span
is exact. Any causal LM loads, GGUF files included (dequantised by transformers).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import regex
from pydantic import Field, model_validator

from referee.scorers._cpu_limit import CpuBudgetSpent, VerifierStarved, cpu_limited
from referee.scorers.base import ScoreInput, ScoreResult
from referee.scorers.models._hf import LoadedModel, ModelOptions
from referee.scorers.models._model import Encoded, ItemRejected, ModelScorer, Seq

__all__ = ["LikelihoodScorer"]

_MARK = "\x00REFEREE_FOLLOWUP\x00"


class LikelihoodOptions(ModelOptions):
    mode: Literal["sequence_logprob", "answer_confidence", "followup"] = "sequence_logprob"
    """sequence_logprob: log p(response | prompt); answer_confidence: probability of the tokens of
    the last answer_pattern match; followup: mean log-probability of `positive` next-user
    utterances minus `negative` ones."""
    input: Literal["auto", "chat", "text"] = "auto"
    """chat: the prompt through the chat template; text: plain text; auto: chat when the tokenizer
    has a template."""
    reduce: Literal["sum", "mean", "min"] = Field(
        default="mean",
        description="sequence_logprob: sum or mean of log-probabilities; answer_confidence: "
        "mean or min token probability.",
    )
    answer_pattern: str = Field(
        default=r"\\boxed\{(.*)\}", description="answer_confidence: the answer (group 1)."
    )
    no_answer_value: float | None = Field(
        default=0.0, description="answer_confidence with no answer found; null: an error."
    )
    positive: list[str] = Field(default_factory=list, description="followup: good replies.")
    negative: list[str] = Field(default_factory=list, description="followup: bad replies.")

    @model_validator(mode="after")
    def _mode_options(self) -> LikelihoodOptions:
        if self.mode == "followup" and not self.positive:
            raise ValueError("followup needs at least one `positive` utterance")
        if self.mode == "answer_confidence" and self.reduce == "sum":
            raise ValueError("answer_confidence reduces with mean or min")
        if self.mode == "sequence_logprob" and self.reduce == "min":
            raise ValueError("sequence_logprob reduces with sum or mean")
        try:
            regex.compile(self.answer_pattern)
        except regex.error as exc:
            raise ValueError(f"answer_pattern: {exc}") from None
        return self


class LikelihoodScorer(ModelScorer):
    kind = "likelihood"
    Options: ClassVar[type[ModelOptions]] = LikelihoodOptions
    options: LikelihoodOptions
    auto_class = "AutoModelForCausalLM"

    def after_load(self, loaded: LoadedModel) -> None:
        if self.options.mode == "followup" and not self.chat:
            raise ValueError(f"scorer {self.name!r}: followup needs a chat template")
        self._pattern = regex.compile(self.options.answer_pattern)

    @property
    def chat(self) -> bool:
        mode = self.options.input
        return mode == "chat" or (mode == "auto" and self.has_chat_template())

    def prefix(self, item: ScoreInput) -> list[int]:
        """Tokens before the response: the prompt (through the template: up to the
        assistant's turn), or the prompt as plain text."""
        if self.chat:
            turns = self.conversation(item)[:-1]
            return self.tokens(self.render(turns, add_generation_prompt=True))
        return self.tokens(item.prompt)

    def encode(self, item: ScoreInput) -> Encoded:
        if self.options.mode == "followup":
            return self._encode_followup(item)
        head = self.prefix(item)
        tok = self.model.tokenizer
        enc = tok(item.response, add_special_tokens=False, return_offsets_mapping=True)
        body: list[int] = list(enc["input_ids"])
        start, end = len(head), len(head) + len(body)
        if self.options.mode == "answer_confidence":
            found = self._answer_tokens(item.response, enc["offset_mapping"])
            if found is None:
                return Encoded([])  # no answer: scored without the model
            start, end = len(head) + found[0], len(head) + found[1]
        start = max(start, 1)  # the first token of all has nothing to be predicted from
        if start >= end:
            raise ItemRejected("the response is empty: no tokens to score", "empty_response")
        seq, note = self.fit(Seq(head + body, span=(start, end)))
        return Encoded([seq], truncated=note)

    def _answer_tokens(
        self, response: str, offsets: list[tuple[int, int]]
    ) -> tuple[int, int] | None:
        pattern = self._pattern
        try:
            matches = cpu_limited(lambda t: list(pattern.finditer(response, timeout=t)), 1.0)
        except (CpuBudgetSpent, VerifierStarved) as exc:
            kind = "verifier_timeout" if isinstance(exc, CpuBudgetSpent) else "overloaded"
            raise ItemRejected(f"answer_pattern {exc}", kind) from None
        if not matches:
            return None
        last = matches[-1]
        group = 1 if last.re.groups else 0
        a, b = last.span(group)
        inside = [i for i, (s, e) in enumerate(offsets) if s < b and e > a]
        return (inside[0], inside[-1] + 1) if inside else None

    def _encode_followup(self, item: ScoreInput) -> Encoded:
        text = self.render([*self.conversation(item), {"role": "user", "content": _MARK}])
        if _MARK not in text:
            raise ItemRejected("the chat template dropped the follow-up turn")
        head = self.tokens(text[: text.index(_MARK)])
        seqs, notes = [], []
        for utterance in [*self.options.positive, *self.options.negative]:
            body = self.tokens(utterance, add_special_tokens=False)
            seq, note = self.fit(Seq(head + body, span=(len(head), len(head) + len(body))))
            seqs.append(seq)
            if note:
                notes.append(note)
        return Encoded(seqs, truncated=notes[0] if notes else None)

    # -- scoring -------------------------------------------------------------------------
    def forward(self, encoded: list[Encoded]) -> list[ScoreResult]:
        seqs = [s for e in encoded for s in e.seqs]
        logprobs = iter(self.span_logprobs(seqs) if seqs else [])
        results = []
        for enc in encoded:
            if not enc.seqs:  # answer_confidence found no answer
                results.append(self._no_answer())
                continue
            parts = [next(logprobs) for _ in enc.seqs]
            results.append(self._reduce(parts))
        return results

    def _no_answer(self) -> ScoreResult:
        message = f"no answer matched answer_pattern {self.options.answer_pattern!r}"
        if self.options.no_answer_value is None:
            return ScoreResult.failed(message, "no_answer")
        return ScoreResult(self.options.no_answer_value, reason=message)

    def _reduce(self, parts: list[list[float]]) -> ScoreResult:
        import math

        mode, how = self.options.mode, self.options.reduce
        if mode == "sequence_logprob":
            total = sum(parts[0])
            return ScoreResult(total if how == "sum" else total / len(parts[0]))
        if mode == "answer_confidence":
            probs = [math.exp(x) for x in parts[0]]
            return ScoreResult(min(probs) if how == "min" else sum(probs) / len(probs))
        means = [sum(p) / len(p) for p in parts]
        n_pos = len(self.options.positive)
        positive = sum(means[:n_pos]) / n_pos
        negative = sum(means[n_pos:]) / len(means[n_pos:]) if means[n_pos:] else 0.0
        return ScoreResult(
            positive - negative, aspects={"positive": positive, "negative": negative}
        )

    def span_logprobs(self, seqs: list[Seq]) -> list[list[float]]:
        """log p(token | everything before it) for the tokens in each sequence's span."""
        import torch

        inputs = self.collate(seqs)
        offsets = self.offsets(seqs)
        # The logit that predicts the token in column c sits in column c - 1.
        wanted = [
            torch.arange(off + s.span[0] - 1, off + s.span[1] - 1)
            for s, off in zip(seqs, offsets, strict=True)
            if s.span is not None
        ]
        rows = self.logits_at(inputs, wanted)
        out = []
        for r, (seq, row) in enumerate(zip(seqs, rows, strict=True)):
            assert seq.span is not None
            targets = inputs["input_ids"][r, offsets[r] + seq.span[0] : offsets[r] + seq.span[1]]
            lp = torch.log_softmax(row.float(), dim=-1).gather(-1, targets.unsqueeze(-1))
            out.append([float(x) for x in lp.flatten()])
        return out
