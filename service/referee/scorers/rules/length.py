"""``length``: length penalties, counted in characters, words or tokens.

Modes (``n`` is the response length in ``unit``s, ``f`` is ``penalty_factor``):
- ``overlong`` — DAPO's soft overlong punishment with ``max_length`` (L_max) and
  ``buffer_length`` (L_cache): ``0`` if ``n <= L_max - L_cache``;
  ``f * ((L_max - L_cache) - n) / L_cache`` inside the buffer; ``-f`` past ``L_max``.
- ``target`` — ``-f * |n - target| / target``, counting only excess (``direction: over``)
  or shortfall (``under``) if asked, and clipped at ``-f`` unless ``clip: false``.

``unit: tokens`` needs ``tokenizer``: a ``tokenizer.json`` file, a folder holding one, or
a hub name found in the local Hugging Face cache (nothing is downloaded); it must be
found when the options are validated, and is loaded in ``setup()``. Counts leave out
special tokens and ignore the file's padding and truncation settings. The file's sha256
enters the fingerprint, so a different tokenizer never reuses cached rewards.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, FiniteFloat, model_validator

from referee.scorers.base import ScoreInput, ScoreResult, ScorerOptions, SyncScorer

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["LengthScorer", "resolve_tokenizer_file"]


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(Path.home(), ".cache", "huggingface")
    return Path(home) / "hub"


def resolve_tokenizer_file(spec: str) -> Path:
    """A ``tokenizer.json`` path from a file path, a folder, or a hub name in the local cache."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return path / "tokenizer.json"
        raise FileNotFoundError(f"no tokenizer.json in folder {str(path.resolve())!r}")
    repo = _hub_cache() / f"models--{spec.replace('/', '--')}"
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip() / "tokenizer.json").is_file():
        return snapshots / ref.read_text().strip() / "tokenizer.json"
    candidates = sorted(
        snapshots.glob("*/tokenizer.json"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    if candidates:
        return candidates[0]
    raise FileNotFoundError(
        f"tokenizer {spec!r} is neither a tokenizer.json file, a folder holding one "
        f"(tried {str(path.resolve())!r}), nor a model with a tokenizer.json in the local "
        f"Hugging Face cache (tried {str(snapshots / '*' / 'tokenizer.json')!r})"
    )


class LengthScorer(SyncScorer):
    kind = "length"
    libraries = ("tokenizers",)
    reads = ("response",)

    class Options(ScorerOptions):
        mode: Literal["overlong", "target"]
        """overlong: DAPO's soft overlong penalty (0, then linear to -penalty_factor over the
        buffer, -penalty_factor past max_length); target: -penalty_factor * |n - target| /
        target."""
        unit: Literal["chars", "words", "tokens"] = "chars"
        """What the length counts; tokens needs `tokenizer`."""
        tokenizer: str | None = Field(default=None, min_length=1)
        """unit tokens: a tokenizer.json file, a folder holding one, or a hub name in the local
        Hugging Face cache (nothing is downloaded)."""
        max_length: int | None = Field(default=None, gt=0)
        """overlong: the length where the full penalty starts (L_max)."""
        buffer_length: int | None = Field(default=None, gt=0)
        """overlong: the length of the linear ramp before max_length (L_cache)."""
        target: int | None = Field(default=None, gt=0)
        """target: the wanted length."""
        direction: Literal["both", "over", "under"] = "both"
        """target: penalise excess (over), shortfall (under) or both."""
        clip: bool = True
        """target: clip the penalty at -penalty_factor."""
        penalty_factor: FiniteFloat = Field(default=1.0, ge=0)
        """The size of the full penalty."""

        @model_validator(mode="after")
        def _options_fit_mode(self) -> LengthScorer.Options:
            if (self.unit == "tokens") != (self.tokenizer is not None):
                raise ValueError("`tokenizer` is required with `unit: tokens`, and only then")
            if self.mode == "overlong":
                if self.max_length is None or self.buffer_length is None:
                    raise ValueError("mode `overlong` needs `max_length` and `buffer_length`")
                if self.buffer_length >= self.max_length:
                    raise ValueError(
                        f"`buffer_length` ({self.buffer_length}) must be less than "
                        f"`max_length` ({self.max_length})"
                    )
                misplaced = {"target", "direction", "clip"} & self.model_fields_set
                if misplaced:
                    raise ValueError(f"{sorted(misplaced)} only apply to mode `target`")
            else:
                if self.target is None:
                    raise ValueError("mode `target` needs `target` (a positive length)")
                if self.max_length is not None or self.buffer_length is not None:
                    raise ValueError("`max_length` and `buffer_length` are only for `overlong`")
            if self.tokenizer is not None:
                try:  # found now, so a missing tokenizer fails validation, not start-up
                    resolve_tokenizer_file(self.tokenizer)
                except OSError as exc:
                    raise ValueError(str(exc)) from None
            return self

    def __init__(self, name: str, options: ScorerOptions) -> None:
        if not isinstance(options, LengthScorer.Options):
            raise TypeError(f"{type(self).__name__} needs {type(self).__name__}.Options")
        super().__init__(name, options)
        self.opts = options
        self._tokenizer: Tokenizer | None = None
        self._tokenizer_sha256: str | None = None

    async def setup(self) -> None:
        if self.opts.tokenizer is None:
            return
        from tokenizers import Tokenizer

        path = resolve_tokenizer_file(self.opts.tokenizer)
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self._tokenizer_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()

    def health(self) -> dict[str, object]:
        return {"ready": self.opts.tokenizer is None or self._tokenizer is not None}

    def fingerprint_extra(self) -> dict[str, object]:
        if self.opts.tokenizer is None:
            return {}
        if self._tokenizer_sha256 is None:
            path = resolve_tokenizer_file(self.opts.tokenizer)
            self._tokenizer_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        return {"tokenizer_sha256": self._tokenizer_sha256}

    def measure(self, text: str) -> int:
        """The length of ``text`` in the configured unit."""
        if self.opts.unit == "chars":
            return len(text)
        if self.opts.unit == "words":
            return len(text.split())
        if self._tokenizer is None:
            raise RuntimeError(f"scorer {self.name!r}: tokenizer not loaded (setup() not run)")
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def penalty(self, n: int) -> float:
        """The reward for a response of length ``n``."""
        opts, factor = self.opts, self.opts.penalty_factor
        if opts.mode == "overlong":
            assert opts.max_length is not None and opts.buffer_length is not None
            expected = opts.max_length - opts.buffer_length
            if n <= expected:
                return 0.0
            if n <= opts.max_length:
                return factor * (expected - n) / opts.buffer_length
            return -factor
        assert opts.target is not None
        excess = n - opts.target
        if (opts.direction == "over" and excess < 0) or (opts.direction == "under" and excess > 0):
            return 0.0
        value = -factor * abs(excess) / opts.target
        return max(value, -factor) if opts.clip else value

    def score_one(self, item: ScoreInput) -> ScoreResult:
        n = self.measure(item.response)
        # `+ 0.0` turns a -0.0 (no penalty, negative factor sign) into 0.0.
        return ScoreResult(value=self.penalty(n) + 0.0, aspects={"length": float(n)})
