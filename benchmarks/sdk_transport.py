"""The SDK's transports against one `referee serve`: HTTP batch calls vs gRPC batch calls
vs gRPC streaming, and the SDK's own overhead next to raw httpx POSTs of the same batches.

    .venv/bin/python benchmarks/sdk_transport.py [--batches 16] [--batch-size 256] [--concurrency 4]
        [--pipelines default,cheap_rules] [--modes ...] [--rounds 1] [--pace-ms 50]

Same items and config as rule_throughput.py (benchmarks/rules.yaml, cache off, every item
distinct per pass). Batch modes send `batches` requests of `batch-size` items with
`concurrency` in flight and report items/s and request p50/p99. The stream mode pushes
the same items as 8-item messages (a GRPO group each) into one ScoreStream as fast as
it can and reports items/s and per-item latency (send -> result) p50/p99. The paced
stream mode sends one 8-item message every `--pace-ms` (rollouts finishing one group at
a time, below capacity) and reports per-item latency: what a trainer waits for a group.
`--rounds N` repeats the chosen `--modes` N times, alternating, and reports the gRPC
stream / gRPC batch ratio of each round (median and range). Writes
benchmarks/results/sdk_transport.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402

from referee_client import AsyncRewardClient  # noqa: E402
from rule_throughput import make_items, over_http, percentile, start_server, stop  # noqa: E402

CONFIG = HERE / "rules.yaml"
NO_COMPONENTS = {"return_components": False}


async def sdk_batches(url: str, batches: list[list[dict[str, object]]], concurrency: int,
                      pipeline: str) -> dict[str, float]:  # fmt: skip
    """As over_http: `concurrency` workers, each sending one batch at a time."""
    latencies: list[float] = []
    queue = list(reversed(batches))
    errors = 0
    async with AsyncRewardClient(url, max_concurrency=concurrency, timeout=300) as client:
        await client.limits()  # asked once per client; not part of the timed work

        async def worker() -> None:
            nonlocal errors
            while queue:
                batch = queue.pop()
                t = time.perf_counter()
                response = await client.score(batch, pipeline=pipeline, options=NO_COMPONENTS)
                latencies.append(time.perf_counter() - t)
                errors += response.usage.errors

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    n = sum(len(b) for b in batches)
    return {"items": n, "seconds": elapsed, "items_per_s": n / elapsed, "item_errors": errors,
            "request_p50_s": percentile(latencies, 0.5), "request_p99_s": percentile(latencies, 0.99)}  # fmt: skip


def client_cpu(batch: list[dict[str, object]], reply: bytes, repeat: int = 20) -> dict[str, float]:
    """Client-side CPU per request, no network: the SDK (validate items, build the request,
    serialise, parse the typed response; and the same through protobuf for gRPC) vs
    json.dumps + json.loads of the same body and reply, as a raw httpx caller does."""
    from referee_client import _convert
    from referee_client._core import as_items
    from referee_client.schema import RewardRequest, RewardResponse

    def timed(fn: object) -> float:
        t = time.perf_counter()
        for _ in range(repeat):
            fn()  # type: ignore[operator]
        return (time.perf_counter() - t) / repeat

    response = RewardResponse.model_validate_json(reply)
    proto_reply = _convert.response_to_proto(response).SerializeToString()
    from referee_client._proto import referee_pb2 as pb

    def sdk_http() -> None:
        request = RewardRequest(pipeline="p", items=as_items(batch), options=NO_COMPONENTS)
        request.model_dump_json(exclude_none=True).encode()
        RewardResponse.model_validate_json(reply)

    def sdk_grpc() -> None:
        request = RewardRequest(pipeline="p", items=as_items(batch), options=NO_COMPONENTS)
        _convert.request_to_proto(request).SerializeToString()
        _convert.response_from_proto(pb.RewardResponse.FromString(proto_reply))

    def raw() -> None:
        json.dumps({"pipeline": "p", "items": batch, "options": NO_COMPONENTS}).encode()
        json.loads(reply)

    return {"raw_json_s": timed(raw), "sdk_http_s": timed(sdk_http), "sdk_grpc_s": timed(sdk_grpc)}


async def sdk_stream(url: str, items: list[dict[str, object]], pipeline: str,
                     pace_s: float = 0.0) -> dict[str, float]:  # fmt: skip
    sent: dict[str, float] = {}
    latencies: list[float] = []
    errors = 0
    async with AsyncRewardClient(url, timeout=300) as client:
        await client.limits()
        t0 = time.perf_counter()
        async with client.stream(pipeline=pipeline, options=NO_COMPONENTS) as stream:

            async def produce() -> None:
                for i in range(0, len(items), 8):
                    group = items[i : i + 8]
                    now = time.perf_counter()
                    for item in group:
                        sent[str(item["id"])] = now
                    await stream.send(group)
                    if pace_s:  # one group at a time, as rollouts finish
                        await asyncio.sleep(pace_s)
                await stream.close_send()

            producer = asyncio.create_task(produce())
            async for result in stream:
                latencies.append(time.perf_counter() - sent[result.id])
                errors += result.error is not None
            await producer
        elapsed = time.perf_counter() - t0
    return {"items": len(items), "seconds": elapsed, "items_per_s": len(items) / elapsed,
            "item_errors": errors, "item_p50_s": percentile(latencies, 0.5),
            "item_p99_s": percentile(latencies, 0.99)}  # fmt: skip


MODES = ("raw_httpx_batch", "sdk_http_batch", "sdk_grpc_batch", "sdk_grpc_stream",
         "sdk_http_stream", "sdk_grpc_stream_paced")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--pipelines", default="default,cheap_rules")
    parser.add_argument("--modes", default=",".join(MODES), help=f"any of {', '.join(MODES)}")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the modes this many times, alternating; ratios per round")  # fmt: skip
    parser.add_argument("--pace-ms", type=float, default=50.0,
                        help="paced stream: one 8-item message every this many ms")  # fmt: skip
    parser.add_argument("--paced-messages", type=int, default=64)
    args = parser.parse_args()
    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes: {sorted(unknown)}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        grpc_port = s.getsockname()[1]
    proc, url, _ = start_server(CONFIG, {"REFEREE_SERVER__GRPC_PORT": str(grpc_port)})
    grpc_url = f"grpc://127.0.0.1:{grpc_port}"
    result: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": " ".join(["benchmarks/sdk_transport.py", *sys.argv[1:]]),
        "load_avg_before": os.getloadavg(),
        "batch_size": args.batch_size, "batches": args.batches, "concurrency": args.concurrency,
        "pipelines": {},
    }  # fmt: skip
    n = args.batches * args.batch_size
    seed = 0
    try:
        for pipeline in args.pipelines.split(","):
            out: dict[str, object] = {}

            def fresh(count: int = n) -> list[dict[str, object]]:
                nonlocal seed
                seed += 1
                return make_items(count, seed)

            def split(items: list[dict[str, object]]) -> list[list[dict[str, object]]]:
                return [
                    items[i : i + args.batch_size] for i in range(0, len(items), args.batch_size)
                ]

            asyncio.run(over_http(url, split(fresh())[:2], 2, pipeline))  # warm both paths
            asyncio.run(sdk_batches(grpc_url, split(fresh())[:2], 2, pipeline))
            rounds: list[dict[str, object]] = []
            for _ in range(args.rounds):
                runs: dict[str, object] = {}
                for mode in modes:
                    if mode == "raw_httpx_batch":
                        run = asyncio.run(
                            over_http(url, split(fresh()), args.concurrency, pipeline)
                        )
                        del run["rewards"]
                    elif mode in ("sdk_http_batch", "sdk_grpc_batch"):
                        target = url if mode == "sdk_http_batch" else grpc_url
                        run = asyncio.run(
                            sdk_batches(target, split(fresh()), args.concurrency, pipeline)
                        )
                    elif mode in ("sdk_grpc_stream", "sdk_http_stream"):
                        target = grpc_url if mode == "sdk_grpc_stream" else url
                        run = asyncio.run(sdk_stream(target, fresh(), pipeline))
                    else:
                        run = asyncio.run(sdk_stream(grpc_url, fresh(8 * args.paced_messages),
                                                     pipeline, args.pace_ms / 1000))  # fmt: skip
                    runs[mode] = run
                    print(pipeline, mode, json.dumps(run), flush=True)
                if "sdk_grpc_stream" in runs and "sdk_grpc_batch" in runs:
                    ratio = (
                        runs["sdk_grpc_stream"]["items_per_s"]
                        / runs["sdk_grpc_batch"]["items_per_s"]
                    )  # type: ignore[index]
                    runs["grpc_stream_over_grpc_batch"] = ratio
                    print(pipeline, "grpc_stream_over_grpc_batch", round(ratio, 3), flush=True)
                rounds.append(runs)
            out["rounds"] = rounds
            ratios = [r["grpc_stream_over_grpc_batch"] for r in rounds
                      if "grpc_stream_over_grpc_batch" in r]  # fmt: skip
            if ratios:
                out["grpc_stream_over_grpc_batch"] = {
                    "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}  # type: ignore[type-var]  # fmt: skip
            sample = split(fresh())[0]
            reply = httpx.post(f"{url}/v1/rewards", timeout=300, json={
                "pipeline": pipeline, "items": sample, "options": NO_COMPONENTS}).content  # fmt: skip
            out["client_cpu_per_request"] = client_cpu(sample, reply)
            result["pipelines"][pipeline] = out  # type: ignore[index]
    finally:
        stop(proc)
    result["load_avg_after"] = os.getloadavg()
    out_path = HERE / "results" / "sdk_transport.json"
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
