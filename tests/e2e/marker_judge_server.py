"""A stand-in for a judge model behind an OpenAI-compatible server, whose verdicts are
fixed by a marker in the responses it is shown: "(quality N)", higher is better. No
model can be made to prefer a given response on purpose, so the tests that check which
item a verdict credits (tests/e2e/test_judge_direction.py) use this instead.

    python -m tests.e2e.marker_judge_server --port PORT [--hold-while FILE]

POST /v1/chat/completions reads the last user turn of the judge's default pairwise or
listwise prompt:
- pairwise, with ``logprobs``: one next token, "A" or "B", with P(A) = sigmoid(qA - qB);
- pairwise, without: "Winner: A" or "Winner: B" (the higher quality; A on a tie);
- listwise: "Ranking: i > j > k", the presented positions from best to worst.
The request's ``model`` names a position-biased variant: ``decides-when-better-is-a``
(or ``-b``) judges only when the better response is shown in that position and
answers P(A) = P(B) = 0.5 otherwise. GET /health counts the requests answered.
``--hold-while FILE``: while FILE exists, requests wait unanswered, and GET /held lists
the client ports of those waiting (a test finds the process with a call in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

__all__ = ["build_app", "quality", "serving"]

_PAIR = re.compile(r"\[Response A\]\n(.*?)\n\n\[Response B\]\n(.*?)\n\nWhich", re.DOTALL)
_LIST = re.compile(r"\[Response (\d+)\]\n(.*?)\n\n(?=\[Response \d+\]|Rank all)", re.DOTALL)
_QUALITY = re.compile(r"\(quality (-?\d+)\)")


class ChatRequest(BaseModel):
    model: str = "stand-in"
    messages: list[dict[str, str]]
    logprobs: bool = False
    top_logprobs: int = 0


def quality(response: str) -> int:
    found = _QUALITY.search(response)
    if found is None:
        raise ValueError(f"no (quality N) marker in {response!r}")
    return int(found.group(1))


def _p_a(model: str, a: str, b: str) -> float:
    qa, qb = quality(a), quality(b)
    better_is_a = qa > qb
    if model.endswith("decides-when-better-is-a") and not better_is_a:
        return 0.5
    if model.endswith("decides-when-better-is-b") and better_is_a:
        return 0.5
    return 1.0 / (1.0 + math.exp(qb - qa))


def _answer(req: ChatRequest) -> dict[str, Any]:
    turn = next(m["content"] for m in reversed(req.messages) if m["role"] == "user")
    pair = _PAIR.search(turn)
    if pair is not None:
        p_a = _p_a(req.model, pair.group(1), pair.group(2))
        label = "A" if p_a >= 0.5 else "B"
        if req.logprobs:
            top = [
                {"token": "A", "logprob": math.log(p_a)},
                {"token": "B", "logprob": math.log(1.0 - p_a)},
            ]
            chosen = top[0 if label == "A" else 1]
            logprobs = {"content": [{**chosen, "top_logprobs": top}]}
            return {"message": {"role": "assistant", "content": label}, "logprobs": logprobs}
        return {"message": {"role": "assistant", "content": f"Winner: {label}"}}
    shown = {int(k): text for k, text in _LIST.findall(turn)}
    if len(shown) < 2:
        raise ValueError("neither a pairwise nor a listwise judge prompt")
    ranking = sorted(shown, key=lambda k: -quality(shown[k]))
    content = "Ranking: " + " > ".join(map(str, ranking))
    return {"message": {"role": "assistant", "content": content}}


def build_app(hold_while: Path | None = None) -> FastAPI:
    app = FastAPI()
    answered = {"requests": 0}
    held: list[int] = []

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request) -> JSONResponse:
        port = request.client.port if request.client else 0
        if hold_while is not None and await asyncio.to_thread(hold_while.exists):
            held.append(port)
            try:
                while await asyncio.to_thread(hold_while.exists):
                    await asyncio.sleep(0.02)
            finally:
                held.remove(port)
        try:
            choice = _answer(req)
        except ValueError as exc:
            return JSONResponse({"error": {"message": str(exc)}}, status_code=400)
        answered["requests"] += 1
        body = {"object": "chat.completion", "model": req.model,
                "choices": [{"index": 0, "finish_reason": "stop", **choice}]}  # fmt: skip
        return JSONResponse(body)

    @app.get("/health")
    async def health() -> dict[str, int]:
        return answered

    @app.get("/held")
    async def waiting() -> dict[str, list[int]]:
        return {"ports": list(held)}

    return app


@contextlib.contextmanager
def serving(*flags: str) -> Iterator[str]:
    """This server as a subprocess on a free port, until the block ends: its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.marker_judge_server",
                             "--port", str(port), *flags])  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the stand-in judge exited"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the stand-in judge did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hold-while", type=Path, default=None)
    args = parser.parse_args()
    uvicorn.run(build_app(args.hold_while), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
