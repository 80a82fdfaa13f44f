"""Classifier reward-model throughput on a length-skewed workload: Referee over HTTP
against the best hand-written in-process transformers loop (the ceiling) and a naive
reward server that runs one forward pass per HTTP request (the baseline).

    .venv/bin/python benchmarks/model_throughput.py [--items 2000] [--clients 8] [--per-request 32]

Model: all-MiniLM-L6-v2 (BERT, 6 layers) under a fresh 1-logit head, saved to a temp dir
(tests/models.py): the real weights and tokenizer of the test package, fp32 on CPU.
Workload: ``--items`` (prompt, response) pairs whose response lengths follow a log-normal
distribution (median ~30 words, a long tail to 400 words), pair-encoded, max_length 512.
Clients: ``--clients`` concurrent senders, ``--per-request`` items a request, cache off.

- referee: `referee serve` with the classifier scorer (token-budget batching by length).
- ceiling: one process, no server: sort all items by length, tokenize, run fixed-size
  batches (the best of several sizes) under inference_mode — what a careful script does.
- naive: a FastAPI app that tokenizes each request's items with padding and runs one
  forward pass per request (requests serialised on the model), same clients.

Writes benchmarks/results/model_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from tests.models import save_minilm_head  # noqa: E402

from rule_throughput import percentile, start_server, stop  # noqa: E402

WORDS = ("the answer follows from the previous step because we add both sides and then "
         "check every case again carefully").split()  # fmt: skip
NAIVE_APP = """
import sys, threading, torch
from fastapi import FastAPI, Request
from transformers import AutoModelForSequenceClassification, AutoTokenizer
torch.set_num_threads({threads})
tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1]).eval()
lock = threading.Lock()
app = FastAPI()

@app.post("/score")
def score(body: dict) -> dict:
    items = body["items"]
    enc = tok([i["prompt"] for i in items], [i["response"] for i in items], padding=True,
              truncation=True, max_length=512, return_tensors="pt")
    with lock, torch.inference_mode():
        logits = model(**enc).logits[:, 0]
    return {{"rewards": logits.tolist()}}
"""


def classifier_config(model_dir: Path, max_batch_tokens: int = 8192) -> dict[str, object]:
    """The Referee config of the benchmarked classifier scorer (cache off)."""
    return {
        "scorers": {"rm": {"kind": "classifier",
                           "options": {"model": str(model_dir), "input": "pair", "max_length": 512,
                                       "truncation": "right"},
                           "batching": {"max_batch_tokens": max_batch_tokens}}},
        "pipelines": {"rm": {"reward": "rm"}},
        "cache": {"backend": "none"},
    }  # fmt: skip


def make_items(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        words = min(400, max(1, int(rng.lognormvariate(3.4, 1.0))))
        response = " ".join(rng.choice(WORDS) for _ in range(words))
        items.append({"id": f"i{i}", "prompt": f"Question {i}: add the numbers {i} and 7.",
                      "response": response})  # fmt: skip
    return items


def ceiling(
    model_dir: Path, items: list[dict[str, str]], batch_sizes: list[int]
) -> dict[str, object]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    runs = {}
    for size in batch_sizes:
        t0 = time.perf_counter()
        order = sorted(items, key=lambda x: len(x["prompt"]) + len(x["response"]))
        rewards = []
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            enc = tok([c["prompt"] for c in chunk], [c["response"] for c in chunk],
                      padding=True, truncation=True, max_length=512, return_tensors="pt")  # fmt: skip
            with torch.inference_mode():
                rewards.extend(model(**enc).logits[:, 0].tolist())
        runs[size] = len(items) / (time.perf_counter() - t0)
    best = max(runs, key=lambda k: runs[k])
    return {"items_per_s": runs[best], "best_batch_size": best, "by_batch_size": runs}


async def drive(url: str, path: str, items: list[dict[str, str]], clients: int, per_request: int,
                pipeline: str | None) -> dict[str, float]:  # fmt: skip
    requests = [items[i : i + per_request] for i in range(0, len(items), per_request)]
    queue: asyncio.Queue[list[dict[str, str]]] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def worker() -> None:
            while not queue.empty():
                batch = queue.get_nowait()
                body: dict[str, object] = {"items": batch}
                if pipeline:
                    body |= {"pipeline": pipeline, "options": {"return_components": False}}
                t = time.perf_counter()
                response = await client.post(path, json=body)
                latencies.append(time.perf_counter() - t)
                response.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return {"items_per_s": len(items) / elapsed, "seconds": elapsed,
            "request_p50_s": percentile(latencies, 0.5), "request_p99_s": percentile(latencies, 0.99)}  # fmt: skip


def padding_from_metrics(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text

    def value(name: str) -> float:
        match = re.search(rf'^{name}{{scorer="rm"}} ([0-9.e+]+)$', text, re.M)
        return float(match.group(1)) if match else float("nan")

    batches = value("referee_batch_size_count")
    return {"padding_efficiency_mean": value("referee_batch_padding_efficiency_sum") / batches,
            "batches": batches, "mean_batch_size": value("referee_batch_size_sum") / batches,
            "mean_padded_tokens": value("referee_batch_tokens_sum") / batches}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-request", type=int, default=32)
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--skip-naive", action="store_true", help="only the ceiling and referee")
    args = parser.parse_args()
    items = make_items(args.items)
    tmp = Path(tempfile.mkdtemp())
    model_dir = save_minilm_head(tmp / "rm", "sequence", num_labels=1)
    result: dict[str, object] = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}",
        "workload": {"items": args.items, "clients": args.clients, "per_request": args.per_request,
                     "words_p50": sorted(len(i["response"].split()) for i in items)[len(items) // 2],
                     "words_max": max(len(i["response"].split()) for i in items)},
    }  # fmt: skip

    result["ceiling"] = ceiling(model_dir, items, [8, 16, 32, 64])
    print("ceiling", result["ceiling"], flush=True)

    config = classifier_config(model_dir, args.max_batch_tokens)
    (tmp / "rm.yaml").write_text(yaml.safe_dump(config))
    proc, url, _ = start_server(tmp / "rm.yaml")
    try:
        asyncio.run(drive(url, "/v1/rewards", items[:64], args.clients, args.per_request, "rm"))
        before = padding_from_metrics(url)
        referee = asyncio.run(
            drive(url, "/v1/rewards", items, args.clients, args.per_request, "rm")
        )
        after = padding_from_metrics(url)
        n = after["batches"] - before["batches"]
        referee["batches"] = n
        referee["padding_efficiency"] = (
            after["padding_efficiency_mean"] * after["batches"]
            - before["padding_efficiency_mean"] * before["batches"]
        ) / n
    finally:
        stop(proc)
    result["referee"] = referee
    print("referee", referee, flush=True)
    # The ceiling again, at its best batch size, after the server: on a shared machine the
    # ratio is taken against the mean of the runs before and after (their range shows drift).
    best = result["ceiling"]["best_batch_size"]  # type: ignore[index]
    result["ceiling_after"] = ceiling(model_dir, items, [best])
    print("ceiling after", result["ceiling_after"], flush=True)
    ceil = (result["ceiling"]["items_per_s"] + result["ceiling_after"]["items_per_s"]) / 2  # type: ignore[index]
    result["referee_over_ceiling"] = referee["items_per_s"] / ceil
    if args.skip_naive:
        out = Path(__file__).parent / "results" / "model_throughput.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({"referee_over_ceiling": result["referee_over_ceiling"]}))
        return

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp / "naive_app.py").write_text(NAIVE_APP.format(threads=__import__("os").cpu_count()))
    naive_proc = subprocess.Popen(
        [sys.executable, "-c", f"import sys, uvicorn; sys.argv[1:] = [{str(model_dir)!r}]; "
         f"sys.path.insert(0, {str(tmp)!r}); uvicorn.run('naive_app:app', port={port}, log_level='warning')"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                httpx.post(f"{url}/score", json={"items": items[:2]}, timeout=5).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        result["naive"] = asyncio.run(
            drive(url, "/score", items, args.clients, args.per_request, None)
        )
    finally:
        naive_proc.kill()
        naive_proc.wait()
    print("naive", result["naive"], flush=True)

    result["referee_over_naive"] = referee["items_per_s"] / result["naive"]["items_per_s"]  # type: ignore[index]
    out = Path(__file__).parent / "results" / "model_throughput.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("referee_over_ceiling", "referee_over_naive")}))


if __name__ == "__main__":
    main()
