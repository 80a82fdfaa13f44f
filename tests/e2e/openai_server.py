"""A small OpenAI-compatible server running a real causal LM with transformers, for the
judge's `openai` backend tests and benchmark (nothing installable here serves one on CPU).

    python -m tests.e2e.openai_server --model DIR --port PORT [--max-inflight N] [--fail-first K]

POST /v1/chat/completions: messages, max_tokens, temperature, top_p, seed, n, logprobs,
top_logprobs, and vLLM's continue_final_message / add_generation_prompt. A vision-language
model directory (a config with a vision tower, saved with its processor) is served with
its processor: messages may hold OpenAI content parts, images as `image_url` parts with
`data:` URLs (as vLLM's server takes them), and any other image source is a 400. The model runs one
request at a time. ``--max-inflight`` answers 429 (with Retry-After) to requests beyond
that many in flight, and ``--fail-first`` answers 503 to the first K requests, so that a
client's retry path is driven by the server, as it is by a busy vLLM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import math
from typing import Any

import torch
import transformers
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class ChatRequest(BaseModel):
    model: str = "local"
    messages: list[dict[str, Any]]
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    continue_final_message: bool = False
    add_generation_prompt: bool = True


class BadRequest(Exception):
    pass


def decode_parts(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """OpenAI content parts as a chat template takes them, and the images in order."""
    from PIL import Image

    images: list[Any] = []
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        parts = []
        for part in content:
            if part.get("type") == "image_url":
                url = part["image_url"]["url"]
                if not url.startswith("data:") or ";base64," not in url:
                    raise BadRequest("this server takes images as data: URLs only")
                raw = base64.b64decode(url.split(";base64,", 1)[1])
                images.append(Image.open(io.BytesIO(raw)).convert("RGB"))
                parts.append({"type": "image"})
            elif part.get("type") == "text":
                parts.append({"type": "text", "text": part["text"]})
            else:
                raise BadRequest(f"unknown content part type {part.get('type')!r}")
        out.append({"role": m["role"], "content": parts})
    return out, images


def build_app(model_dir: str, max_inflight: int, fail_first: int) -> FastAPI:
    config = transformers.AutoConfig.from_pretrained(model_dir)
    vision = getattr(config, "vision_config", None) is not None
    processor = transformers.AutoProcessor.from_pretrained(model_dir) if vision else None
    tok = (
        processor.tokenizer if processor else transformers.AutoTokenizer.from_pretrained(model_dir)
    )
    auto = transformers.AutoModelForImageTextToText if vision else transformers.AutoModelForCausalLM
    lm = auto.from_pretrained(model_dir).eval()
    app = FastAPI()
    lock = asyncio.Lock()
    state = {"inflight": 0, "seen": 0}

    def complete(req: ChatRequest) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if processor is not None:
            messages, images = decode_parts(req.messages)
            text = processor.apply_chat_template(
                messages,
                tokenize=False,
                add_generation_prompt=req.add_generation_prompt and not req.continue_final_message,
                continue_final_message=req.continue_final_message,
            )
            enc = processor(text=[text], images=images or None, return_tensors="pt",
                            add_special_tokens=False)  # fmt: skip
            ids = enc.pop("input_ids")
            extra = {k: v for k, v in enc.items() if k != "attention_mask"}
        else:
            if any(not isinstance(m["content"], str) for m in req.messages):
                raise BadRequest("this model reads text only: content must be a string")
            text = tok.apply_chat_template(
                req.messages,
                tokenize=False,
                add_generation_prompt=req.add_generation_prompt and not req.continue_final_message,
                continue_final_message=req.continue_final_message,
            )
            ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        sample = req.temperature > 0
        if req.seed is not None:
            torch.manual_seed(req.seed)
        with torch.inference_mode():
            out = lm.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=req.max_tokens,
                do_sample=sample,
                temperature=req.temperature if sample else None,
                top_p=req.top_p if sample else None,
                top_k=0 if sample else None,
                num_return_sequences=req.n,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=tok.pad_token_id or tok.eos_token_id,
                **extra,
            )
        choices = []
        for c in range(req.n):
            new = out.sequences[c, ids.shape[1] :].tolist()
            if tok.eos_token_id in new:
                new = new[: new.index(tok.eos_token_id)]
            choice: dict[str, Any] = {
                "index": c,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": tok.decode(new)},
            }
            if req.logprobs:
                content = []
                for step, token in enumerate(new):
                    logp = torch.log_softmax(out.logits[step][c].float(), -1)
                    top = torch.topk(logp, max(1, req.top_logprobs))
                    content.append(
                        {
                            "token": tok.decode([token]),
                            "logprob": float(logp[token]),
                            "top_logprobs": [
                                {"token": tok.decode([int(i)]), "logprob": float(v)}
                                for v, i in zip(top.values, top.indices, strict=True)
                                if math.isfinite(float(v))
                            ],
                        }
                    )
                choice["logprobs"] = {"content": content}
            choices.append(choice)
        return {"object": "chat.completion", "model": req.model, "choices": choices}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest) -> JSONResponse:
        state["seen"] += 1
        if state["seen"] <= fail_first:
            return JSONResponse({"error": {"message": "warming up"}}, status_code=503)
        if state["inflight"] >= max_inflight:
            return JSONResponse(
                {"error": {"message": "too many requests"}},
                status_code=429,
                headers={"Retry-After": "0.5"},
            )
        state["inflight"] += 1
        try:
            async with lock:
                return JSONResponse(await asyncio.to_thread(complete, req))
        except BadRequest as exc:
            return JSONResponse({"error": {"message": str(exc)}}, status_code=400)
        finally:
            state["inflight"] -= 1

    @app.get("/health")
    async def health() -> dict[str, int]:
        return {"requests": state["seen"]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-inflight", type=int, default=1_000_000)
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()
    app = build_app(args.model, args.max_inflight, args.fail_first)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
