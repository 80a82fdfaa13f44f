"""Similarity rewards (``kind: similarity``): how close a response is to the item's
``reference`` or, with ``against: group``, to the other responses of its group in the
same request (group consistency: the mean similarity to its peers).

``metric: cosine`` compares sentence embeddings (mean-pooled over the attention mask,
L2-normalised: the sentence-transformers recipe) from ``model``; ``bleu`` and ``chrf``
are sacreBLEU's sentence scores and ``rouge_l`` the ROUGE-L F-measure, all scaled to
[0, 1]. Lexical metrics load no model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from referee.scorers.base import Prepared, ScoreInput, ScoreResult
from referee.scorers.models._backends import Output, PoolingBackendOptions
from referee.scorers.models._hf import LoadedModel, ModelOptions, ModelSource
from referee.scorers.models._lexical import lexical_similarity
from referee.scorers.models._model import Encoded, ItemRejected, Seq
from referee.scorers.models._pooled import PooledScorer

__all__ = ["SimilarityScorer"]


class SimilarityOptions(PoolingBackendOptions):
    model: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        min_length=1,
        description="Embedding model (metric: cosine); see the model scorers' `model`.",
    )
    metric: Literal["cosine", "bleu", "rouge_l", "chrf"] = "cosine"
    """cosine of sentence embeddings (a model), or lexical BLEU, ROUGE-L or chrF (sacreBLEU; no
    model)."""
    against: Literal["reference", "group"] = "reference"
    """Compare with `reference`, or with the other responses of the item's group in the request
    (their mean)."""
    max_chars: int = Field(
        default=100_000, gt=0, description="Lexical metrics: longest text compared."
    )


class SimilarityScorer(PooledScorer):
    kind = "similarity"
    Options: ClassVar[type[ModelOptions]] = SimilarityOptions
    options: SimilarityOptions
    pooling_task = "embed"

    def check_backend(self) -> None:
        if self.lexical:
            raise ValueError(
                f"backend {self.options.backend}: lexical metrics load no model; "
                "a backend applies to metric cosine only"
            )

    @property
    def lexical(self) -> bool:
        return self.options.metric != "cosine"

    def cache_fields(self) -> tuple[str, ...]:
        return (
            ("response", "peers") if self.options.against == "group" else ("response", "reference")
        )

    def fingerprint_extra(self) -> dict[str, object]:
        return {"lexical": True} if self.lexical else super().fingerprint_extra()

    @property
    def libraries(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("sacrebleu",) if self.lexical else super().libraries

    async def setup(self) -> None:
        if not self.lexical:
            await super().setup()

    def health(self) -> dict[str, object]:
        return {"ready": True, "metric": self.options.metric} if self.lexical else super().health()

    def after_load(self, loaded: LoadedModel) -> None:
        """A sentence-transformers directory says how long its inputs are."""
        source = ModelSource.parse(self.options.model)
        config = source.local / "sentence_bert_config.json" if source.local else None
        if self.options.max_length is None and config is not None and config.is_file():
            limit = json.loads(Path(config).read_text()).get("max_seq_length")
            if isinstance(limit, int) and limit > 1:
                loaded.max_length = min(loaded.max_length, limit)

    def others(self, item: ScoreInput) -> list[str]:
        if self.options.against == "reference":
            if item.reference is None:
                raise ItemRejected("this scorer compares with `reference`; the item has none")
            return [item.reference]
        if not item.peers:
            raise ItemRejected(
                "group consistency needs the other responses of the item's `group` in the "
                "same request; this item has no group or is alone in it"
            )
        return list(item.peers)

    # -- lexical -------------------------------------------------------------------------
    async def prepare(self, items: Sequence[ScoreInput]) -> list[Prepared]:
        if not self.lexical:
            return await super().prepare(items)
        return [Prepared(max(1, len(item.response) // 4)) for item in items]

    async def score_prepared(
        self, items: Sequence[ScoreInput], prepared: Sequence[Prepared]
    ) -> list[ScoreResult]:
        if not self.lexical:
            return await super().score_prepared(items, prepared)
        return await asyncio.to_thread(lambda: [self._lexical(item) for item in items])

    def _lexical(self, item: ScoreInput) -> ScoreResult:
        try:
            others = self.others(item)
        except ItemRejected as exc:
            return ScoreResult.failed(str(exc), exc.error_type)
        limit = self.options.max_chars
        texts = [item.response, *others]
        if any(len(t) > limit for t in texts):
            if self.options.truncation == "reject":
                return ScoreResult.failed(
                    f"a text is over max_chars ({limit}): shorten it or configure truncation",
                    "input_too_long",
                )
            cut = [t[-limit:] if self.options.truncation == "left" else t[:limit] for t in texts]
            value = lexical_similarity(self.options.metric, cut[0], cut[1:])
            return ScoreResult(value, truncated=True, reason=f"truncated to {limit} characters")
        return ScoreResult(lexical_similarity(self.options.metric, item.response, others))

    # -- embeddings ----------------------------------------------------------------------
    def encode(self, item: ScoreInput) -> Encoded:
        notes = []
        seqs = []
        for what, text in [("response", item.response)] + [
            ("reference" if self.options.against == "reference" else "a peer response", t)
            for t in self.others(item)
        ]:
            seq, note = self.fit(Seq(self.tokens(text), text=[text]), what)
            seqs.append(seq)
            if note:
                notes.append(f"{what}: {note}")
        return Encoded(seqs, truncated="; ".join(dict.fromkeys(notes)) or None)

    def forward(self, encoded: list[Encoded]) -> list[ScoreResult]:
        import torch

        unique: dict[tuple[int, ...], int] = {}
        for enc in encoded:
            for seq in enc.seqs:
                unique.setdefault(tuple(seq.ids), len(unique))
        seqs = [Seq(list(ids)) for ids in unique]
        inputs = self.collate(seqs)
        hidden = self.model.model(**inputs).last_hidden_state.float()
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
        results = []
        for enc in encoded:
            rows = [unique[tuple(seq.ids)] for seq in enc.seqs]
            sims = vectors[rows[1:]] @ vectors[rows[0]]
            results.append(ScoreResult(float(sims.mean())))
        return results

    def from_outputs(self, encoded: Encoded, outputs: list[Output]) -> ScoreResult:
        vectors: list[list[float]] = outputs  # type: ignore[assignment]
        first = vectors[0]
        sims = [sum(a * b for a, b in zip(first, v, strict=True)) for v in vectors[1:]]
        return ScoreResult(float(sum(sims) / len(sims)))
