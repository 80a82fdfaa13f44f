"""Turning a judge's answers into numbers, per mode: the probability-weighted verdict
over the label tokens (``logprobs``), a strictly parsed verdict with a bounded, corrective
retry (``parse``), and k sampled verdicts aggregated by mean or majority (``vote``).
A call that yields no verdict is an error for its item, never a guessed value."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field

from referee.scorers.judge.backends import JudgeBackend, JudgeCallError, verdict_distribution
from referee.scorers.judge.options import JudgeOptions
from referee.scorers.judge.templates import Chat, JudgePrompt

__all__ = ["Outcome", "Reader", "run_judge"]

# Reads a verdict off generated text: its value (a score, or a ranking), None when absent.
Reader = Callable[[str], "float | list[int] | None"]


@dataclass(slots=True)
class Outcome:
    value: float | list[int] | None = None
    text: str | None = None
    aspects: dict[str, float] = field(default_factory=dict)
    error: JudgeCallError | None = None


async def run_judge(
    backend: JudgeBackend, prompt: JudgePrompt, chats: list[Chat], readers: list[Reader]
) -> list[Outcome]:
    mode = prompt.options.mode
    if not chats:  # every item was guarded or invalid
        return []
    if mode == "logprobs":
        return await _by_logprobs(backend, prompt, chats)
    if mode == "parse":
        return await _by_parse(backend, prompt.options, chats, readers)
    return await _by_vote(backend, prompt.options, chats, readers)


async def _by_logprobs(
    backend: JudgeBackend, prompt: JudgePrompt, chats: list[Chat]
) -> list[Outcome]:
    labels = prompt.verdicts.labels
    answers = await backend.label_probs(chats, prompt.verdicts.prefix, list(labels))
    out = []
    for answer in answers:
        if isinstance(answer, JudgeCallError):
            out.append(Outcome(error=answer))
            continue
        dist = verdict_distribution(answer)
        if dist is None:
            error = JudgeCallError(
                "no verdict label among the judge's likely next tokens", "judge_no_verdict"
            )
            out.append(Outcome(error=error))
            continue
        value = sum(p * labels[label] for label, p in dist.items())
        # How much of the judge's next-token mass went to verdicts at all.
        out.append(Outcome(value, aspects={"verdict_mass": min(1.0, sum(answer.values()))}))
    return out


def _retry_chat(chat: Chat, text: str, options: JudgeOptions) -> Chat:
    """The conversation so far plus a reminder of the required last line."""
    line = {
        "pointwise": f"Score: N (N from {options.scale[0]} to {options.scale[1]})",
        "reference": "Verdict: Yes  or  Verdict: No",
        "pairwise": "Winner: A  or  Winner: B",
        "listwise": "Ranking: 2 > 1 > 3 (every response once)",
    }[options.template]
    note = f"Your answer did not end with the required line. Reply with that line only: {line}"
    return [*chat, {"role": "assistant", "content": text}, {"role": "user", "content": note}]


async def _by_parse(
    backend: JudgeBackend, options: JudgeOptions, chats: list[Chat], readers: list[Reader]
) -> list[Outcome]:
    sampling = options.sampling
    out = [Outcome() for _ in chats]
    pending = list(range(len(chats)))
    current = list(chats)
    for attempt in range(options.parse_retries + 1):
        answers = await backend.generate([current[i] for i in pending], sampling, 1)
        retry = []
        for i, answer in zip(pending, answers, strict=True):
            if isinstance(answer, JudgeCallError):
                out[i].error = answer
                continue
            text = answer[0]
            value = readers[i](text)
            out[i].text = text if out[i].text is None else f"{out[i].text}\n{text}"
            if value is not None:
                out[i].value, out[i].error = value, None
                out[i].aspects["parse_attempts"] = attempt + 1
                continue
            out[i].error = JudgeCallError(
                f"the judge's answer has no valid verdict after {attempt + 1} attempt(s): "
                f"{text[-160:]!r}",
                "judge_parse_error",
            )
            current[i] = _retry_chat(current[i], text, options)
            retry.append(i)
        pending = retry
        if not pending:
            break
    return out


async def _by_vote(
    backend: JudgeBackend, options: JudgeOptions, chats: list[Chat], readers: list[Reader]
) -> list[Outcome]:
    answers = await backend.generate(chats, options.sampling, options.votes)
    out = []
    for answer, read in zip(answers, readers, strict=True):
        if isinstance(answer, JudgeCallError):
            out.append(Outcome(error=answer))
            continue
        values = [v for v in map(read, answer) if isinstance(v, float)]
        if not values:
            error = JudgeCallError(
                f"none of the {len(answer)} sampled answers has a valid verdict",
                "judge_parse_error",
            )
            out.append(Outcome(error=error, text=answer[0] if answer else None))
            continue
        counts = collections.Counter(values)
        top = max(counts.items(), key=lambda kv: (kv[1], -kv[0]))[0]  # ties: the lower
        value = top if options.vote_aggregate == "majority" else sum(values) / len(values)
        aspects = {"agreement": counts[top] / len(values), "parsed": len(values) / len(answer)}
        text = next(t for t in answer if read(t) == top)
        out.append(Outcome(value, text=text, aspects=aspects))
    return out
