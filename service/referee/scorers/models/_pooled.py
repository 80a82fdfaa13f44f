"""The model scorers that can run elsewhere than in transformers (classifier, prm,
similarity): with ``backend: vllm`` or ``backend: remote`` the scorer loads only the
tokenizer, encodes items exactly as the transformers backend does, and asks a
:class:`~referee.scorers.models._backends.PoolingRunner` for the numbers of each
sequence; :meth:`PooledScorer.from_outputs` turns them into the same result the
transformers backend's ``forward`` gives.

The engine or server batches continuously: several batches are in flight at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from referee.scorers.base import ScoreResult, ScorerOptions
from referee.scorers.models._backends import (
    Output,
    PoolingBackendOptions,
    PoolingError,
    PoolingRunner,
    Task,
    make_runner,
)
from referee.scorers.models._hf import load_tokenizer_only
from referee.scorers.models._model import Encoded, ModelScorer, Seq

__all__ = ["PooledScorer"]

log = logging.getLogger(__name__)


class PooledScorer(ModelScorer):
    """A model scorer with a choice of backend (see _backends)."""

    options: PoolingBackendOptions
    pooling_task: ClassVar[Task] = "classify"

    @classmethod
    def batching_defaults(cls, options: ScorerOptions) -> dict[str, object]:
        """An engine or a server batches continuously itself: several batches in flight
        keep it fed, and a batch need not wait for the previous one's answer."""
        if getattr(options, "backend", "transformers") == "transformers":
            return cls.default_batching
        return {**cls.default_batching, "max_concurrent_batches": 4}

    def __init__(self, name: str, options: PoolingBackendOptions) -> None:
        super().__init__(name, options)
        self.runner: PoolingRunner | None = None
        if options.backend != "transformers":
            self.check_backend()
            self.runner = make_runner(name, options, self.pooling_task)

    @property
    def libraries(self) -> tuple[str, ...]:  # type: ignore[override]
        if self.runner is None:
            return ModelScorer.libraries
        return ("transformers", "tokenizers", *self.runner.libraries)

    def check_backend(self) -> None:
        """Options this kind cannot honour on a backend other than transformers: raise
        ValueError saying which (checked when the config is built)."""

    def check_output(self, output: Output) -> None:
        """Start-up check of the numbers a probe sequence gave (the logits' width)."""

    # -- lifecycle -------------------------------------------------------------------
    async def setup(self) -> None:
        if self.runner is None:
            await super().setup()
            return
        served_limit = await self.runner.setup()
        try:
            self.loaded = await asyncio.to_thread(load_tokenizer_only, self.options, served_limit)
            self.after_load(self.loaded)
            probe = self.probe()
            out = (await self.runner.run([probe.ids], [probe.type_ids], [probe.text]))[0]
            if isinstance(out, PoolingError):
                raise RuntimeError(f"scorer {self.name!r}: the {self.options.backend} backend "
                                   f"failed on a probe input: {out}")  # fmt: skip
            self.check_output(out)
        except BaseException:
            await self.runner.close()
            raise
        log.info(
            "scorer %s: %s backend for %s, max_length %d", self.name, self.options.backend,
            self.options.model, self.loaded.max_length,
        )  # fmt: skip

    def probe(self) -> Seq:
        """A short input for the start-up check."""
        return Seq(self.tokens("Hello."), text=["Hello."])

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.close()
        await super().close()

    def health(self) -> dict[str, object]:
        if self.runner is None:
            return super().health()
        ready = self.loaded is not None
        out = {"ready": ready, "model": self.options.model, "backend": self.options.backend,
               **self.runner.health()}  # fmt: skip
        out["ready"] = ready and bool(out["ready"])
        if self.loaded is not None:
            out["max_length"] = self.loaded.max_length
        return out

    def memory_bytes(self) -> int | None:
        return None if self.runner is not None else super().memory_bytes()

    def memory_estimate(self) -> int | None:
        if self.options.backend == "remote":
            return None  # the weights live in the server
        return super().memory_estimate()

    # -- fingerprint -----------------------------------------------------------------
    def fingerprint_options(self) -> dict[str, object]:
        """The backend's settings enter only where they change numbers; a transformers
        scorer's fingerprint is what it was before backends existed."""
        options = super().fingerprint_options()
        for key in ("backend", "vllm", "remote"):
            options.pop(key, None)
        backend = self.options.backend_fingerprint()
        if backend is not None:
            options["backend"] = backend
            for key in ("device", "attn_implementation", "padding_side"):
                options.pop(key, None)
        return options

    def fingerprint_extra(self) -> dict[str, object]:
        extra = super().fingerprint_extra()
        if self.runner is not None:
            extra.update(self.runner.identity())
        return extra

    # -- scoring ---------------------------------------------------------------------
    async def score_encoded(self, encoded: list[Encoded]) -> list[ScoreResult]:
        if self.runner is None:
            return await super().score_encoded(encoded)
        # Each distinct sequence once (a similarity reference shared by a group).
        index: dict[tuple[Any, ...], int] = {}
        unique: list[Seq] = []
        rows = []
        for enc in encoded:
            mine = []
            for seq in enc.seqs:
                key = (tuple(seq.ids), tuple(seq.type_ids or ()), tuple(seq.text or ()))
                if key not in index:
                    index[key] = len(unique)
                    unique.append(seq)
                mine.append(index[key])
            rows.append(mine)
        outputs = await self.runner.run(
            [s.ids for s in unique], [s.type_ids for s in unique], [s.text for s in unique]
        )
        results = []
        for enc, mine in zip(encoded, rows, strict=True):
            got = [outputs[i] for i in mine]
            failed = next((o for o in got if isinstance(o, PoolingError)), None)
            if failed is not None:
                results.append(ScoreResult.failed(str(failed), failed.error_type))
                continue
            try:
                results.append(self.from_outputs(enc, got))  # type: ignore[arg-type]
            except (IndexError, ValueError, TypeError) as exc:
                message = f"the {self.options.backend} backend gave unusable numbers: {exc}"
                results.append(ScoreResult.failed(message, "model_error"))
        return results

    def from_outputs(self, encoded: Encoded, outputs: list[Output]) -> ScoreResult:
        """One item's result from its sequences' numbers."""
        raise NotImplementedError
