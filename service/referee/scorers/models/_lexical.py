"""Lexical similarity in [0, 1]: sacreBLEU's sentence BLEU (exponential smoothing) and
chrF, and ROUGE-L's F-measure over lower-cased alphanumeric tokens (the rouge-score
package's default tokenisation, without stemming)."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["lexical_similarity", "rouge_l"]

_TOKEN = re.compile(r"[a-z0-9]+")


def lexical_similarity(metric: str, response: str, others: Sequence[str]) -> float:
    """Mean similarity of ``response`` to each of ``others``."""
    if metric == "rouge_l":
        scores = [rouge_l(other, response) for other in others]
    else:
        import sacrebleu

        if metric == "bleu":
            scores = [sacrebleu.sentence_bleu(response, [o]).score / 100 for o in others]
        elif metric == "chrf":
            scores = [sacrebleu.sentence_chrf(response, [o]).score / 100 for o in others]
        else:
            raise ValueError(f"unknown lexical metric {metric!r}")
    return sum(scores) / len(scores)


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1 from the longest common subsequence of tokens."""
    ref = _TOKEN.findall(reference.lower())
    cand = _TOKEN.findall(candidate.lower())
    if not ref or not cand:
        return 0.0
    lcs = _lcs_length(ref, cand)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]
