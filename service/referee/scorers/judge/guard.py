"""The judge guard: catches responses that carry no answer but are known to fool LLM
judges (empty, lone punctuation, bare reasoning openers, echoes of the judge's own
verdict format, the question repeated back, text addressed to the judge, role and
end-of-turn tokens) before the judge is called. The rules live in one data file,
``guard_rules.yaml``; a scorer may add a file of its own and turn shipped rules off.
"""

from __future__ import annotations

import importlib.resources
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import regex
import yaml

__all__ = ["GuardRule", "JudgeGuard", "load_rules"]

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"), " ")
_MATCHES = ("empty", "full", "search", "echo")


@dataclass(frozen=True)
class GuardRule:
    name: str
    match: str
    patterns: tuple[regex.Pattern[str], ...] = ()
    min_share: float = 0.9

    def hits(self, response: str, prompt: str) -> bool:
        text = response.translate(_ZERO_WIDTH).strip()
        if self.match == "empty":
            return not text
        if self.match == "full":
            return any(p.fullmatch(text, timeout=1.0) for p in self.patterns)
        if self.match == "search":
            return any(p.search(response, timeout=1.0) for p in self.patterns)
        said, asked = _words(text), _words(prompt)
        if not said or not asked:
            return False
        return said in asked and len(said) >= self.min_share * len(asked)


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
        rules.append(
            GuardRule(str(raw["name"]), raw["match"], patterns, float(raw.get("min_share", 0.9)))
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

    def check(self, response: str, prompt: str = "") -> str | None:
        """The name of the first rule the response trips, or None."""
        for rule in self.rules:
            if rule.hits(response, prompt):
                return rule.name
        return None
