"""Cache-hit throughput through HTTP with Redis vs cache misses, on the rule scorers, and
the latency a Redis round trip adds to a request.

    .venv/bin/python benchmarks/redis_cache.py [--batches 16] [--concurrency 4]

Starts its own redis-server on a free port and `referee serve` three times with
benchmarks/rules.yaml's `cheap_rules` pipeline (4 rule scorers), 256 distinct items per
request:
  miss:   cache off, every item scored;
  redis:  Redis only (the in-process level off), the same requests twice: the first pass
          scores and writes, the second is served from Redis (one MGET per scorer per
          request, not per item);
  memory: in-process LRU only, second pass: the baseline for "a hit costs nothing".
The added latency of Redis per request is p50(redis hits) - p50(memory hits).
Writes benchmarks/results/redis_cache.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import time

import httpx

from rule_throughput import CONFIG, HERE, make_items, over_http, start_server, stop


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)


def cache_counts(url: str) -> dict[str, float]:
    """Cache hits, misses and errors by level, summed over scorers, from /metrics."""
    counts: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        for kind in ("hits", "misses", "errors"):
            if line.startswith(f"referee_cache_{kind}_total{{"):
                level = line.split('level="', 1)[1].split('"', 1)[0]
                counts[f"{level}_{kind}"] = counts.get(f"{level}_{kind}", 0.0) + float(
                    line.rsplit(" ", 1)[1]
                )
    return counts


def run(env: dict[str, str], batches: list, concurrency: int, passes: int) -> list[dict]:
    proc, url, _ = start_server(CONFIG, env)
    try:
        asyncio.run(over_http(url, [make_items(256, 99999)], 1, "cheap_rules"))  # warm-up
        out = []
        for _ in range(passes):
            before = cache_counts(url)
            result: dict = dict(asyncio.run(over_http(url, batches, concurrency, "cheap_rules")))
            after = cache_counts(url)
            result["cache"] = {k: v - before.get(k, 0.0) for k, v in after.items()}
            out.append(result)
        return out
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    batches = [make_items(256, 5000 + seed) for seed in range(args.batches)]
    redis, port = start_redis()
    try:
        miss = run({"REFEREE_CACHE__BACKEND": "none"}, batches, args.concurrency, 1)[0]
        redis_env = {"REFEREE_CACHE__BACKEND": "redis", "REFEREE_CACHE__MAX_ENTRIES": "0",
                     "REFEREE_CACHE__URL": f"redis://127.0.0.1:{port}/0",
                     "REFEREE_CACHE__NAMESPACE": f"bench{int(time.time())}"}  # fmt: skip
        redis_first, redis_hit = run(redis_env, batches, args.concurrency, 2)
        memory_hit = run({"REFEREE_CACHE__BACKEND": "memory"}, batches, args.concurrency, 2)[1]
    finally:
        redis.send_signal(signal.SIGTERM)
        redis.wait()
    result = {
        "batch_size": 256, "batches": args.batches, "concurrency": args.concurrency,
        "miss_no_cache": miss,
        "redis_first_pass_score_and_write": redis_first,
        "redis_hits": redis_hit,
        "memory_hits": memory_hit,
        "redis_hit_over_miss_throughput": float(redis_hit["items_per_s"]) / float(miss["items_per_s"]),  # type: ignore[arg-type]
        "added_redis_latency_per_request_p50_s": float(redis_hit["request_p50_s"]) - float(memory_hit["request_p50_s"]),  # type: ignore[arg-type]
    }  # fmt: skip
    out = HERE / "results" / "redis_cache.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
