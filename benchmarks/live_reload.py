"""Request latency while a reward model is reloaded live, against steady state, and the
time from the reload call to the first reward of the new version.

    .venv/bin/python benchmarks/live_reload.py [--clients 4] [--items 16] [--steady-s 20] [--ray]

Model: all-MiniLM-L6-v2 under two fresh seeded heads (A, B; tests/models.py), fp32 on
CPU, served by a real `referee serve` (cache off). ``--clients`` clients send
``--items``-item requests back to back. Phases: ``--steady-s`` seconds of steady load on
A; then ``POST /v1/admin/scorers/rm/reload`` to B (beside A) under the same load; then
``--steady-s`` seconds more. Reported: p50/p99 latency of requests finished in the steady
phase, and of those in flight at some moment between the reload call and its answer
(load and warm-up of B run on the same cores as A's scoring); time from the call to the first response that
carries B's pipeline version; failed requests (must be 0) and responses that mixed
versions (must be 0: each response's rewards are checked against A's or B's values).

``--ray``: the same on Ray Serve (`referee serve --ray`: a local Ray cluster, one ingress
replica and one replica of the model's deployment), where the reload is staged on the
scorer replica and every ingress replica switches at one agreed time.

Writes benchmarks/results/live_reload.json (``--ray``: live_reload_ray.json).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import signal
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

from tests.models import save_minilm_head  # noqa: E402

ADMIN = {"authorization": "Bearer adm"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start(config: Path, ray: bool) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "REFEREE_SERVER__LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "referee.cli", "serve", "--port", str(port), "--config", str(config),
         *(["--ray"] if ray else [])],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit("server exited during start-up")
        time.sleep(0.1)
    raise SystemExit("server not ready in 300 s")


async def run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    head_a = save_minilm_head(work / "a", "sequence", 1, seed=0)
    head_b = save_minilm_head(work / "b", "sequence", 1, seed=1)
    config = {
        "server": {"admin_api_keys": ["adm"], "request_timeout_s": 120},
        "cache": {"backend": "none"},
        "scorers": {"rm": {"kind": "classifier", "options": {"model": str(head_a), "input": "pair"}}},
        "pipelines": {"rm": {"reward": "rm"}},
    }  # fmt: skip
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    items = [{"id": f"i{i}", "prompt": f"What is {i} + {i}?", "response": f"It is {2 * i}. " * (1 + i % 5)}
             for i in range(args.items)]  # fmt: skip
    proc, url = start(work / "config.yaml", args.ray)
    records: list[tuple[float, float, int, str | None, list[float] | None]] = []
    switches: list[int] = []  # how often each client saw the version change
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            first = (
                await client.post("/v1/rewards", json={"pipeline": "rm", "items": items})
            ).json()
            version_a, values_a = first["pipeline_version"], [r["reward"] for r in first["results"]]
            stop = asyncio.Event()

            async def load() -> None:
                seen: list[str | None] = []
                while not stop.is_set():
                    sent = time.perf_counter()
                    r = await client.post("/v1/rewards", json={"pipeline": "rm", "items": items})
                    body = r.json() if r.status_code == 200 else None
                    records.append((sent, time.perf_counter(), r.status_code,
                                    body and body["pipeline_version"],
                                    body and [x["reward"] for x in body["results"]]))  # fmt: skip
                    seen.append(body and body["pipeline_version"])
                switches.append(sum(a != b for a, b in itertools.pairwise(seen)))

            workers = [asyncio.create_task(load()) for _ in range(args.clients)]
            await asyncio.sleep(args.steady_s)
            called = time.perf_counter()
            reload = await client.post("/v1/admin/scorers/rm/reload", headers=ADMIN,
                                       json={"options": {"model": str(head_b)}})  # fmt: skip
            answered = time.perf_counter()
            assert reload.status_code == 200, reload.text
            version_b = reload.json()["pipelines"]["rm"]
            await asyncio.sleep(args.steady_s)
            stop.set()
            await asyncio.gather(*workers)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)

    steady = [done - sent for sent, done, *_ in records if done < called]
    # in flight at some moment between the call and its answer
    during = [done - sent for sent, done, *_ in records if sent <= answered and done >= called]
    first_b = min((done for _, done, _, v, _ in records if v == version_b), default=None)
    values_b = next(r for _, _, _, v, r in records if v == version_b)

    def matches(values: list[float], expected: list[float]) -> bool:
        return all(abs(x - y) <= 1e-5 for x, y in zip(values, expected, strict=True))

    mixed = sum(
        1 for *_, v, r in records
        if r is not None and not matches(r, values_a if v == version_a else values_b)
    )  # fmt: skip
    return {
        "mode": "ray" if args.ray else "embedded",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "clients": args.clients,
        "items_per_request": args.items,
        "requests": len(records),
        "failed_requests": sum(1 for _, _, status, *_ in records if status != 200),
        "mixed_version_responses": mixed,
        "version_changes_seen_per_client": switches,
        "steady_p50_s": percentile(steady, 0.5),
        "steady_p99_s": percentile(steady, 0.99),
        "during_reload_requests": len(during),
        "during_reload_p50_s": percentile(during, 0.5) if during else None,
        "during_reload_p99_s": percentile(during, 0.99) if during else None,
        "reload_call_s": answered - called,
        "call_to_first_new_version_reward_s": None if first_b is None else first_b - called,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--steady-s", type=float, default=20.0)
    parser.add_argument("--ray", action="store_true", help="serve on a local Ray cluster")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / f"live_reload{'_ray' if args.ray else ''}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
