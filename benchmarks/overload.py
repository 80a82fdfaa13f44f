"""Overload: offer 4x a server's measured capacity and check that it sheds instead of
collapsing (issue 13, finding 2).

    .venv/bin/python benchmarks/overload.py [--scenarios rules,rules-2workers,model]
        [--capacity-s 15] [--overload-s 30] [--factor 4] [--deadline-s 10]

For each scenario: start `referee serve` (cache off, request_timeout_s = the deadline),
measure capacity closed-loop (``--clients`` senders, requests/s answered 200), then send
open-loop arrivals (Poisson) at ``--factor`` x capacity for ``--overload-s`` seconds and
record every request. Reported: goodput (200s within the deadline per second) over
capacity, p50/p99 of accepted requests against the deadline, rejection latency (429/503),
the share of rejections with Retry-After, peak resident memory of the server's process
tree, and wrong rewards: every returned reward is checked against its known right value.

- rules: 64 items a request (~2 KB each) through format + exact-match + overlong rules,
  a pipeline whose cost is the gateway's own per-item work on the event loop. Items are
  built from templates whose reward is known (computed once in-process, and checked not to
  depend on the unique number each item carries so that no two items are alike).
- rules-2workers: the same with ``server.workers: 2``.
- model: ``--model-per-request`` items a request through the all-MiniLM-L6-v2 classifier (tests/models.py);
  right values come from scoring every accepted item again in-process afterwards.
Client: benchmarks/_http_client.py, a minimal HTTP/1.1 client on asyncio streams (httpx costs more CPU per request
than the server's rejections, and shares the same cores). Writes results/overload.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from _http_client import Client  # noqa: E402
from model_throughput import classifier_config  # noqa: E402
from referee.config import load_settings  # noqa: E402
from referee.engine import RewardEngine  # noqa: E402
from referee_client.schema import RewardRequest  # noqa: E402
from rule_throughput import children, percentile, rss_mb, start_server, stop  # noqa: E402

RULES = {
    "scorers": {
        "fmt": {"kind": "format", "options": {"mode": "think_answer"}},
        "exact": {"kind": "match", "options": {"mode": "normalized",
                                               "extract": "<answer>(.*?)</answer>"}},
        "overlong": {"kind": "length", "options": {"mode": "overlong", "unit": "chars",
                                                   "max_length": 16000, "buffer_length": 4000}},
    },
    "pipelines": {"rules": {"reward": {"type": "mean", "inputs": ["fmt", "exact", "overlong"]}}},
    "cache": {"backend": "none"},
}  # fmt: skip
WORDS = ("we compute the value then substitute into the equation so that both sides "
         "agree and check the remaining case carefully before simplifying").split()  # fmt: skip


# -- workloads ------------------------------------------------------------------------------
def rule_templates() -> list[dict[str, str]]:
    """Items with a placeholder @N@ (a unique number) that no rule reads the value of."""
    rng = random.Random(7)
    out = []
    for t in range(32):
        thinking = " ".join(rng.choice(WORDS) for _ in range(rng.randint(150, 400)))
        answer, right = str(rng.randint(2, 999)), rng.random() < 0.5
        formatted = rng.random() < 0.8
        body = f"<think>step @N@: {thinking}</think><answer>{answer}</answer>"
        if not formatted:
            body = f"step @N@: {thinking} answer {answer}"
        out.append({"id": "@N@", "prompt": f"task {t}", "response": body,
                    "reference": answer if right else str(int(answer) + 1)})  # fmt: skip
    return out


async def expected_rule_rewards(templates: list[dict[str, str]]) -> list[float]:
    engine = RewardEngine(load_settings(data=RULES, environ={}))
    await engine.start()
    try:
        per_marker = []
        for marker in ("1", "987654321"):
            items = [{**t, "id": str(i), "response": t["response"].replace("@N@", marker)}
                     for i, t in enumerate(templates)]  # fmt: skip
            response = await engine.score(RewardRequest(pipeline="rules", items=items))
            per_marker.append([r.reward for r in response.results])
    finally:
        await engine.close()
    assert per_marker[0] == per_marker[1], "a rule reads the item's unique number"
    assert all(r is not None for r in per_marker[0])
    return [float(r) for r in per_marker[0] if r is not None]


def model_item(n: int) -> dict[str, str]:
    rng = random.Random(n)
    words = min(120, max(3, int(rng.lognormvariate(3.2, 0.7))))
    return {"id": str(n), "prompt": f"Question {n}: add {n} and 7.",
            "response": " ".join(rng.choice(WORDS) for _ in range(words))}  # fmt: skip


@dataclass
class Workload:
    pipeline: str
    per_request: int
    deadline_s: float
    templates: list[bytes] = field(default_factory=list)  # rules: JSON with @N@
    expected: list[float] = field(default_factory=list)
    sent_items: dict[str, dict[str, str]] = field(default_factory=dict)  # model

    def body(self, k: int) -> tuple[bytes, list[int]]:
        numbers = list(range(k * self.per_request, (k + 1) * self.per_request))
        if self.templates:
            parts = [self.templates[n % len(self.templates)].replace(b"@N@", str(n).encode())
                     for n in numbers]  # fmt: skip
        else:
            parts = [json.dumps(model_item(n)).encode() for n in numbers]
        head = json.dumps({"pipeline": self.pipeline, "options": {
            "timeout_s": self.deadline_s, "return_components": False}})[:-1]  # fmt: skip
        return head.encode() + b', "items": [' + b",".join(parts) + b"]}", numbers


# -- requests and their outcomes ---------------------------------------------------------------
@dataclass
class Outcome:
    sent: float
    seconds: float
    status: int
    retry_after: bool = False
    reason: str = ""  # of a refusal: the start of its message
    rewards: list[float | None] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    at: float = 0.0  # when it was sent (time.perf_counter)


async def one(client: Client, work: Workload, k: int, t0: float) -> Outcome:
    body, numbers = work.body(k)
    sent = time.perf_counter()
    try:
        status, headers, payload = await client.post(body)
    except (OSError, asyncio.IncompleteReadError) as exc:
        return Outcome(sent - t0, time.perf_counter() - sent, 0, reason=type(exc).__name__)
    out = Outcome(sent - t0, time.perf_counter() - sent, status, "retry-after" in headers)
    out.at = sent
    if status == 200:
        out.rewards = [r["reward"] for r in json.loads(payload)["results"]]
        out.numbers = numbers
    elif payload.startswith(b"{"):
        out.reason = " ".join(json.loads(payload)["error"]["message"].split()[:5])
    return out


async def closed_loop(client: Client, work: Workload, clients: int, seconds: float,
                      start_k: int) -> tuple[list[Outcome], int]:  # fmt: skip
    outcomes: list[Outcome] = []
    counter = iter(range(start_k, 10**9))
    t0 = time.perf_counter()

    async def sender() -> None:
        while time.perf_counter() - t0 < seconds:
            outcomes.append(await one(client, work, next(counter), t0))

    await asyncio.gather(*(sender() for _ in range(clients)))
    return outcomes, next(counter)


async def open_loop(client: Client, work: Workload, rate: float, seconds: float,
                    start_k: int) -> list[Outcome]:  # fmt: skip
    rng = random.Random(11)
    tasks: list[asyncio.Task[Outcome]] = []
    t0 = time.perf_counter()
    due = 0.0
    k = start_k
    while due < seconds:
        delay = t0 + due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(client, work, k, t0)))
        k += 1
        due += rng.expovariate(rate)
    return list(await asyncio.gather(*tasks))


# -- a scenario ------------------------------------------------------------------------------
def tree_rss_mb(pid: int) -> float:
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += rss_mb(p)
        except OSError:
            continue
        todo.extend(children(p))
    return total


async def sample_rss(pid: int, peak: list[float], stop_event: asyncio.Event) -> None:
    while not stop_event.is_set():
        peak[0] = max(peak[0], await asyncio.to_thread(tree_rss_mb, pid))
        await asyncio.sleep(0.25)


async def server_loop_lag(host: str, port: int) -> dict[str, float]:
    """Share of the server's 10 ms loop-timer samples that ran more than N ms late."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    buckets = {}
    for line in text.splitlines():
        if line.startswith("referee_event_loop_lag_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets[le] = float(line.rsplit(" ", 1)[1])
    total = buckets.get("+Inf", 0.0) or 1.0
    return {f"{float(le) * 1000:g}": round(1 - n / total, 4) for le, n in buckets.items()
            if le in ("0.025", "0.05", "0.1", "0.5", "1.0")}  # fmt: skip


async def client_lag(lags: list[tuple[float, float]], stop_event: asyncio.Event) -> None:
    """The load generator's own event-loop lag, (when, lag): what it adds to the
    latencies it measures around that moment."""
    while not stop_event.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        lags.append((now, now - t - 0.01))


def client_stalled(o: Outcome, lags: list[tuple[float, float]], budget_s: float) -> bool:
    """Whether the load generator's own loop stalled, while ``o`` was out, for at least
    the part of its latency over ``budget_s`` (then the excess is the client's)."""
    excess = o.seconds - budget_s
    return any(o.at <= when <= o.at + o.seconds + 0.01 and lag >= excess for when, lag in lags)


async def drive(url: str, pid: int, work: Workload, args: argparse.Namespace) -> dict[str, object]:
    host, port = url.removeprefix("http://").split(":")
    client = Client(host, int(port))
    for k in range(4):  # warm-up
        await one(client, work, 10**8 + k, 0.0)
    capacity_runs, k = await closed_loop(client, work, args.clients, args.capacity_s, 0)
    ok = [o for o in capacity_runs if o.status == 200]
    capacity = len(ok) / args.capacity_s
    baseline = tree_rss_mb(pid)
    peak, done = [baseline], asyncio.Event()
    lags: list[tuple[float, float]] = []
    sampler = asyncio.create_task(sample_rss(pid, peak, done))
    lagger = asyncio.create_task(client_lag(lags, done))
    outcomes = await open_loop(client, work, args.factor * capacity, args.overload_s, k)
    done.set()
    await sampler
    await lagger
    server_lag = await server_loop_lag(host, int(port))
    await asyncio.sleep(2.0)  # answered or timed out: the backlog is gone
    after, _ = await closed_loop(client, work, args.clients, args.capacity_s, 10**7)
    capacity_after = sum(o.status == 200 for o in after) / args.capacity_s
    accepted = [o for o in outcomes if o.status == 200]
    rejected = [o for o in outcomes if o.status in (429, 503)]
    in_time = [o for o in accepted if o.seconds <= work.deadline_s]
    statuses: dict[str, int] = {}
    reasons: dict[str, list[float]] = {}
    for o in outcomes:
        statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
        if o.status != 200:
            reasons.setdefault(f"{o.status} {o.reason}", []).append(o.seconds)
    checked = [(o, n, r) for o in accepted for n, r in zip(o.numbers, o.rewards, strict=True)]
    wrong = await count_wrong(work, [(n, r) for _, n, r in checked])
    seconds = [o.seconds for o in accepted] or [float("nan")]
    rejections = [o.seconds for o in rejected] or [float("nan")]
    return {
        "capacity_rps": capacity, "capacity_items_per_s": capacity * work.per_request,
        "capacity_after_overload_rps": capacity_after,
        "capacity_p50_s": percentile([o.seconds for o in ok], 0.5),
        "offered_rps": len(outcomes) / args.overload_s, "requests": len(outcomes),
        "statuses": statuses,
        "by_reason_count_p50_ms_max_ms": {k: [len(v), round(1000 * percentile(v, 0.5), 1),
                                              round(1000 * max(v), 1)] for k, v in reasons.items()},
        "goodput_rps": len(in_time) / args.overload_s,
        "goodput_over_capacity": len(in_time) / args.overload_s / capacity,
        "deadline_s": work.deadline_s,
        "accepted_p50_s": percentile(seconds, 0.5), "accepted_p99_s": percentile(seconds, 0.99),
        "accepted_max_s": max(seconds), "accepted_over_deadline": len(accepted) - len(in_time),
        "rejection_p50_ms": 1000 * percentile(rejections, 0.5),
        "rejection_p99_ms": 1000 * percentile(rejections, 0.99),
        "rejection_p999_ms": 1000 * percentile(rejections, 0.999),
        "rejection_max_ms": 1000 * max(rejections),
        "rejections_over_50ms": len(slow := [o for o in rejected if o.seconds > 0.05]),
        "of_which_while_the_client_stalled": sum(client_stalled(o, lags, 0.05) for o in slow),
        "rejections_with_retry_after": sum(o.retry_after for o in rejected),
        "client_loop_lag_p50_ms": 1000 * percentile([lag for _, lag in lags], 0.5),
        "client_loop_lag_p99_ms": 1000 * percentile([lag for _, lag in lags], 0.99),
        "client_loop_lag_max_ms": 1000 * max(lag for _, lag in lags),
        "server_loop_lag_share_over_ms": server_lag,
        "rss_mb_before_overload": baseline, "rss_mb_peak_during_overload": peak[0],
        "rewards_checked": len(checked), "wrong_rewards": wrong,
        "failed_items_no_reward": sum(r is None for _, _, r in checked),
    }  # fmt: skip


async def count_wrong(work: Workload, got: list[tuple[int, float | None]]) -> int:
    """Rewards that differ from the right value (a missing reward is not counted here)."""
    if work.expected:
        return sum(r is not None and abs(r - work.expected[n % len(work.expected)]) > 1e-9
                   for n, r in got)  # fmt: skip
    settings = load_settings(work.sent_items["config"], environ={})  # type: ignore[arg-type]
    engine = RewardEngine(settings)
    await engine.start()
    wrong = 0
    try:
        for start in range(0, len(got), 256):
            chunk = got[start : start + 256]
            items = [model_item(n) for n, _ in chunk]
            response = await engine.score(RewardRequest(pipeline=work.pipeline, items=items),
                                          enforce_limits=False)  # fmt: skip
            for (_, r), right in zip(chunk, response.results, strict=True):
                if r is not None and (right.reward is None or abs(r - right.reward) > 1e-3):
                    wrong += 1
    finally:
        await engine.close()
    return wrong


def scenario(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    env = {"REFEREE_SERVER__REQUEST_TIMEOUT_S": str(args.deadline_s),
           "REFEREE_SERVER__LOG_LEVEL": "warning"}  # fmt: skip
    env.update(item.split("=", 1) for item in args.server_env)
    if args.server_code:  # e.g. /work/main: the same run against another checkout's server
        root = Path(args.server_code).resolve()
        env["PYTHONPATH"] = f"{root / 'service'}:{root / 'clients'}:{root}"
    if name.startswith("rules"):
        templates = rule_templates()
        expected = asyncio.run(expected_rule_rewards(templates))
        config: dict[str, object] = RULES
        work = Workload("rules", 64, args.deadline_s,
                        [json.dumps(t).encode() for t in templates], expected)  # fmt: skip
        if name == "rules-2workers":
            env["REFEREE_SERVER__WORKERS"] = "2"
    else:
        from tests.models import save_minilm_head

        model_dir = save_minilm_head(tmp / "rm", "sequence", num_labels=1)
        config = classifier_config(model_dir)
        work = Workload("rm", args.model_per_request, args.model_deadline_s)
        env["REFEREE_SERVER__REQUEST_TIMEOUT_S"] = str(args.model_deadline_s)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    work.sent_items = {"config": str(path)}  # type: ignore[dict-item]
    proc, url, _ = start_server(path, env)
    try:
        result = asyncio.run(drive(url, proc.pid, work, args))
    finally:
        stop(proc)
    result["server_env"] = env
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="rules,rules-2workers,model")
    parser.add_argument("--capacity-s", type=float, default=15.0)
    parser.add_argument("--overload-s", type=float, default=30.0)
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--deadline-s", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--model-per-request", type=int, default=8)
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server, e.g. REFEREE_SERVER__...",
    )
    parser.add_argument("--model-deadline-s", type=float, default=20.0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "overload.json"))
    parser.add_argument(
        "--server-code",
        default="",
        metavar="CHECKOUT",
        help="run the server from another checkout (a before/after comparison)",
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    tmp = Path(tempfile.mkdtemp())
    result: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average at start {os.getloadavg()[0]:.1f}",
        "args": vars(args),
    }
    for name in args.scenarios.split(","):
        result[name] = scenario(name, args, tmp)
        print(name, json.dumps(result[name], indent=1), flush=True)
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
