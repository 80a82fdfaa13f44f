"""The same model scorer on Ray Serve with 1 and 2 replicas, and the Ray path against the
embedded server at equal work.

    .venv/bin/python benchmarks/ray_replicas.py [--items 1200] [--clients 8] [--per-request 32]

Ray gets 4 logical CPUs; the scorer replicas reserve the machine's cores between them
(Ray sets a worker's OMP_NUM_THREADS to its num_cpus, so 1 replica gets 2 torch threads,
2 replicas 1 each), the ingress one more. Model: the MiniLM-backed classifier of benchmarks/model_throughput.py (a fresh 1-logit
head on all-MiniLM-L6-v2), the same long-tailed workload, cache off. Three runs: the
embedded `referee serve`, then a local Ray cluster (num_cpus = this machine's cores) with
the scorer deployment at 1 replica and at 2 replicas, each behind one ingress replica.
On a CPU box the replicas share the same cores, so 2 replicas measure the cost of the
extra hop and the scheduling, not added compute; on GPU nodes each replica has its own.
Where the time goes: during each measured run, the CPU seconds of every process on the
machine are taken before and after (psutil) and summed by role (the embedded server; Ray's
HTTP proxy, the ingress replica, the scorer replicas, Ray's own processes; the load
generator), reported as CPU milliseconds per item. On a machine whose cores are all busy,
throughput is about cores / (CPU per item), so the split says what each hop costs.
Writes benchmarks/results/ray_replicas.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from tests.models import save_minilm_head  # noqa: E402

from model_throughput import classifier_config, drive, make_items  # noqa: E402
from rule_throughput import start_server, stop  # noqa: E402


def _role(proc: psutil.Process, server_pid: int | None) -> str | None:
    try:
        if proc.pid == os.getpid():
            return "load generator"
        if proc.pid == server_pid:
            return "embedded server"
        line = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    for marker, role in (("scorer-", "scorer replicas"), ("ingress", "ingress replica"),
                         ("ProxyActor", "Ray HTTP proxy"), ("ServeController", "Serve controller"),
                         ("groups", "group owner")):  # fmt: skip
        if marker in line and ("ServeReplica" in line or "ray::" in line):
            return role
    if "ray" in line and ("raylet" in line or "gcs_server" in line or "ray/" in line):
        return "Ray system (raylet, GCS, agents)"
    return None


def _cpu(server_pid: int | None) -> dict[int, tuple[str, float]]:
    """This benchmark's processes only (its own, the server and the local Ray cluster it
    started are its descendants): other work on the machine is not counted."""
    out = {}
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        role = _role(proc, server_pid)
        if role is None:
            continue
        try:
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        out[proc.pid] = (role, times.user + times.system)
    return out


def measured(run: Callable[[], dict[str, float]], items: int,
             server_pid: int | None = None) -> dict[str, object]:  # fmt: skip
    """``run()``'s result, and the CPU milliseconds per item each role spent during it."""
    before = _cpu(server_pid)
    result: dict[str, object] = dict(run())
    after = _cpu(server_pid)
    split: dict[str, float] = {}
    for pid, (role, seconds) in after.items():
        spent = seconds - before.get(pid, (role, 0.0))[1]
        split[role] = split.get(role, 0.0) + 1000 * spent / items
    result["cpu_ms_per_item"] = {k: round(v, 3) for k, v in sorted(split.items())}
    result["cpu_ms_per_item_serving"] = round(
        sum(v for k, v in split.items() if k != "load generator"), 3
    )
    return result


def on_ray(config: dict[str, object], items: list[dict[str, str]], replicas: int, clients: int,
           per_request: int) -> dict[str, object]:  # fmt: skip
    import ray
    from ray import serve

    from referee.ray import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Logical CPUs for scheduling: every replica (2 scorer + 1 ingress) asks for one; they
    # share the machine's real cores.
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # Ray sets a worker's OMP_NUM_THREADS to its num_cpus: the replicas together get the
        # machine's cores for torch, as the embedded server's one model does.
        cpus = max(1, (os.cpu_count() or 2) // replicas)
        deployment = {"num_replicas": replicas, "ray_actor_options": {"num_cpus": cpus}}
        app = build_app({"config": config, "scorers": {"rm": deployment}})
        serve.run(app, name="referee", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the Ray app was not ready in 300 s")
            time.sleep(0.5)
        asyncio.run(drive(url, "/v1/rewards", items[:64], clients, per_request, "rm"))  # warm
        return measured(
            lambda: asyncio.run(drive(url, "/v1/rewards", items, clients, per_request, "rm")),
            len(items),
        )
    finally:
        serve.shutdown()
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-request", type=int, default=32)
    args = parser.parse_args()
    items = make_items(args.items)
    tmp = Path(tempfile.mkdtemp())
    config = classifier_config(save_minilm_head(tmp / "rm", "sequence", num_labels=1))
    # a closed loop of 8 clients is never overload: a long deadline keeps admission control
    # from refusing requests when other work on the machine slows the model down
    config["server"] = {"request_timeout_s": 600}
    (tmp / "rm.yaml").write_text(yaml.safe_dump(config))
    result: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "workload": {"items": args.items, "clients": args.clients, "per_request": args.per_request},
    }  # fmt: skip
    proc, url, _ = start_server(tmp / "rm.yaml")
    try:
        asyncio.run(drive(url, "/v1/rewards", items[:64], args.clients, args.per_request, "rm"))
        result["embedded"] = measured(
            lambda: asyncio.run(
                drive(url, "/v1/rewards", items, args.clients, args.per_request, "rm")
            ),
            len(items),
            proc.pid,
        )
    finally:
        stop(proc)
    print("embedded", result["embedded"], flush=True)
    for replicas in (1, 2):
        result[f"ray_{replicas}_replicas"] = on_ray(
            config, items, replicas, args.clients, args.per_request
        )
        print(replicas, result[f"ray_{replicas}_replicas"], flush=True)
    embedded = result["embedded"]["items_per_s"]  # type: ignore[index]
    one = result["ray_1_replicas"]["items_per_s"]  # type: ignore[index]
    two = result["ray_2_replicas"]["items_per_s"]  # type: ignore[index]
    result["ray_1_over_embedded"] = one / embedded
    result["ray_2_over_1"] = two / one
    out = Path(__file__).parent / "results" / "ray_replicas.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ray_1_over_embedded", "ray_2_over_1")}))


if __name__ == "__main__":
    main()
