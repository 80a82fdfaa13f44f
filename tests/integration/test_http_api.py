"""The HTTP API against a real engine and real rule scorers: results and every error status."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from referee.engine import RewardEngine
from tests.integration.conftest import RULES_CONFIG, formatted, serve_app


def assert_error(response: httpx.Response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == kind
    assert body["error"]["message"]
    return body["error"]


async def test_scores_items_in_order_with_components(client: httpx.AsyncClient) -> None:
    items = [
        {"id": "right", "response": formatted("42"), "reference": "42"},
        {"id": "wrong", "response": formatted("41"), "reference": "42"},
        {"id": "unformatted", "response": "<answer>42</answer>", "reference": "42"},
        {"id": "chat", "messages": [{"role": "user", "content": "6*7?"},
                                    {"role": "assistant", "content": formatted("42")}],
         "reference": 42},
    ]  # fmt: skip
    response = await client.post("/v1/rewards", json={"items": items})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["id"] for r in body["results"]] == ["right", "wrong", "unformatted", "chat"]
    assert [r["reward"] for r in body["results"]] == [1.0, 0.0, 0.0, 1.0]
    assert body["results"][0]["components"]["exact"] == 1.0
    assert body["results"][2]["components"]["fmt"] == 0.0
    assert "exact" not in body["results"][2]["components"]  # gated off, never computed
    assert body["pipeline_version"].startswith("sha256:")
    assert body["usage"] == {"items": 4, "cache_hits": 0, "errors": 0}


async def test_repeat_request_is_served_from_cache(client: httpx.AsyncClient) -> None:
    payload = {"items": [{"id": "a", "response": formatted("1"), "reference": "1"}]}
    first = (await client.post("/v1/rewards", json=payload)).json()
    second = (await client.post("/v1/rewards", json=payload)).json()
    assert first["results"][0]["cached"] is False
    assert second["results"][0]["cached"] is True
    assert second["results"][0]["reward"] == first["results"][0]["reward"]
    assert second["usage"]["cache_hits"] == 3  # fmt, exact, overlong


async def test_per_item_error_leaves_other_items_alone(client: httpx.AsyncClient) -> None:
    items = [
        {"id": "ok", "response": "x", "metadata": {"score": 0.25}},
        {"id": "no-score", "response": "x", "metadata": {}},
        {"id": "nan", "response": "x", "metadata": {"score": "high"}},
        {"id": "ok2", "response": "x", "metadata": {"score": -1}},
    ]
    body = (await client.post("/v1/rewards", json={"pipeline": "meta", "items": items})).json()
    rewards = {r["id"]: r["reward"] for r in body["results"]}
    assert rewards == {"ok": 0.25, "no-score": None, "nan": None, "ok2": -1.0}
    assert "no 'score'" in body["results"][1]["error"]["message"]
    assert body["usage"]["errors"] == 2


async def test_400_malformed_json(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/rewards", content=b'{"items": [', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in assert_error(r, 400, "bad_request")["message"]
    r = await client.post("/v1/rewards", content=b"[1, 2]")
    assert_error(r, 400, "bad_request")


async def test_401_missing_or_wrong_api_key() -> None:
    payload = {"items": [{"id": "a", "response": "x"}]}
    async with serve_app(api_keys=["k-123", "k-456"]) as (client, _):
        r = await client.post("/v1/rewards", json=payload)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        r = await client.post("/v1/rewards", json=payload, headers={"Authorization": "Bearer nope"})
        assert_error(r, 401, "unauthorized")
        r = await client.get("/v1/pipelines", headers={"X-API-Key": "k-12"})
        assert_error(r, 401, "unauthorized")
        ok = await client.post(
            "/v1/rewards", json=payload, headers={"Authorization": "Bearer k-456"}
        )
        assert ok.status_code == 200
        ok = await client.get("/v1/pipelines", headers={"X-API-Key": "k-123"})
        assert ok.status_code == 200
        assert (await client.get("/healthz")).status_code == 200  # probes need no key


async def test_404_unknown_pipeline_and_route(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/rewards", json={"pipeline": "nope", "items": [{"id": "a", "response": "x"}]}
    )
    err = assert_error(r, 404, "not_found")
    assert err["param"] == "pipeline" and "default" in err["message"]
    assert_error(await client.get("/v1/pipelines/nope"), 404, "not_found")
    assert_error(await client.get("/v2/anything"), 404, "not_found")


async def test_405_wrong_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/rewards"), 405, "method_not_allowed")


async def test_413_body_items_and_text_limits() -> None:
    async with serve_app(max_request_bytes=2000, max_items_per_request=3,
                         max_text_chars=100) as (client, _):  # fmt: skip
        big = {"items": [{"id": "a", "response": "x" * 5000}]}
        assert_error(await client.post("/v1/rewards", json=big), 413, "payload_too_large")
        many = {"items": [{"id": str(i), "response": "x"} for i in range(4)]}
        err = assert_error(await client.post("/v1/rewards", json=many), 413, "payload_too_large")
        assert err["param"] == "items"
        long = {"items": [{"id": "a", "response": "ok"}, {"id": "b", "response": "y" * 101}]}
        err = assert_error(await client.post("/v1/rewards", json=long), 413, "payload_too_large")
        assert err["param"] == "items[1].response"


async def test_413_streamed_body_without_content_length() -> None:
    async with serve_app(max_request_bytes=1000) as (client, _):

        async def chunks():
            for _ in range(10):
                yield b" " * 200

        r = await client.post("/v1/rewards", content=chunks())
        assert_error(r, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("payload", "param", "needle"),
    [
        ({"items": []}, "items", "at least 1"),
        ({"items": [{"id": "a"}]}, "items[0]", "response"),
        ({"items": [{"id": "", "response": "x"}]}, "items[0].id", "at least 1"),
        ({"items": [{"id": "a", "response": 5}]}, "items[0].response", "string"),
        ({"items": [{"id": "a", "response": "x", "colour": "red"}]}, "items[0].colour", "Extra"),
        ({"items": [{"id": "a", "messages": [{"role": "user", "content": "hi"}]}]},
         "items[0]", "assistant"),
        ({"items": [{"id": "a", "response": "x"}], "options": {"timeout_s": -1}},
         "options.timeout_s", "greater than"),
        ({"items": [{"id": "a", "response": "x"}, {"id": "b", "response": "y"},
                    {"id": "a", "response": "z"}, {"id": "b", "response": "w"}]},
         None, "duplicated: 'a', 'b'"),
    ],
)  # fmt: skip
async def test_422_schema_errors_name_the_field(
    client: httpx.AsyncClient, payload: dict, param: str | None, needle: str
) -> None:
    err = assert_error(await client.post("/v1/rewards", json=payload), 422, "invalid_request")
    assert err["param"] == param
    assert needle in err["message"]


async def fill_slow_queue(
    client: httpx.AsyncClient, engine: RewardEngine
) -> asyncio.Task[httpx.Response]:
    """Send 4 slow items (one scored at a time, queue limit 4) and wait until 3 are queued."""
    first = asyncio.create_task(client.post("/v1/rewards", json={
        "pipeline": "slow", "items": [{"id": str(i), "response": f"w{i}"} for i in range(4)]}))  # fmt: skip
    while engine.runners["slow"].batcher.depth < 3:
        await asyncio.sleep(0.01)
    return first


async def test_429_when_the_queue_is_full_with_retry_after() -> None:
    async with serve_app() as (client, engine):
        first = await fill_slow_queue(client, engine)
        r = await client.post("/v1/rewards", json={
            "pipeline": "slow", "items": [{"id": "x", "response": "other words"},
                                          {"id": "y", "response": "more words"}]})  # fmt: skip
        assert_error(r, 429, "overloaded")
        assert int(r.headers["retry-after"]) >= 1
        done = await first
        assert done.status_code == 200  # the accepted request is still answered in full
        assert [x["reward"] for x in done.json()["results"]] == [1.0] * 4
        metrics = (await client.get("/metrics")).text
        assert 'referee_overloaded_total{scorer="slow"} 1.0' in metrics


async def test_503_until_ready() -> None:
    async with serve_app(start=False) as (client, _):
        r = await client.post("/v1/rewards", json={"items": [{"id": "a", "response": "x"}]})
        assert_error(r, 503, "not_ready")
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200


async def test_504_on_request_timeout(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/rewards", json={
        "pipeline": "slow", "options": {"timeout_s": 0.05},
        "items": [{"id": "a", "response": "one two"}]})  # fmt: skip
    err = assert_error(r, 504, "timeout")
    assert err["param"] == "options.timeout_s"


async def test_no_500_for_hostile_bodies(client: httpx.AsyncClient) -> None:
    rng = random.Random(7)
    bodies = [b"", b"null", b"\xff\xfe", b'{"items": {"id": 1}}', b'{"pipeline": 5, "items": []}',
              b'{"items": [null]}', b'{"items": [{"id": "a", "response": "x", "metadata": 3}]}',
              json.dumps({"items": [{"id": "a", "response": "\u0000\ud7ff"}]}).encode()]  # fmt: skip
    for _ in range(30):
        bodies.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60))))
    for body in bodies:
        r = await client.post(
            "/v1/rewards", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code < 500, (body, r.text)
        if r.status_code != 200:
            assert set(r.json()) == {"error"}


async def test_200_concurrent_requests_with_overlapping_items_answered_once_in_order() -> None:
    # Every pool item has its own reward (1 for the right answer + n/1000 from `meta`), so
    # an answer that went to the wrong item or the wrong place in a request shows.
    config = {
        **RULES_CONFIG,
        "pipelines": {
            **RULES_CONFIG["pipelines"],
            "distinct": {
                "reward": {
                    "type": "weighted_sum",
                    "weights": [1.0, 1.0],
                    "inputs": [
                        {"type": "gate", "when": {"node": "fmt", "value": 1}, "then": "exact"},
                        "meta",
                    ],
                }
            },
        },
    }
    async with serve_app(config) as (client, _):
        rng = random.Random(1)
        pool = [(n, formatted(str(n % 13))) for n in range(60)]

        async def one(k: int) -> None:
            chosen = rng.sample(pool, rng.randint(1, 12))
            items = [
                {
                    "id": f"r{k}-{j}",
                    "response": text,
                    "reference": str(n % 13),
                    "metadata": {"score": n / 1000},
                }
                for j, (n, text) in enumerate(chosen)
            ]
            r = await client.post("/v1/rewards", json={"pipeline": "distinct", "items": items})
            assert r.status_code == 200, r.text
            results = r.json()["results"]
            assert [x["id"] for x in results] == [x["id"] for x in items]
            assert all(x["error"] is None for x in results)
            assert [x["reward"] for x in results] == [
                pytest.approx(1 + n / 1000, abs=1e-9) for n, _ in chosen
            ]

        await asyncio.gather(*(one(k) for k in range(200)))
        metrics = (await client.get("/metrics")).text
        # identical items in flight were computed once: joins or cache hits, never recomputed
        computed = sum(
            float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
            if line.startswith('referee_batch_size_sum{scorer="fmt"}')
        )  # fmt: skip
        assert computed <= len(pool) + 1  # + the warm-up item


async def test_pipelines_endpoints_and_docs(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/v1/pipelines")).json()["pipelines"]
    assert {p["name"] for p in listed} == set(RULES_CONFIG["pipelines"])
    one = (await client.get("/v1/pipelines/default")).json()
    assert one["scorers"] == ["exact", "fmt", "overlong"]
    assert one["tree"]["type"] == "weighted_sum"
    assert one["version"] == next(p["version"] for p in listed if p["name"] == "default")
    spec = (await client.get("/openapi.json")).json()
    assert "RewardRequest" in spec["components"]["schemas"]
    assert (await client.get("/docs")).status_code == 200


async def test_metrics_exposes_request_batch_queue_and_cache_series(
    client: httpx.AsyncClient,
) -> None:
    await client.post(
        "/v1/rewards", json={"items": [{"id": "a", "response": formatted("1"), "reference": "1"}]}
    )
    await client.post(
        "/v1/rewards", json={"pipeline": "zzz", "items": [{"id": "a", "response": "x"}]}
    )
    text = (await client.get("/metrics")).text
    for needle in [
        'referee_requests_total{pipeline="default",status="200"} 1.0',
        'referee_requests_total{pipeline="?",status="404"} 1.0',
        "referee_request_latency_seconds_bucket",
        'referee_batch_size_count{scorer="fmt"}',
        'referee_queue_depth{scorer="fmt"} 0.0',
        'referee_cache_misses_total{level="memory",scorer="fmt"}',
        'referee_items_total{outcome="ok",pipeline="default"} 1.0',
    ]:
        assert needle in text, needle


async def test_bodies_that_once_gave_500_now_get_4xx(client: httpx.AsyncClient) -> None:
    surrogate = b'{"items": [{"id": "a", "response": "cut emoji \\ud83d here"}]}'
    err = assert_error(await client.post("/v1/rewards", content=surrogate), 422, "invalid_request")
    assert err["param"] == "items[0].response"
    surrogate_key = b'{"items": [{"id": "a", "response": "x", "metadata": {"\\udc00": 1}}]}'
    assert_error(await client.post("/v1/rewards", content=surrogate_key), 422, "invalid_request")
    deep = (
        b'{"items": [{"id": "a", "response": "x", "metadata": {"m": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}}]}"
    )
    assert_error(await client.post("/v1/rewards", content=deep), 400, "bad_request")
    huge = b'{"items": [{"id": "a", "response": "x", "reference": ' + b"9" * 5000 + b"}]}"
    assert_error(await client.post("/v1/rewards", content=huge), 400, "bad_request")
    refs = {"items": [{"id": "a", "response": "x", "reference_rewards": [0.0] * 1025}]}
    assert_error(await client.post("/v1/rewards", json=refs), 422, "invalid_request")
    group_refs = {"items": [{"id": "a", "response": "x", "group": "g"}],
                  "options": {"group_reference_rewards": {"g": []}}}  # fmt: skip
    assert_error(await client.post("/v1/rewards", json=group_refs), 422, "invalid_request")


async def test_overflow_in_composition_is_a_per_item_error(client: httpx.AsyncClient) -> None:
    items = [{"id": "big", "response": "x", "metadata": {"score": 1e200}},
             {"id": "small", "response": "x", "metadata": {"score": 2.0}}]  # fmt: skip
    r = await client.post("/v1/rewards", json={"pipeline": "uwo", "items": items})
    assert r.status_code == 200, r.text
    big, small = r.json()["results"]
    assert big["reward"] is None and big["error"]["type"] == "non_finite"
    assert small["reward"] == 0.0 - 4.0  # members 2 and -2: mean 0, population variance 4


async def test_log_sigmoid_then_group_norm_with_extreme_references(
    client: httpx.AsyncClient,
) -> None:
    items = [{"id": "a", "response": "x", "metadata": {"score": 0.0}, "group": "g", "reference_rewards": [1e300]},
             {"id": "b", "response": "x", "metadata": {"score": 0.0}, "group": "g", "reference_rewards": [0.0]}]  # fmt: skip
    r = await client.post("/v1/rewards", json={"pipeline": "par", "items": items})
    assert r.status_code == 200, r.text
    # log sigmoid gives -1e300 and -0.693: finite, but the group's variance overflows,
    # so neither item has an honest advantage
    assert [x["error"]["type"] for x in r.json()["results"]] == ["non_finite", "non_finite"]
    assert [x["reward"] for x in r.json()["results"]] == [None, None]


async def test_running_zscore_survives_values_that_would_overflow_it(
    client: httpx.AsyncClient,
) -> None:
    extreme = [{"id": "hi", "response": "x", "metadata": {"score": 1e308}},
               {"id": "lo", "response": "x", "metadata": {"score": -1e308}}]  # fmt: skip
    r = await client.post("/v1/rewards", json={"pipeline": "zscore", "items": extreme})
    assert r.status_code == 200 and all(x["error"] for x in r.json()["results"])
    for value, expected in [(1.0, 0.0), (3.0, 1.0 / (2**0.5 + 1e-6))]:
        r = await client.post("/v1/rewards", json={"pipeline": "zscore", "items": [
            {"id": "ok", "response": "x", "metadata": {"score": value}}]})  # fmt: skip
        assert r.json()["results"][0]["reward"] == pytest.approx(expected)


async def test_client_cannot_raise_the_server_deadline() -> None:
    async with serve_app(request_timeout_s=0.1) as (client, _):
        started = asyncio.get_running_loop().time()
        r = await client.post("/v1/rewards", json={
            "pipeline": "slow", "options": {"timeout_s": 30},
            "items": [{"id": "a", "response": "one two"}]})  # fmt: skip
        assert_error(r, 504, "timeout")
        assert asyncio.get_running_loop().time() - started < 0.3


async def test_429_logs_no_unretrieved_task_errors(caplog: pytest.LogCaptureFixture) -> None:
    async with serve_app() as (client, engine):
        first = await fill_slow_queue(client, engine)
        r = await client.post(
            "/v1/rewards",
            json={
                "pipeline": "slow",
                "items": [{"id": f"x{i}", "response": f"other {i}"} for i in range(20)],
            },
        )
        assert r.status_code == 429
        await first
    import gc

    gc.collect()
    assert not [rec for rec in caplog.records if "never retrieved" in rec.getMessage()]


async def test_request_metrics_count_auth_failures_and_latency_by_status() -> None:
    async with serve_app(api_keys=["k"]) as (client, _):
        await client.post("/v1/rewards", json={"items": [{"id": "a", "response": "x"}]})
        ok = await client.post("/v1/rewards", json={"items": [{"id": "a", "response": "x"}]},
                               headers={"X-API-Key": "k"})  # fmt: skip
        assert ok.status_code == 200
        text = (await client.get("/metrics")).text
        assert 'referee_requests_total{pipeline="?",status="401"} 1.0' in text
        assert 'referee_requests_total{pipeline="default",status="200"} 1.0' in text
        assert 'referee_request_latency_seconds_count{pipeline="default",status="200"} 1.0' in text


async def test_item_reference_rewards_take_precedence_over_the_groups() -> None:
    import math

    data = {**RULES_CONFIG}
    data["pipelines"] = {**RULES_CONFIG["pipelines"], "pref": {"reward": {
        "type": "scorer", "scorer": "meta",
        "transforms": [{"type": "sigmoid_centered", "reference": "request", "k": 2.0}]}}}  # fmt: skip
    async with serve_app(data) as (client, _):
        r = await client.post("/v1/rewards", json={
            "pipeline": "pref",
            "options": {"group_reference_rewards": {"g": [0.0, 1.0]}},
            "items": [
                {"id": "own", "response": "x", "group": "g", "metadata": {"score": 0.5}, "reference_rewards": [0.25]},
                {"id": "from-group", "response": "x", "group": "g", "metadata": {"score": 0.5}},
                {"id": "none", "response": "x", "group": "h", "metadata": {"score": 0.5}},
            ]})  # fmt: skip
        own, grouped, none = r.json()["results"]

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    assert own["reward"] == pytest.approx(sig(2 * (0.5 - 0.25)))
    assert grouped["reward"] == pytest.approx((sig(2 * 0.5) + sig(2 * -0.5)) / 2)
    assert none["error"]["type"] == "missing_field"


async def test_work_for_timed_out_requests_is_dropped_not_left_blocking_others() -> None:
    async with serve_app() as (client, _):
        loop = asyncio.get_running_loop()
        # 4 items of 0.3 s each, one at a time; the request gives up after 0.2 s
        r = await client.post("/v1/rewards", json={
            "pipeline": "slow", "options": {"timeout_s": 0.2},
            "items": [{"id": str(i), "response": f"w {i}"} for i in range(4)]})  # fmt: skip
        assert r.status_code == 504
        started = loop.time()
        r = await client.post(
            "/v1/rewards", json={"pipeline": "slow", "items": [{"id": "b", "response": "b c"}]}
        )
        assert r.json()["results"][0]["reward"] == 2.0
        # only the item already running finishes first (<= 0.3 s), not all four (1.2 s)
        assert loop.time() - started < 0.9


async def test_failed_start_up_is_reported_without_a_retry_hint() -> None:
    async with serve_app(start=False) as (client, engine):

        async def broken() -> None:
            raise RuntimeError("weights not found")

        engine.scorers["fmt"].setup = broken  # type: ignore[method-assign]  # fault injection
        with pytest.raises(RuntimeError):
            await engine.start()
        r = await client.post("/v1/rewards", json={"items": [{"id": "a", "response": "x"}]})
        err = assert_error(r, 503, "not_ready")
        assert "start-up failed: RuntimeError: weights not found" in err["message"]
        assert "retry-after" not in r.headers
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and "weights not found" in ready.json()["error"]["message"]
