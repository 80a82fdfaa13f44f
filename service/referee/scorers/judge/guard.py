"""The judge guard: catches responses that carry no answer but are known to fool LLM
judges before the judge is called: empty or punctuation only, text addressed to the judge,
role and end-of-turn tokens, the question repeated back, and (``content_free``) anything
with nothing answer-like left once openers, labels, markup, verdict echoes and affirmations
are taken away (:mod:`._content`: decided by construction, so new combinations and other
languages of the same word classes are caught too). The rules live in one data file,
``guard_rules.yaml``; a scorer may add a file of its own and turn shipped rules off.
"""

from __future__ import annotations

import importlib.resources
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import regex
import yaml

from referee.scorers._cpu_limit import CpuBudgetSpent, VerifierStarved, cpu_limited
from referee.scorers.judge._content import ContentCheck, Vocabulary

__all__ = ["GuardRule", "JudgeGuard", "load_rules"]

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"), " ")
_MATCHES = ("empty", "full", "search", "echo", "content_free")


@dataclass(frozen=True)
class GuardRule:
    name: str
    match: str
    patterns: tuple[regex.Pattern[str], ...] = ()
    min_share: float = 0.9
    content: ContentCheck | None = None

    def hits(self, response: str, prompt: str) -> bool:
        text = response.translate(_ZERO_WIDTH).strip()
        if self.match == "empty":
            return not text
        if self.match == "content_free":
            assert self.content is not None
            return bool(text) and self.content.content_free(text, prompt)
        # Patterns from rule files may backtrack: bounded by this check's own CPU time.
        if self.match == "full":
            return any(_limited(p.fullmatch, text) for p in self.patterns)
        if self.match == "search":
            return any(_limited(p.search, response) for p in self.patterns)
        said, asked = _words(text), _words(prompt)
        if not said or not asked:
            return False
        return said in asked and len(said) >= self.min_share * len(asked)


def _limited(match: object, text: str) -> bool:
    try:
        return cpu_limited(lambda t: match(text, timeout=t), 1.0) is not None  # type: ignore[operator]
    except (CpuBudgetSpent, VerifierStarved):
        return False  # cannot tell: the judge decides


def _words(text: str) -> str:
    """Lower-case text without punctuation, spacing collapsed: what an echo is compared on."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(regex.sub(r"[\p{P}\p{S}]+", " ", text).split())


def load_rules(path: Path | None = None) -> list[GuardRule]:
    """Rules from a YAML file (the shipped one when ``path`` is None)."""
    if path is None:
        text = importlib.resources.files(__package__).joinpath("guard_rules.yaml").read_text()
        where = "guard_rules.yaml"
    else:
        text, where = Path(path).read_text(), str(path)
    data = yaml.safe_load(text) or {}
    rules = []
    for i, raw in enumerate(data.get("rules", [])):
        if not isinstance(raw, dict) or raw.get("match") not in _MATCHES or not raw.get("name"):
            raise ValueError(f"{where}: rules[{i}]: needs a name and match: {'|'.join(_MATCHES)}")
        try:
            patterns = tuple(
                regex.compile(p, regex.IGNORECASE | regex.V1) for p in raw.get("patterns", [])
            )
        except regex.error as exc:
            raise ValueError(f"{where}: rules[{i}] ({raw['name']}): {exc}") from None
        if raw["match"] in ("full", "search") and not patterns:
            raise ValueError(f"{where}: rules[{i}] ({raw['name']}): needs patterns")
        content = None
        if raw["match"] == "content_free":
            vocabulary = raw.get("vocabulary")
            if not isinstance(vocabulary, dict):
                raise ValueError(f"{where}: rules[{i}] ({raw['name']}): needs a vocabulary")
            content = ContentCheck(Vocabulary.from_mapping(vocabulary))
        rules.append(
            GuardRule(
                str(raw["name"]), raw["match"], patterns, float(raw.get("min_share", 0.9)), content
            )
        )
    return rules


class JudgeGuard:
    def __init__(self, rules_file: Path | None = None, disable: list[str] | None = None) -> None:
        shipped = load_rules()
        unknown = set(disable or ()) - {r.name for r in shipped}
        if unknown:
            raise ValueError(f"guard.disable: no shipped rule named {', '.join(sorted(unknown))}")
        self.rules = [r for r in shipped if r.name not in set(disable or ())]
        if rules_file is not None:
            self.rules += load_rules(rules_file)

    def check(self, response: str, prompt: str = "", text_only: bool = True) -> str | None:
        """The name of the first rule the response trips, or None. A response that is more
        than its text (``text_only=False``: it has images) is checked by the ``search``
        rules only (text addressed to the judge, role tokens): its text may well be empty,
        short or answer-free, as the images are the answer."""
        for rule in self.rules:
            if not text_only and rule.match != "search":
                continue
            if rule.hits(response, prompt):
                return rule.name
        return None
