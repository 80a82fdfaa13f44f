"""``backend: remote`` for the pooling model scorers: a pooling server that already runs
the model, with Referee's composition, cache and monitors in front of it.

- ``api: vllm`` (``vllm serve MODEL --runner pooling``): Referee's token ids go to
  ``/classify`` (classifier) or ``/pooling`` (``token_classify`` for a PRM, ``embed`` for
  similarity) with ``use_activation: false`` for logits, so the server scores the very
  tokens the transformers backend would. vLLM's API takes no token type ids: a BERT-style
  sentence pair (``input: pair``) needs ``backend: vllm`` or ``api: tei``.
- ``api: tei`` (text-embeddings-inference): texts go to ``/predict`` (``raw_scores``) or
  ``/embed``, and TEI tokenizes them with its own tokenizer.

At start-up the server must answer and serve the configured model (vLLM ``/v1/models``,
TEI ``/info``), else the scorer does not start and says why. At most ``max_concurrency``
requests are in flight; each has a timeout; 408/409/429/5xx answers and transport errors
are retried with capped, jittered exponential backoff that honours ``Retry-After``. A
request the server refuses (4xx) is split until the refused sequences are found: each of
those gets its own error, the others their numbers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any

import httpx

from referee.scorers.models._backends import (
    Output,
    PoolingBackendOptions,
    PoolingError,
    PoolingRunner,
    Task,
)
from referee.scorers.models._hf import ModelSource

__all__ = ["RemotePoolingRunner"]

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 429}
_TEI_TYPES = {"classify": ("classifier", "reranker"), "embed": ("embedding",)}


class _Refused(Exception):
    """The server refused a request (4xx other than the retried ones)."""


class RemotePoolingRunner(PoolingRunner):
    libraries = ()  # httpx moves bytes; the numbers are the server's (served_model)

    def __init__(self, name: str, options: PoolingBackendOptions, task: Task) -> None:
        super().__init__(name, options, task)
        assert options.remote is not None
        self.remote = options.remote
        self.api = options.remote.api
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(self.remote.max_concurrency)
        self._served = options.remote.served_model
        self._labels: dict[str, int] = {}  # TEI: label -> logit index
        self._batch = self.remote.max_items_per_request
        self._last_error: str | None = None

    def identity(self) -> dict[str, object]:
        return {"served_model": self._served}

    # -- start-up --------------------------------------------------------------------
    async def setup(self) -> int | None:
        r = self.remote
        headers = {}
        if r.api_key_env is not None:
            key = os.environ.get(r.api_key_env)
            if not key:
                raise ValueError(f"remote.api_key_env: ${r.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(
            base_url=r.url, headers=headers,
            timeout=httpx.Timeout(r.timeout_s, connect=r.connect_timeout_s),
            limits=httpx.Limits(max_connections=r.max_concurrency),
        )  # fmt: skip
        try:
            if self.api == "vllm":
                return await self._check_vllm()
            return await self._check_tei()
        except BaseException:
            await self.close()
            raise

    async def _get(self, path: str) -> Any:
        assert self._client is not None
        try:
            response = await self._client.get(path, timeout=self.remote.connect_timeout_s * 2)
        except httpx.HTTPError as exc:
            raise RuntimeError(
                f"scorer {self.name!r}: cannot reach the {self.api} server at "
                f"{self.remote.url} ({type(exc).__name__}: {exc or 'no answer'}): is it "
                "running, and is remote.url right?"
            ) from None
        if response.status_code != 200:
            raise RuntimeError(
                f"scorer {self.name!r}: {self.remote.url}{path} answered "
                f"{response.status_code}: is it a {self.api} server? ({response.text[:200]})"
            )
        return response.json()

    def _expected(self) -> list[str]:
        """Names under which a server may serve the configured model."""
        if self.remote.served_model is not None:
            return [self.remote.served_model]
        names = [self.options.model]
        local = ModelSource.parse(self.options.model).local
        if local is not None:
            names.append(str(local))
        return names

    def _wrong_model(self, serves: list[str]) -> ValueError:
        return ValueError(
            f"scorer {self.name!r}: {self.remote.url} serves {serves}, not "
            f"{self._expected()[0]!r}: point remote.url at a server of this model, or set "
            "remote.served_model to the name it serves this model under"
        )

    async def _check_vllm(self) -> int | None:
        data = await self._get("/v1/models")
        models = {m["id"]: m for m in data.get("data", [])}
        found = next((n for n in self._expected() if n in models), None)
        if found is None:
            raise self._wrong_model(sorted(models))
        self._served = found
        limit = models[found].get("max_model_len")
        return int(limit) if isinstance(limit, int) else None

    async def _check_tei(self) -> int | None:
        info = await self._get("/info")
        served = str(info.get("model_id"))
        if served not in self._expected():
            raise self._wrong_model([served])
        self._served = served
        kinds = info.get("model_type") or {}
        wanted = _TEI_TYPES.get(self.task, ())
        kind = next((k for k in wanted if k in kinds), None)
        if kind is None:
            raise ValueError(
                f"scorer {self.name!r}: TEI at {self.remote.url} serves a "
                f"{'/'.join(kinds) or 'unknown'} model; this scorer needs "
                f"{' or '.join(wanted)}"
            )
        if kind != "embedding":
            id2label = kinds[kind].get("id2label") or {}
            self._labels = {str(label): int(i) for i, label in id2label.items()}
        limit = info.get("max_client_batch_size")
        if isinstance(limit, int) and limit > 0:
            self._batch = min(self._batch, limit)
        max_input = info.get("max_input_length")
        return int(max_input) if isinstance(max_input, int) else None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def health(self) -> dict[str, object]:
        out: dict[str, object] = {"ready": self._client is not None, "url": self.remote.url,
                                  "api": self.api, "served_model": self._served}  # fmt: skip
        if self._last_error is not None:
            out["last_error"] = self._last_error
        return out

    # -- scoring ---------------------------------------------------------------------
    async def run(
        self, seqs: list[list[int]], types: list[list[int] | None], texts: list[list[str] | None]
    ) -> list[Output | PoolingError]:
        inputs: list[Any] = []
        out: list[Output | PoolingError | None] = []
        for ids, type_ids, text in zip(seqs, types, texts, strict=True):
            if self.api == "vllm" and type_ids and any(type_ids):
                out.append(PoolingError(
                    "vLLM's pooling API takes no token type ids, which this sentence pair "
                    "needs: use input: text, backend: vllm, or remote.api: tei", "invalid_input",
                ))  # fmt: skip
                continue
            if self.api == "tei" and not text:
                out.append(PoolingError("TEI needs the text of this input", "invalid_input"))
                continue
            out.append(None)
            inputs.append(ids if self.api == "vllm" else text)
        todo = [i for i, o in enumerate(out) if o is None]
        chunks = [todo[i : i + self._batch] for i in range(0, len(todo), self._batch)]
        position = {index: n for n, index in enumerate(todo)}
        answers = await asyncio.gather(
            *(self._isolate([inputs[position[i]] for i in chunk]) for chunk in chunks)
        )
        for chunk, answer in zip(chunks, answers, strict=True):
            for i, value in zip(chunk, answer, strict=True):
                out[i] = value
        return [o for o in out if o is not None]

    async def _isolate(self, inputs: list[Any]) -> list[Output | PoolingError]:
        """The numbers of ``inputs``; a refused request is split in halves until each
        refused input stands alone with its own error."""
        try:
            return list(await self._request(inputs))
        except _Refused as exc:
            if len(inputs) == 1:
                return [PoolingError(str(exc), "invalid_input")]
        except PoolingError as exc:
            return [exc for _ in inputs]
        mid = len(inputs) // 2
        left, right = await asyncio.gather(self._isolate(inputs[:mid]), self._isolate(inputs[mid:]))
        return left + right

    def _body(self, inputs: list[Any]) -> tuple[str, dict[str, Any]]:
        if self.api == "tei":
            truncate = self.options.truncation == "right"
            if self.task == "embed":
                return "/embed", {"inputs": [t[0] for t in inputs], "normalize": True,
                                  "truncate": truncate}  # fmt: skip
            return "/predict", {"inputs": inputs, "raw_scores": True, "truncate": truncate}
        body: dict[str, Any] = {"model": self._served, "input": inputs}
        if self.task == "classify":
            return "/classify", {**body, "use_activation": False}
        if self.task == "token_classify":
            return "/pooling", {**body, "task": "token_classify", "use_activation": False}
        return "/pooling", {**body, "task": "embed"}

    def _parse(self, inputs: list[Any], data: Any) -> list[Output]:
        if self.api == "tei":
            if self.task == "embed":
                return [list(map(float, v)) for v in data]
            outputs: list[Output] = []
            for predictions in data:
                logits = [0.0] * len(self._labels)
                for p in predictions:
                    logits[self._labels[p["label"]]] = float(p["score"])
                outputs.append(logits)
            return outputs
        rows = sorted(data["data"], key=lambda d: d["index"])
        key = "probs" if self.task == "classify" else "data"
        return [row[key] for row in rows]

    async def _request(self, inputs: list[Any]) -> list[Output]:
        """One POST with the retry policy. Raises _Refused (a 4xx: the input's fault) or
        PoolingError (the server is unavailable)."""
        assert self._client is not None, "setup() not run"
        r = self.remote
        path, body = self._body(inputs)
        failure = ""
        for attempt in range(r.max_retries + 1):
            delay = min(r.max_backoff_s, r.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
            try:
                async with self._slots:
                    response = await self._client.post(path, json=body)
            except httpx.HTTPError as exc:  # connect errors, timeouts
                failure = f"{type(exc).__name__}: {exc or 'no answer'}"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        outputs = self._parse(inputs, response.json())
                    except (KeyError, IndexError, TypeError, ValueError) as exc:
                        raise PoolingError(
                            f"the {self.api} server's answer is malformed: {exc!r}", "model_error"
                        ) from None
                    if len(outputs) != len(inputs):
                        raise PoolingError(
                            f"the {self.api} server answered {len(outputs)} results for "
                            f"{len(inputs)} inputs", "model_error",
                        )  # fmt: skip
                    self._last_error = None
                    return outputs
                failure = f"{path} answered {status}: {_message(response)}"
                if status not in _RETRY_STATUS and status < 500:
                    raise _Refused(f"the {self.api} server refused it: {failure}")
                delay = _retry_after(response, delay, r.max_backoff_s)
            if attempt < r.max_retries:
                log.debug("scorer %s: retry %d in %.2fs (%s)", self.name, attempt + 1, delay,
                          failure)  # fmt: skip
                await asyncio.sleep(delay)
        self._last_error = failure
        raise PoolingError(
            f"the {self.api} server at {r.url} did not answer after {r.max_retries + 1} "
            f"tries: {failure}", "model_unavailable",
        )  # fmt: skip


def _message(response: httpx.Response) -> str:
    """The server's own error message (vLLM: error.message; TEI: error), else the text."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(data, dict):
        error = data.get("error", data.get("message", data))
        if isinstance(error, dict):
            error = error.get("message", error)
        return str(error)[:300]
    return str(data)[:300]


def _retry_after(response: httpx.Response, default: float, cap: float) -> float:
    value = response.headers.get("retry-after")
    try:
        return min(cap, max(0.0, float(value))) if value is not None else default
    except ValueError:
        return default
