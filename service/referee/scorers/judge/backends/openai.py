"""The ``openai`` judge backend: any OpenAI-compatible chat-completions server (vLLM,
SGLang, TGI, hosted APIs).

At most ``max_concurrency`` requests in flight; each with a timeout; retries on
408/409/429/5xx and transport errors with capped, jittered exponential backoff that
honours ``Retry-After``. The API key comes from an environment variable or a secret
file named in the config — never from a request — and is never logged.

Logprobs mode asks for ``top_logprobs`` and, when a verdict prefix is set, continues
the judge's turn after it (vLLM's ``continue_final_message``). A verdict label longer
than one token ("10") is read along the greedy path: P("1") x P("0" | "1").
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
from typing import Any

import httpx

from referee.media import INVALID_IMAGE, ImageDecodeError
from referee.scorers.judge.backends import JudgeBackend, JudgeCallError
from referee.scorers.judge.options import EndpointOptions, JudgeOptions, SamplingOptions
from referee.scorers.judge.templates import Chat
from referee.scorers.models._vision import openai_content

__all__ = ["OpenAIBackend", "label_probs_from_logprobs"]

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 429}


def _api_key(endpoint: EndpointOptions) -> str | None:
    if endpoint.api_key_env is not None:
        key = os.environ.get(endpoint.api_key_env)
        if not key:
            raise ValueError(f"endpoint.api_key_env: ${endpoint.api_key_env} is not set")
        return key
    if endpoint.api_key_file is not None:
        try:
            return endpoint.api_key_file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"endpoint.api_key_file: cannot read it ({exc.strerror})") from None
    return None


def label_probs_from_logprobs(content: list[dict[str, Any]], labels: list[str]) -> dict[str, float]:
    """Each label's probability as the text generated next, from an OpenAI ``logprobs.
    content`` list: the alternatives at each position along the greedy path."""
    probs = dict.fromkeys(labels, 0.0)
    path, path_p = "", 1.0
    for j, entry in enumerate(content):
        for alt in entry.get("top_logprobs") or []:
            token = alt["token"].lstrip() if j == 0 else alt["token"]
            for label in labels:
                if label.startswith(path) and label[len(path) :] == token and token:
                    probs[label] += path_p * math.exp(alt["logprob"])
        token = entry["token"].lstrip() if j == 0 else entry["token"]
        path, path_p = path + token, path_p * math.exp(entry["logprob"])
        if not any(label.startswith(path) and len(label) > len(path) for label in labels):
            break
    return probs


class OpenAIBackend(JudgeBackend):
    libraries = ("httpx",)

    def __init__(self, name: str, options: JudgeOptions) -> None:
        super().__init__(name, options)
        assert options.endpoint is not None
        self.endpoint = options.endpoint
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(self.endpoint.max_concurrency)

    def identity(self) -> dict[str, object]:
        return {
            "model": self.options.model,
            "revision": self.options.revision,
            "base_url": self.endpoint.base_url,
        }

    async def setup(self) -> None:
        key = _api_key(self.endpoint)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=self.endpoint.max_concurrency)
        self._client = httpx.AsyncClient(
            base_url=self.endpoint.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=self.endpoint.timeout_s,
            limits=limits,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def health(self) -> dict[str, object]:
        return {"ready": self._client is not None, "base_url": self.endpoint.base_url}

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST chat/completions with the retry policy; the JSON answer or JudgeCallError."""
        assert self._client is not None, "setup() not run"
        e = self.endpoint
        for attempt in range(e.max_retries + 1):
            delay = min(e.max_backoff_s, e.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
            try:
                async with self._slots:
                    response = await self._client.post("chat/completions", json=body)
            except httpx.TransportError as exc:  # connect errors, timeouts
                failure = JudgeCallError(
                    f"judge endpoint: {type(exc).__name__}", "judge_unavailable"
                )
            else:
                if response.status_code == 200:
                    data: dict[str, Any] = response.json()
                    return data
                failure = JudgeCallError(
                    f"judge endpoint answered {response.status_code}: {response.text[:200]}",
                    "judge_unavailable"
                    if response.status_code >= 500 or response.status_code in _RETRY_STATUS
                    else "judge_error",
                )
                if response.status_code not in _RETRY_STATUS and response.status_code < 500:
                    raise failure
                delay = _retry_after(response, delay, e.max_backoff_s)
            if attempt < e.max_retries:
                log.debug(
                    "judge %s: retry %d in %.2fs (%s)", self.name, attempt + 1, delay, failure
                )
                await asyncio.sleep(delay)
        raise failure

    async def _each(self, chats: list[Chat], call: Any) -> list[Any]:
        async def one(chat: Chat) -> Any:
            try:
                return await call(chat)
            except JudgeCallError as exc:
                return exc
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                return JudgeCallError(f"judge endpoint: malformed answer ({exc!r})")

        return list(await asyncio.gather(*(one(c) for c in chats)))

    async def label_probs(
        self, chats: list[Chat], prefix: str, labels: list[str]
    ) -> list[dict[str, float] | JudgeCallError]:
        async def call(chat: Chat) -> dict[str, float]:
            messages = await _wire(chat)
            body: dict[str, Any] = {
                "model": self.options.model,
                "messages": messages,
                "temperature": 0.0,
                "max_tokens": min(4, max(len(label) for label in labels)),
                "logprobs": True,
                "top_logprobs": self.endpoint.top_logprobs,
                "seed": self.options.sampling.seed,
            }
            if prefix:
                body["messages"] = [*messages, {"role": "assistant", "content": prefix}]
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
            data = await self._post(body)
            logprobs = data["choices"][0].get("logprobs") or {}
            if not logprobs.get("content"):
                raise JudgeCallError(
                    "the judge endpoint returned no logprobs: use mode parse", "judge_no_logprobs"
                )
            return label_probs_from_logprobs(logprobs["content"], labels)

        return await self._each(chats, call)

    async def generate(
        self, chats: list[Chat], sampling: SamplingOptions, n: int
    ) -> list[list[str] | JudgeCallError]:
        async def call(chat: Chat) -> list[str]:
            body = {
                "model": self.options.model,
                "messages": await _wire(chat),
                "n": n,
                "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "seed": sampling.seed,
            }
            data = await self._post(body)
            return [str(c["message"]["content"] or "") for c in data["choices"]]

        return await self._each(chats, call)


async def _wire(chat: Chat) -> list[dict[str, Any]]:
    """The chat as sent: image parts as OpenAI ``image_url`` parts with ``data:`` URLs
    (encoded off the event loop), passed through to the server as content parts."""
    if all(isinstance(m["content"], str) for m in chat):
        return chat
    try:
        return await asyncio.to_thread(openai_content, chat)
    except ImageDecodeError as exc:
        raise JudgeCallError(str(exc), INVALID_IMAGE) from None


def _retry_after(response: httpx.Response, default: float, cap: float) -> float:
    value = response.headers.get("retry-after")
    try:
        return min(cap, max(0.0, float(value))) if value is not None else default
    except ValueError:
        return default
