"""Live reloads through the admin API, on the real MiniLM reward model with two heads
(A: seed 0, B: seed 1): the switch under load, failed reloads, config applies, auth."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import serve_app

pytest.importorskip("torch", reason="model scorers need the models extra")

ADMIN = {"authorization": "Bearer adm"}
PROMPTS = [f"Question {i}: what is {i} + {i}?" for i in range(8)]
ITEMS = [{"id": f"i{i}", "prompt": p, "response": f"It is {2 * i}." + " Sure." * i}
         for i, p in enumerate(PROMPTS)]  # fmt: skip


def rm_config(model: Path, **server: Any) -> dict[str, Any]:
    return {
        "server": {"admin_api_keys": ["adm"], "api_keys": ["user"], **server},
        "scorers": {"rm": {"kind": "classifier", "options": {"model": str(model), "input": "pair"}},
                    "len": {"kind": "length", "options": {"mode": "overlong", "max_length": 500,
                                                           "buffer_length": 100}}},
        "pipelines": {"rm": {"reward": "rm"}, "len": {"reward": "len"}},
    }  # fmt: skip


async def rewards(client: httpx.AsyncClient, pipeline: str = "rm") -> tuple[str, list[float]]:
    r = await client.post("/v1/rewards", json={"pipeline": pipeline, "items": ITEMS},
                          headers={"authorization": "Bearer user"})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    return body["pipeline_version"], [res["reward"] for res in body["results"]]


def same(a: list[float], b: list[float]) -> bool:
    return all(abs(x - y) <= 1e-5 for x, y in zip(a, b, strict=True))


async def test_reload_under_load_switches_head_a_to_head_b_once_with_no_failed_or_mixed_response(
    minilm_classifier: Path, minilm_classifier_b: Path
) -> None:
    async with serve_app(rm_config(minilm_classifier_b)) as (client, _):
        version_b, expected_b = await rewards(client)  # B's values, served alone
    async with serve_app(rm_config(minilm_classifier)) as (client, _):
        version_a, expected_a = await rewards(client)
        assert version_a != version_b and not same(expected_a, expected_b)
        seen: list[tuple[float, float, int, str | None, list[float] | None]] = []
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                sent = time.monotonic()
                r = await client.post("/v1/rewards", json={"pipeline": "rm", "items": ITEMS},
                                      headers={"authorization": "Bearer user"})  # fmt: skip
                body = r.json() if r.status_code == 200 else None
                seen.append((sent, time.monotonic(), r.status_code,
                             body and body["pipeline_version"],
                             body and [res["reward"] for res in body["results"]]))  # fmt: skip

        async def answered(n: int, since: float) -> None:  # bounded: a busy CI machine
            deadline = time.monotonic() + 60
            while sum(1 for sent, *_ in seen if sent > since) < n:
                assert time.monotonic() < deadline, "load stalled"
                await asyncio.sleep(0.05)

        workers = [asyncio.create_task(load()) for _ in range(4)]
        await answered(8, 0.0)
        called = time.monotonic()
        reload = await client.post("/v1/admin/scorers/rm/reload", headers=ADMIN,
                                   json={"options": {"model": str(minilm_classifier_b)}})  # fmt: skip
        returned = time.monotonic()
        await answered(8, returned)
        stop.set()
        await asyncio.gather(*workers)

    assert reload.status_code == 200, reload.text
    result = reload.json()
    assert result["reloaded"] == ["rm"] and result["pipelines"]["rm"] == version_b
    assert [s for *_, s, _, _ in seen if s != 200] == [], "every request under load succeeded"
    before = [(v, r) for sent, done, _, v, r in seen if done < called]
    after = [(v, r) for sent, done, _, v, r in seen if sent > returned]
    assert before and after, "load ran on both sides of the reload"
    for version, values in [(v, r) for *_, v, r in seen]:
        assert values is not None
        if version == version_a:
            assert same(values, expected_a), "a version-A response holds only head A's rewards"
        else:
            assert version == version_b and same(values, expected_b), "no mixed response"
    assert {v for v, _ in before} == {version_a}
    assert {v for v, _ in after} == {version_b}, "the version changed once, at the switch"
    # head B as served after the reload equals head B served by its own fresh server
    assert all(same(r, expected_b) for _, r in after)


async def test_failed_reload_answers_the_loaders_reason_and_the_old_version_keeps_serving(
    minilm_classifier: Path, tmp_path: Path
) -> None:
    not_a_model = tmp_path / "empty-checkpoint"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text("{}")
    async with serve_app(rm_config(minilm_classifier)) as (client, _):
        version, values = await rewards(client)
        missing = await client.post("/v1/admin/scorers/rm/reload", headers=ADMIN,
                                    json={"options": {"model": str(tmp_path / "nope")}})  # fmt: skip
        assert missing.status_code == 422
        assert "no such file or directory" in missing.json()["error"]["message"]
        broken = await client.post("/v1/admin/scorers/rm/reload", headers=ADMIN,
                                   json={"options": {"model": str(not_a_model)}})  # fmt: skip
        assert broken.status_code == 422, broken.text
        message = broken.json()["error"]["message"]
        assert "failed to load" in message and "nothing was changed" in message
        assert await rewards(client) == (version, values)
        metrics = (await client.get("/metrics")).text
        assert 'referee_reloads_total{outcome="failed",scorer="rm"} 2.0' in metrics
        listed = (await client.get("/v1/admin/scorers", headers=ADMIN)).json()["scorers"]
        assert {s["name"]: s["state"] for s in listed} == {"rm": "ready", "len": "ready"}


async def test_admin_api_needs_its_own_key_and_is_off_without_one(minilm_classifier: Path) -> None:
    async with serve_app(rm_config(minilm_classifier)) as (client, _):
        url = "/v1/admin/scorers"
        assert (await client.get(url)).status_code == 401
        ordinary = await client.get(url, headers={"authorization": "Bearer user"})
        assert ordinary.status_code == 401, "the ordinary API key never opens the admin API"
        assert (await client.get(url, headers={"x-api-key": "adm"})).status_code == 200
        unknown = await client.post("/v1/admin/scorers/nope/reload", headers=ADMIN, json={})
        assert unknown.status_code == 404 and "configured scorers: len, rm" in unknown.text
        bad_option = await client.post("/v1/admin/scorers/len/reload", headers=ADMIN,
                                       json={"options": {"max_length": -3}})  # fmt: skip
        assert bad_option.status_code == 422 and "options.max_length" in bad_option.text
        # the user API key still works on /v1/rewards; the admin key does not
        r = await client.post("/v1/rewards", json={"pipeline": "len", "items": ITEMS},
                              headers=ADMIN)  # fmt: skip
        assert r.status_code == 401
    config = rm_config(minilm_classifier)
    del config["server"]["admin_api_keys"]
    async with serve_app(config) as (client, _):
        off = await client.get("/v1/admin/scorers", headers=ADMIN)
        assert off.status_code == 404 and "server.admin_api_keys" in off.text


async def test_concurrent_reloads_of_one_scorer_get_409_never_two_half_loaded_versions(
    minilm_classifier: Path, minilm_classifier_b: Path
) -> None:
    async with serve_app(rm_config(minilm_classifier)) as (client, engine):
        body = {"options": {"model": str(minilm_classifier_b)}}
        first, second = await asyncio.gather(
            client.post("/v1/admin/scorers/rm/reload", headers=ADMIN, json=body),
            client.post("/v1/admin/scorers/rm/reload", headers=ADMIN, json=body),
        )
        assert sorted([first.status_code, second.status_code]) == [200, 409]
        conflict = first if first.status_code == 409 else second
        assert "in progress" in conflict.json()["error"]["message"]
        assert conflict.headers["retry-after"]
        listed = (await client.get("/v1/admin/scorers", headers=ADMIN)).json()["scorers"]
        rm = next(s for s in listed if s["name"] == "rm")
        assert rm["fingerprint"] == engine.scorers["rm"].fingerprint()
        assert rm["memory_bytes"] > 10_000_000  # MiniLM's ~22.7M parameters in fp32


async def test_old_versions_cache_entries_are_never_served_for_the_new_one(
    minilm_classifier: Path, tmp_path: Path, minilm_classifier_b: Path
) -> None:
    # new weights written over the same directory, reloaded with no option changed
    ckpt = tmp_path / "rm"
    shutil.copytree(minilm_classifier, ckpt)
    async with serve_app(rm_config(ckpt)) as (client, _):
        version_a, values_a = await rewards(client)
        r = await client.post("/v1/rewards", json={"pipeline": "rm", "items": ITEMS},
                              headers={"authorization": "Bearer user"})  # fmt: skip
        assert all(res["cached"] for res in r.json()["results"])
        shutil.rmtree(ckpt)
        shutil.copytree(minilm_classifier_b, ckpt)
        reload = await client.post("/v1/admin/scorers/rm/reload", headers=ADMIN, json={})
        assert reload.status_code == 200, reload.text
        r = await client.post("/v1/rewards", json={"pipeline": "rm", "items": ITEMS},
                              headers={"authorization": "Bearer user"})  # fmt: skip
        body = r.json()
        assert body["pipeline_version"] != version_a
        assert not any(res["cached"] for res in body["results"])
        assert not same([res["reward"] for res in body["results"]], values_a)


async def test_config_apply_adds_reloads_and_removes_and_an_invalid_one_changes_nothing(
    minilm_classifier: Path, minilm_classifier_b: Path
) -> None:
    async with serve_app(rm_config(minilm_classifier)) as (client, engine):
        before = dict(engine.pipelines)
        new = rm_config(minilm_classifier_b)
        del new["scorers"]["len"], new["pipelines"]["len"]
        new["scorers"]["fmt"] = {"kind": "format", "options": {"mode": "think_answer"}}
        new["pipelines"]["fmt"] = {"reward": "fmt"}
        invalid = {**new, "pipelines": {**new["pipelines"], "bad": {"reward": "nope"}}}
        r = await client.post("/v1/admin/config", headers=ADMIN, json={"config": invalid})
        assert r.status_code == 422 and "pipelines.bad.reward: unknown scorer 'nope'" in r.text
        moved = {**new, "server": {**new["server"], "port": 9999}}
        r = await client.post("/v1/admin/config", headers=ADMIN, json={"config": moved})
        assert r.status_code == 422 and "server.port: takes effect only at a restart" in r.text
        assert engine.pipelines == before, "a refused config changed nothing"

        r = await client.post("/v1/admin/config", headers=ADMIN, json={"config": new})
        assert r.status_code == 200, r.text
        result = r.json()
        assert (result["added"], result["reloaded"], result["removed"]) == (
            ["fmt"],
            ["rm"],
            ["len"],
        )
        assert set(result["pipelines"]) == {"rm", "fmt"}
        assert (
            await client.post(
                "/v1/rewards",
                json={"pipeline": "len", "items": ITEMS},
                headers={"authorization": "Bearer user"},
            )
        ).status_code == 404
        fmt = await client.post("/v1/rewards", headers={"authorization": "Bearer user"},
                                json={"pipeline": "fmt", "items": [
                                    {"id": "a", "response": "<think>x</think><answer>1</answer>"},
                                    {"id": "b", "response": "1"}]})  # fmt: skip
        assert [res["reward"] for res in fmt.json()["results"]] == [1.0, 0.0]
        # the same config again: nothing to reload (fingerprints unchanged)
        again = (await client.post("/v1/admin/config", headers=ADMIN, json={"config": new})).json()
        assert (again["added"], again["reloaded"], again["removed"]) == ([], [], [])


async def test_in_place_reload_unloads_first_and_a_reload_that_does_not_fit_says_so(
    minilm_classifier: Path, minilm_classifier_b: Path
) -> None:
    tight = rm_config(minilm_classifier, memory_limit_bytes=1)  # no room for a second copy
    async with serve_app(tight) as (client, _):
        version_a, _ = await rewards(client)
        body = {"options": {"model": str(minilm_classifier_b)}}
        r = await client.post("/v1/admin/scorers/rm/reload", headers=ADMIN, json=body)
        assert r.status_code == 409 and "swap: in_place" in r.json()["error"]["message"]
        assert (await rewards(client))[0] == version_a
        r = await client.post("/v1/admin/scorers/rm/reload", headers=ADMIN,
                              json={**body, "swap": "in_place"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert (await rewards(client))[0] == r.json()["pipelines"]["rm"] != version_a
