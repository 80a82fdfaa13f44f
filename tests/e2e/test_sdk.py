"""The SDK (sync and async, HTTP and gRPC) against a real `referee serve` subprocess:
scoring, submit, streaming, chunking, auth, retries on the server's real overload and
start-up paths (counted server-side in /metrics), no retries on 4xx, timeouts."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from referee_client import (
    APIConnectionError,
    APITimeoutError,
    AsyncRewardClient,
    AuthenticationError,
    GatewayTimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    RewardClient,
)
from tests.e2e.server import free_port, running_server

KEY = "sdk-test-key"
CONFIG = f"""
server: {{api_keys: [{KEY}], max_items_per_request: 500, max_text_chars: 5000, max_request_bytes: 200000, shutdown_grace_s: 1}}
scorers:
  fmt: {{kind: format, options: {{mode: think_answer}}}}
  exact: {{kind: match, options: {{mode: normalized, extract: "<answer>(.*?)</answer>"}}}}
  meta: {{kind: python, options: {{function: "tests.probes:metadata_value"}}}}
  queued:
    kind: python
    options: {{function: "tests.probes:gated_reward"}}
    batching: {{max_batch_size: 1, max_concurrent_batches: 1, max_queue_items: 2, max_wait_ms: 0}}
  sleepy:
    kind: python
    options: {{function: "tests.probes:slow_reward", kwargs: {{delay_s: 5}}}}
pipelines:
  default:
    reward: {{type: weighted_sum, weights: [1.0], inputs: [{{type: gate, when: {{node: fmt, value: 1}}, then: exact}}]}}
  meta: {{reward: meta}}
  grpo: {{reward: {{type: scorer, scorer: meta, transforms: [{{type: group_norm}}]}}}}
  queued: {{reward: queued}}
  sleepy: {{reward: sleepy}}
"""
TRANSPORTS = ["http", "grpc"]


class Server:
    def __init__(self, http: str, grpc_port: int) -> None:
        self.http = http
        self.grpc = f"grpc://127.0.0.1:{grpc_port}"

    def url(self, transport: str) -> str:
        return self.http if transport == "http" else self.grpc

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a counter's samples whose labels include ``labels``."""
        text = httpx.get(f"{self.http}/metrics").text
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
            if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
                total += float(match.group(2))
        return total

    def served(self, transport: str, pipeline: str, outcome: str) -> float:
        """Requests answered for a pipeline: HTTP by status, gRPC (Score) by code."""
        if transport == "http":
            return self.metric("referee_requests_total", pipeline=pipeline, status=outcome)
        code = {"200": "OK", "429": "RESOURCE_EXHAUSTED", "503": "UNAVAILABLE",
                "404": "NOT_FOUND", "413": "INVALID_ARGUMENT"}[outcome]  # fmt: skip
        return self.metric(
            "referee_grpc_requests_total", method="Score", pipeline=pipeline, code=code
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = tmp_path_factory.mktemp("sdk") / "sdk.yaml"
    config.write_text(CONFIG)
    grpc_port = free_port()
    with running_server("--config", str(config), "--grpc-port", str(grpc_port)) as (url, _):
        yield Server(url, grpc_port)


def formatted(answer: str) -> str:
    return f"<think>t</think><answer>{answer}</answer>"


def meta_items(n: int, prefix: str = "m") -> list[dict[str, object]]:
    return [{"id": f"{prefix}{i}", "response": f"r{i}", "metadata": {"score": i}} for i in range(n)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sync_client_scores_submits_and_reports_errors(server: Server, transport: str) -> None:
    items = [
        {"id": "right", "response": formatted("42"), "reference": "42"},
        {"id": "wrong", "response": formatted("41"), "reference": "42"},
        {"id": "unformatted", "response": "42", "reference": "42"},
    ]
    with RewardClient(server.url(transport), api_key=KEY) as client:
        response = client.score(items)
        assert [r.id for r in response.results] == ["right", "wrong", "unformatted"]
        assert [r.reward for r in response.results] == [1.0, 0.0, 0.0]
        assert response.usage.items == 3 and response.pipeline == "default"
        future = client.submit(meta_items(3), pipeline="meta")
        assert [r.reward for r in future.result(timeout=30).results] == [0.0, 1.0, 2.0]
        # a per-item error is that item's, not the call's
        mixed = client.score([{"id": "ok", "response": "x", "metadata": {"score": 2}},
                              {"id": "bad", "response": "x"}], pipeline="meta")  # fmt: skip
        assert mixed.results[0].reward == 2.0
        assert mixed.results[1].reward is None and mixed.results[1].error is not None
        with pytest.raises(NotFoundError, match="unknown pipeline 'nope'") as info:
            client.score(items, pipeline="nope")
        assert info.value.status_code == 404 and info.value.param == "pipeline"
    with RewardClient(server.url(transport), api_key="wrong") as client:
        with pytest.raises(AuthenticationError, match="invalid API key"):
            client.score(items)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_async_client_scores_submits_and_streams(server: Server, transport: str) -> None:
    async with AsyncRewardClient(server.url(transport), api_key=KEY) as client:
        task = client.submit(meta_items(4), pipeline="meta")
        response = await client.score(
            [{"id": f"g{i}", "response": "x", "group": "p", "metadata": {"score": s}}
             for i, s in enumerate([1, 1, 0, 0])], pipeline="grpo",
        )  # fmt: skip
        assert [r.reward for r in response.results] == pytest.approx(
            [0.866025, 0.866025, -0.866025, -0.866025], abs=1e-5
        )
        assert [r.reward for r in (await task).results] == [0.0, 1.0, 2.0, 3.0]
        limits = await client.limits()
        assert limits is not None and limits.max_items_per_request == 500
        async with client.stream(pipeline="meta") as stream:
            await stream.send(meta_items(5, "s"))
            await stream.send({"id": "lone", "response": "x", "metadata": {"score": 9}})
            await stream.close_send()
            got = {r.id: r.reward async for r in stream}
        assert got == {"s0": 0.0, "s1": 1.0, "s2": 2.0, "s3": 3.0, "s4": 4.0, "lone": 9.0}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stream_of_1000_items_pushed_at_random_answers_every_id_exactly_once(
    server: Server, transport: str
) -> None:
    rng = random.Random(7)
    expected = {f"x{i}": float(rng.randint(0, 100)) for i in range(1000)}
    ids = list(expected)
    async with AsyncRewardClient(server.url(transport), api_key=KEY) as client:
        async with client.stream(pipeline="meta") as stream:

            async def produce() -> None:
                i = 0
                while i < len(ids):
                    size = rng.randint(1, 8)
                    batch = [{"id": k, "response": k, "metadata": {"score": expected[k]}}
                             for k in ids[i : i + size]]  # fmt: skip
                    await stream.send(batch)
                    i += size
                    await asyncio.sleep(rng.random() * 0.004)
                await stream.close_send()

            producer = asyncio.create_task(produce())
            answered: list[tuple[str, float | None]] = []
            async for result in stream:
                assert result.error is None, result.error
                answered.append((result.id, result.reward))
            await producer
    assert len(answered) == 1000
    assert dict(answered) == expected  # every id once, with its own reward


def test_sync_stream_over_grpc_answers_as_results_arrive(server: Server) -> None:
    with RewardClient(server.grpc, api_key=KEY) as client, client.stream(pipeline="meta") as stream:
        stream.send(meta_items(3, "a"))
        stream.send({"id": "bad", "response": "no score"})
        stream.close_send()
        results = {r.id: r for r in stream}
    assert {k: r.reward for k, r in results.items() if k != "bad"} == {
        "a0": 0.0,
        "a1": 1.0,
        "a2": 2.0,
    }
    assert results["bad"].error is not None and "no 'score'" in results["bad"].error.message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_10000_item_call_is_split_under_the_server_limit(server: Server, transport: str) -> None:
    before = server.served(transport, "meta", "200")
    items = [{"id": f"c{i}", "response": "x", "metadata": {"score": i % 97}} for i in range(10_000)]
    with RewardClient(server.url(transport), api_key=KEY, max_concurrency=4) as client:
        response = client.score(items, pipeline="meta")
    assert [r.id for r in response.results] == [f"c{i}" for i in range(10_000)]
    assert [r.reward for r in response.results] == [float(i % 97) for i in range(10_000)]
    assert response.usage.items == 10_000
    assert server.served(transport, "meta", "200") - before == 20  # 10,000 / 500 per request


async def _fill_queue(server: Server, tag: str, gate: Path) -> asyncio.Task[httpx.Response]:
    """Three distinct items that wait for ``gate`` (one at a time, queue limit 2): the
    queue stays full until the test creates the gate file, so the next request is
    refused with 429 (Retry-After: 1) for as long as the test wants."""
    client = httpx.AsyncClient(base_url=server.http, headers={"x-api-key": KEY}, timeout=60)
    body = {
        "pipeline": "queued",
        "items": [{"id": str(i), "response": f"{tag} {i}", "metadata": {"gate": str(gate)}}
                  for i in range(3)],
    }  # fmt: skip
    task = asyncio.create_task(client.post("/v1/rewards", json=body))
    task.add_done_callback(lambda _: asyncio.ensure_future(client.aclose()))
    await _until(lambda: server.metric("referee_queue_depth", scorer="queued") >= 2)
    return task


async def _until(condition: Callable[[], bool], within_s: float = 20) -> float:
    """Poll ``condition`` until it holds; the moment it was seen to hold."""
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)
    return time.monotonic()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_overload_429_is_retried_after_retry_after(
    server: Server, transport: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    refused = server.served(transport, "queued", "429")
    filler = await _fill_queue(server, f"fill-{transport}", gate)
    async with AsyncRewardClient(server.url(transport), api_key=KEY, max_retries=4) as client:
        late = asyncio.create_task(client.score(
            {"id": "late", "response": f"late {transport}", "metadata": {"gate": str(gate)}},
            pipeline="queued",
        ))  # fmt: skip
        first = await _until(lambda: server.served(transport, "queued", "429") - refused >= 1)
        second = await _until(lambda: server.served(transport, "queued", "429") - refused >= 2)
        # the server's Retry-After is 1 s; the SDK's own first backoff is at most 0.5 s
        assert second - first > 0.8
        gate.touch()  # the queue drains; the next retry is accepted
        response = await asyncio.wait_for(late, 30)
    assert response.results[0].reward == 2.0
    assert (await filler).status_code == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_4xx_errors_are_not_retried(server: Server, transport: str) -> None:
    missing = server.served(transport, "?", "404")
    too_long = server.served(transport, "default", "413")
    with RewardClient(server.url(transport), api_key=KEY, max_retries=5) as client:
        with pytest.raises(NotFoundError):
            client.score({"id": "a", "response": "x"}, pipeline="nope")
        with pytest.raises(PayloadTooLargeError, match="the limit is 5000") as info:
            client.score({"id": "a", "response": "x" * 6000})
        assert info.value.param == "items[0].response"
    assert server.served(transport, "?", "404") - missing == 1
    assert server.served(transport, "default", "413") - too_long == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_timeout_is_one_deadline_for_the_whole_call_retries_included(
    server: Server, transport: str
) -> None:
    with RewardClient(server.url(transport), api_key=KEY, max_retries=2) as client:
        started = time.monotonic()
        # the server is told a little less than the call's timeout, so its 504 (retryable)
        # comes first; no time is left for a retry, so the call ends there
        with pytest.raises(GatewayTimeoutError, match=r"did not finish within 0\.[5-8]\d*s"):
            client.score({"id": "s", "response": f"slow {transport}"}, pipeline="sleepy",
                         timeout=1)  # fmt: skip
        assert time.monotonic() - started < 1.5
        # a server-side timeout_s longer than the call's is cut to the call's
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            client.score({"id": "s", "response": f"slower {transport}"}, pipeline="sleepy",
                         options={"timeout_s": 30}, timeout=0.5)  # fmt: skip
        assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_close_fails_calls_in_flight_and_can_be_called_twice(
    server: Server, transport: str
) -> None:
    client = RewardClient(server.url(transport), api_key=KEY)
    future = client.submit({"id": "c", "response": f"closing {transport}"}, pipeline="sleepy")
    time.sleep(0.2)  # in flight
    client.close()
    with pytest.raises(APIConnectionError, match="closed before this call finished"):
        future.result(timeout=5)
    client.close()
    with pytest.raises(RuntimeError, match="client is closed"):
        client.score({"id": "x", "response": "x"})


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_request_over_the_byte_limit_is_a_413_and_never_retried(
    server: Server, transport: str
) -> None:
    with RewardClient(server.url(transport), api_key=KEY, max_retries=3) as client:
        # just over max_request_bytes (the server's own check), and far over it (over
        # gRPC, refused by gRPC itself with a bare RESOURCE_EXHAUSTED)
        for pad in (250_000, 1_500_000):
            started = time.monotonic()
            with pytest.raises(PayloadTooLargeError):
                client.score({"id": "big", "response": "x",
                              "metadata": {"score": 1, "pad": "p" * pad}}, pipeline="meta")  # fmt: skip
            # three retries would sleep at least 0.25 + 0.5 + 1 s
            assert time.monotonic() - started < 1.5, pad


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stream_splits_messages_by_size_and_answers_an_oversized_item_inline(
    server: Server, transport: str
) -> None:
    items = [{"id": f"p{i}", "response": "x", "metadata": {"score": i, "pad": "p" * 15_000}}
             for i in range(20)]  # fmt: skip  # 300 kB in all: over the 200 kB limit
    items.append({"id": "huge", "response": "x", "metadata": {"score": 1, "pad": "p" * 250_000}})
    async with AsyncRewardClient(server.url(transport), api_key=KEY) as client:
        async with client.stream(pipeline="meta") as stream:
            await stream.send(items)
            await stream.close_send()
            results = {r.id: r async for r in stream}
    assert {k: r.reward for k, r in results.items() if k != "huge"} == {
        f"p{i}": float(i) for i in range(20)
    }
    error = results["huge"].error
    assert error is not None and error.type == "payload_too_large", error


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stream_converts_numpy_metadata_and_refuses_other_non_json_without_hanging(
    server: Server, transport: str
) -> None:
    np = pytest.importorskip("numpy")
    async with AsyncRewardClient(server.url(transport), api_key=KEY) as client:
        async with client.stream(pipeline="meta") as stream:
            await stream.send([{"id": "np", "response": "x", "metadata": {"score": np.float32(3)}},
                               {"id": "arr", "response": "x",
                                "metadata": {"score": np.int64(4), "v": np.arange(2)}}])  # fmt: skip
            with pytest.raises(ValueError, match=r"metadata: when is a `object`.*'odd'"):
                await stream.send({"id": "odd", "response": "x", "metadata": {"when": object()}})
            assert stream.pending == 2
            await stream.close_send()

            async def drain() -> dict[str, float | None]:
                return {r.id: r.reward async for r in stream}

            assert await asyncio.wait_for(drain(), 30) == {"np": 3.0, "arr": 4.0}


def test_not_ready_503_at_start_up_is_retried_over_http_and_grpc(tmp_path: Path) -> None:
    """A scorer whose warm-up takes 2 s keeps the server not ready (503 / UNAVAILABLE,
    Retry-After 2) after it starts listening; the SDK waits and gets its rewards."""
    config = tmp_path / "slow-start.yaml"
    config.write_text(
        "scorers:\n  warm: {kind: python, options: {function: 'tests.probes:slow_reward', kwargs: {delay_s: 2}}}\n"
        "pipelines:\n  warm: {reward: warm}\n"
    )
    grpc_port = free_port()
    with running_server("--config", str(config), "--grpc-port", str(grpc_port),
                        ready_path="/healthz") as (url, _):  # fmt: skip
        server = Server(url, grpc_port)
        assert httpx.get(f"{url}/readyz").status_code == 503

        async def both() -> list[float | None]:
            async with (AsyncRewardClient(url, max_retries=3) as h,
                        AsyncRewardClient(server.grpc, max_retries=3) as g):  # fmt: skip
                answers = await asyncio.gather(
                    h.score({"id": "h", "response": "one two"}, pipeline="warm"),
                    g.score({"id": "g", "response": "one two three"}, pipeline="warm"),
                )
            return [a.results[0].reward for a in answers]

        assert asyncio.run(both()) == [2.0, 3.0]
        for transport in TRANSPORTS:
            assert server.served(transport, "warm", "503") >= 1, transport
            assert server.served(transport, "warm", "200") == 1, transport
