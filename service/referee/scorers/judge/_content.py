"""Is there anything answer-like in a response? Decided by construction, not by listing
whole strings: everything known to carry no answer is taken away — role tokens, markup and
LaTeX wrappers, verdict echoes (``Score: 10``, ``{"verdict": "yes"}``, ``<score>9</score>``,
``[[A]]``, ``10/10``), punctuation and symbols, and words from closed classes (openers and
process talk, answer labels, verdict words, bare affirmations, function words) in the
languages of the vocabulary — and whatever remains is the answer. A response is content
free when nothing remains.

What the prompt asks for is never stripped: a word the prompt uses (``grade`` in "What grade
did she get?", ``true`` in "True or false: ...") stays, and affirmations (``yes``, ``no``,
``correct``, ``はい``) stay when the prompt is a yes/no question.

The vocabulary is data (``guard_rules.yaml``); this module holds the procedure. All regexes
here are linear (no nested quantifiers), so no time limit is needed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import regex

__all__ = ["PROCEDURE_VERSION", "ContentCheck", "Vocabulary"]

# Bumped when the procedure below changes what it strips (the judge's cache keys change).
PROCEDURE_VERSION = "1"

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"), " ")
_ROLE_TOKEN = regex.compile(r"<\|[^|>]{1,40}\|>|</?s>|\[/?inst\]|<</?sys>>|<(?:start|end)_of_turn>")
_LATEX_COMMAND = regex.compile(r"\\(?:boxed|fbox|text|textbf|mathrm|mathbf|displaystyle|left|right"
                               r"|quad|qquad|[,;:! ()\[\]])")  # fmt: skip
_TAG = regex.compile(r"</?[\p{L}_][\w:.-]{0,40}(?:\s[^<>]{0,200})?/?>")
_FRACTION = regex.compile(r"(?<![\p{N}.])(\p{N}{1,3})\s*/\s*(5|10|20|100)(?![\p{N}.])")
_OUT_OF = regex.compile(r"\p{N}{1,3}\s+(?:out\s+of|of|von|sur|из|de|su)\s+\p{N}{1,3}")
_BRACKETED = regex.compile(r"\[\[[^\[\]]{0,12}\]\]")
_STARS = regex.compile(r"[★☆⭐]+")
_TOKEN = regex.compile(r"[\p{L}\p{M}\p{N}]+")
_CJK = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]")
_OPTION_LETTER = regex.compile(r"[\p{Latin}\p{Greek}\p{Cyrillic}]")
_KANA_ONLY = regex.compile(r"[\p{Hiragana}ー]+")


@dataclass(frozen=True)
class Vocabulary:
    """Closed word classes, casefolded. Words of space-separated languages are matched as
    whole tokens; entries in CJK scripts are cut out as substrings."""

    openers: frozenset[str]
    labels: frozenset[str]
    verdict_keys: frozenset[str]
    affirmations: frozenset[str]
    fillers: frozenset[str]
    polar_starts: frozenset[str]  # first words of a yes/no question
    wh_starts: tuple[str, ...]  # ...unless the prompt starts with one of these ("was ist")
    polar_marks: tuple[str, ...]  # text that makes a prompt a yes/no question
    question_words: tuple[str, ...]  # wh-words (CJK): "...か?" is polar without one

    @classmethod
    def from_mapping(cls, data: Mapping[str, Iterable[str]]) -> Vocabulary:
        def words(key: str) -> frozenset[str]:
            return frozenset(_fold(str(w)) for w in data.get(key, ()))

        return cls(
            openers=words("openers"), labels=words("labels"),
            verdict_keys=words("verdict_keys"), affirmations=words("affirmations"),
            fillers=words("fillers"), polar_starts=words("polar_starts"),
            wh_starts=tuple(sorted(words("wh_starts"))),
            polar_marks=tuple(sorted(words("polar_marks"))),
            question_words=tuple(sorted(words("question_words"))),
        )  # fmt: skip

    def describe(self) -> dict[str, list[str]]:
        """Every class, sorted: what enters the judge scorer's fingerprint."""
        return {name: sorted(getattr(self, name)) for name in self.__dataclass_fields__}

    def stripped(self, licensed: frozenset[str]) -> frozenset[str]:
        return (self.openers | self.labels | self.verdict_keys | self.affirmations
                | self.fillers) - licensed  # fmt: skip


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).casefold()


class ContentCheck:
    def __init__(self, vocabulary: Vocabulary) -> None:
        self.v = vocabulary
        self._all = vocabulary.stripped(frozenset())
        self._cjk = sorted((w for w in self._all if _CJK.search(w)), key=len, reverse=True)
        self._answerable = vocabulary.affirmations | vocabulary.verdict_keys
        self._answerable_cjk = [w for w in self._answerable if _CJK.search(w)]
        keys = "|".join(regex.escape(k) for k in sorted(vocabulary.verdict_keys, key=len)[::-1])
        # `key: value`, `"key": "value"`, `key = value`, `key - value`: the key and up to
        # two short tokens after it (a value, or "response A").
        self._keyed = regex.compile(
            rf"(?<![\p{{L}}\p{{N}}])[\"']?({keys})[\"']?\s*[:=\uff1a\-\u2013\u2014]\s*"
            r"[\"']?(?:\p{N}+(?:[.,/]\p{N}+)*[点分]?|[^\s,;\"'}]{1,16})"
            r"(?:\s+[^\s,;\"'}]{1,12})?"
        )
        self._keyed_element = regex.compile(
            rf"<({keys})(?:\s[^<>]{{0,100}})?>[^<>]{{0,40}}</\1\s*>"
        )

    def licensed(self, prompt: str) -> frozenset[str]:
        """Words that are answers to this prompt: those it uses, and (for a yes/no question)
        the affirmations."""
        text = _fold(prompt)
        used = set(_TOKEN.findall(text)) | {w for w in self._answerable_cjk if w in text}
        out = used & self._answerable
        if self._polar(text):
            out |= self.v.affirmations
        return frozenset(out)

    def _polar(self, text: str) -> bool:
        tokens = _TOKEN.findall(text)
        if tokens and tokens[0] in self.v.polar_starts:
            return not " ".join(tokens).startswith(self.v.wh_starts)
        if any(mark in text for mark in self.v.polar_marks):
            return True
        stripped = text.rstrip(" ?\uff1f\u3002.!")
        if stripped.endswith(("か", "吗", "嗎")):
            return not any(q in text for q in self.v.question_words)
        return False

    def residue(self, response: str, prompt: str = "") -> list[str]:
        """What remains of ``response`` once everything content-free is taken away."""
        licensed = self.licensed(prompt)
        text = _fold(response)
        text = _ROLE_TOKEN.sub(" ", text)
        text = self._keyed_element.sub(
            lambda m: m.group(0) if m.group(1) in licensed else " ", text
        )
        text = self._keyed.sub(lambda m: m.group(0) if m.group(1) in licensed else " ", text)
        if "/" not in prompt:  # a rating like 9/10; a prompt about fractions keeps them
            text = _FRACTION.sub(" ", text)
        text = _OUT_OF.sub(" ", text)
        text = _BRACKETED.sub(" ", text)
        text = _STARS.sub(" ", text)
        text = _LATEX_COMMAND.sub(" ", text)
        text = _TAG.sub(" ", text)
        tokens = _TOKEN.findall(text)
        stripped = self._all - licensed if licensed else self._all
        kept: list[str] = []
        for token in tokens:
            if token in licensed:
                kept.append(token)
            elif _CJK.search(token):
                for phrase in self._cjk:
                    if phrase in token and phrase not in licensed:
                        token = token.replace(phrase, " ")
                kept += [t for t in token.split() if not _KANA_ONLY.fullmatch(t)]
            elif token not in stripped:
                kept.append(token)
        if not kept and len(tokens) == 1 and _OPTION_LETTER.fullmatch(tokens[0]):
            return tokens  # a lone letter: an option ("B"), not an article
        return kept

    def content_free(self, response: str, prompt: str = "") -> bool:
        return not self.residue(response, prompt)
