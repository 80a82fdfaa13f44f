"""LLM-as-judge (``kind: judge``): a Jinja prompt over the item, answered by a judge
model on a backend, read as a number by one of three modes; pointwise, or over the
responses of a group (pairwise round-robin in both orders -> win rate; listwise ranking).
The judge guard scores responses known to fool judges with a floor before any call."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import regex

from referee.scorers._cpu_limit import CpuBudgetSpent, VerifierStarved, cpu_limited
from referee.scorers.base import (
    ScoreInput,
    Scorer,
    ScoreResult,
    ScorerOptions,
    canonical_json,
    deadline_passed,
    past_deadline_result,
)
from referee.scorers.judge._content import PROCEDURE_VERSION
from referee.scorers.judge.backends import make_backend
from referee.scorers.judge.guard import JudgeGuard
from referee.scorers.judge.options import JudgeOptions
from referee.scorers.judge.templates import Chat, JudgePrompt
from referee.scorers.judge.verdicts import Outcome, Reader, run_judge
from referee.scorers.models._vision import ImageLike, item_images, without_images

if TYPE_CHECKING:
    from referee.metrics import Metrics

__all__ = ["JudgeScorer"]

# (call key, whether this item is response A) for each judge call an item needs
Plan = list[tuple[str, bool]]


class JudgeScorer(Scorer):
    kind = "judge"
    Options: ClassVar[type[JudgeOptions]] = JudgeOptions
    options: JudgeOptions
    default_batching: ClassVar[dict[str, object]] = {
        "max_batch_size": 16,
        "max_batch_tokens": 16_384,
        "max_concurrent_batches": 1,
    }

    @classmethod
    def batching_defaults(cls, options: ScorerOptions) -> dict[str, object]:
        """A vLLM engine or an OpenAI-compatible server batches continuously: several
        batches in flight keep it fed (vLLM on this 2-core CPU: 5.9 items/s with 4, 5.5
        with 1; benchmarks/RESULTS.md). A local transformers model runs one at a time."""
        assert isinstance(options, JudgeOptions)
        if options.backend == "transformers":
            return cls.default_batching
        return {**cls.default_batching, "max_concurrent_batches": 4}

    def __init__(self, name: str, options: JudgeOptions) -> None:
        super().__init__(name, options)
        self.prompt = JudgePrompt(options)
        g = options.guard
        self.guard = JudgeGuard(g.rules_file, g.disable) if g.enabled else None
        self.backend = make_backend(name, options)
        self._guard_hits: Any = None

    @property
    def libraries(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("jinja2", "regex", *self.backend.libraries)

    def bind_metrics(self, metrics: Metrics) -> None:
        self._guard_hits = metrics.judge_guard_hits

    def cache_fields(self) -> tuple[str, ...]:
        fields = ["prompt", "response", "messages", "prompt_images", "response_images"]
        if self.options.template == "reference" or self.options.custom_template:
            fields.append("reference")
        if self.options.custom_template:
            fields.append("metadata")
        if self.options.group_mode != "none":
            fields.append("peers")
        return tuple(fields)

    def fingerprint_options(self) -> dict[str, object]:
        options = super().fingerprint_options()
        if self.options.backend != "openai":  # the backend identifies local weights
            options.pop("model")
            options.pop("tokenizer")
        if self.options.backend != "vllm":
            options.pop("vllm")
        return options

    def fingerprint_extra(self) -> dict[str, object]:
        rules = (
            canonical_json(
                [
                    (
                        r.name,
                        r.match,
                        [p.pattern for p in r.patterns],
                        r.min_share,
                        r.content.v.describe() if r.content else None,
                        PROCEDURE_VERSION,
                    )
                    for r in self.guard.rules
                ]
            )
            if self.guard
            else ""
        )
        return {
            "judge": self.backend.identity(),
            "guard_rules": hashlib.sha256(rules.encode()).hexdigest()[:16],
        }

    async def setup(self) -> None:
        self.prompt.chat(
            {
                "prompt": "q",
                "response": "r",
                "reference": "x",
                "response_a": "a",
                "response_b": "b",
                "responses": ["a", "b"],
            }
        )
        await self.backend.setup()

    async def close(self) -> None:
        await self.backend.close()

    def health(self) -> dict[str, object]:
        return {**self.backend.health(), "backend": self.options.backend}

    def cost(self, item: ScoreInput) -> int:
        chars = len(item.prompt) + len(item.response) + len(item.reference or "")
        if self.options.group_mode == "pairwise" and item.peers:
            n = min(len(item.peers), self.options.max_pairs)
            chars = 2 * n * (chars + sum(len(p) for p in item.peers) // len(item.peers))
        elif self.options.group_mode == "listwise" and item.peers:
            chars += sum(len(p) for p in item.peers)
        return max(1, chars // 4)

    # -- scoring -------------------------------------------------------------------------
    async def score_batch(self, items: Sequence[ScoreInput]) -> list[ScoreResult]:
        results: list[ScoreResult | None] = [self._guarded(item) for item in items]
        if deadline_passed():
            return [r if r is not None else past_deadline_result() for r in results]
        calls: dict[str, tuple[Chat, Reader]] = {}
        plans: dict[int, Plan] = {}
        for i, item in enumerate(items):
            if results[i] is not None:
                continue
            try:
                plans[i] = self._plan(item, calls)
            except ValueError as exc:
                results[i] = ScoreResult.failed(str(exc), "invalid_input")
        keys = list(calls)
        outcomes = await run_judge(
            self.backend, self.prompt, [calls[k][0] for k in keys], [calls[k][1] for k in keys]
        )
        by_key = dict(zip(keys, outcomes, strict=True))
        for i, plan in plans.items():
            results[i] = self._combine(items[i], [(by_key[k], is_a) for k, is_a in plan])
        return [r if r is not None else ScoreResult.failed("not scored") for r in results]

    def _guarded(self, item: ScoreInput) -> ScoreResult | None:
        if self.guard is None:
            return None
        # An image response is an answer whatever its text: only the rules that catch text
        # aimed at the judge apply to the text beside it.
        rule = self.guard.check(item.response, item.prompt, text_only=not item_images(item)[1])
        if rule is None:
            return None
        if self._guard_hits is not None:
            self._guard_hits.labels(self.name, rule).inc()
        return ScoreResult(
            self.options.guard.floor, reason=f"judge guard: {rule} (floor reward, judge not called)"
        )

    def _add(
        self,
        calls: dict[str, tuple[Chat, Reader]],
        fields: dict[str, Any],
        reader: Reader,
        images: tuple[list[ImageLike], list[ImageLike]] = ([], []),
    ) -> str:
        chat = self.prompt.chat(fields, *images)
        key = canonical_json(without_images(chat) if any(images) else chat)
        calls.setdefault(key, (chat, reader))
        return key

    def _plan(self, item: ScoreInput, calls: dict[str, tuple[Chat, Reader]]) -> Plan:
        base = {"prompt": item.prompt, "reference": item.reference, "metadata": item.metadata or {}}
        mode = self.options.group_mode
        images = item_images(item)
        if mode == "none":
            if self.options.template == "reference" and item.reference is None:
                raise ValueError("the reference template needs the item's `reference`")
            fields = {**base, "response": item.response}
            return [(self._add(calls, fields, self._label, images), True)]
        if images[1]:
            raise ValueError(
                f"{mode} judging compares the responses' text; this response has images: "
                "judge image responses pointwise (group_mode: none)"
            )
        images = (images[0], [])  # the group's question (and its images) is shared
        if not item.peers:
            raise ValueError(
                f"{mode} judging needs other responses of the item's `group` in "
                "the same request; this item has no group or is alone in it"
            )
        if mode == "pairwise":
            plan: Plan = []
            for other in self._opponents(item.peers):
                ab = {**base, "response_a": item.response, "response_b": other}
                ba = {**base, "response_a": other, "response_b": item.response}
                plan.append((self._add(calls, ab, self._label, images), True))
                plan.append((self._add(calls, ba, self._label, images), False))
            return plan
        everyone = sorted([item.response, *item.peers])  # one prompt for the whole group
        if len(everyone) > self.options.max_listwise:
            raise ValueError(
                f"listwise judging takes at most {self.options.max_listwise} "
                f"responses; this group has {len(everyone)}: use pairwise"
            )
        reader = _ranking_reader(self.prompt.verdicts.pattern, len(everyone))
        key = self._add(calls, {**base, "responses": everyone}, reader, images)
        return [(key, everyone.index(item.response) == 0)]

    def _opponents(self, peers: Sequence[str]) -> list[str]:
        """At most max_pairs opponents, chosen by content (the same group, the same pairs)."""
        ordered = sorted(peers, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
        return ordered[: self.options.max_pairs]

    def _label(self, text: str) -> float | None:
        found = self.prompt.verdicts.find(text)
        return None if found is None else self.prompt.verdicts.value_of(found)

    def _combine(self, item: ScoreInput, parts: list[tuple[Outcome, bool]]) -> ScoreResult:
        failed = [o.error for o, _ in parts if o.error is not None]
        if failed:
            error = failed[0]
            return ScoreResult.failed(str(error), error.error_type)
        first = parts[0][0]
        reason = first.text if self.options.return_critique else None
        mode = self.options.group_mode
        if mode == "none":
            assert isinstance(first.value, float)
            return ScoreResult(first.value, aspects=dict(first.aspects), reason=reason)
        if mode == "listwise":
            ranking = first.value
            assert isinstance(ranking, list)
            everyone = sorted([item.response, *(item.peers or ())])
            place = ranking.index(everyone.index(item.response) + 1)
            return ScoreResult(1.0 - place / (len(ranking) - 1), reason=reason)
        wins, consistency = [], []
        for (as_a, _), (as_b, _) in zip(parts[::2], parts[1::2], strict=True):
            assert isinstance(as_a.value, float) and isinstance(as_b.value, float)
            first_order, second_order = as_a.value, 1.0 - as_b.value
            wins.append((first_order + second_order) / 2)
            consistency.append(1.0 - abs(first_order - second_order))
        aspects = {
            "comparisons": float(len(wins)),
            "position_consistency": sum(consistency) / len(consistency),
        }
        return ScoreResult(sum(wins) / len(wins), aspects=aspects, reason=reason)


def _ranking_reader(pattern: regex.Pattern[str], n: int) -> Reader:
    """A ranking of all n responses, each once ("2 > 1 > 3"), or None."""

    def read(text: str) -> list[int] | None:
        try:
            found = cpu_limited(lambda t: list(pattern.finditer(text, timeout=t)), 1.0)
        except (CpuBudgetSpent, VerifierStarved):
            return None  # no verdict read: the item fails (judge_parse_error), no reward
        if not found:
            return None
        ranking = [int(x) for x in regex.findall(r"\d+", found[-1].group(1))]
        return ranking if sorted(ranking) == list(range(1, n + 1)) else None

    return read
