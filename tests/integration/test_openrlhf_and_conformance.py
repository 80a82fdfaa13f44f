"""Findings 3 and 7 against the ASGI app: the OpenRLHF route refuses values JSON cannot
carry with a 422 (never a 500), flags placeholder rewards, and the HTTP edge conforms
(405 with Allow, 415 for non-JSON bodies, an OpenAPI document that says what is accepted)."""

from __future__ import annotations

import math

import httpx
import jsonschema
import pytest

from tests.integration.conftest import RULES_CONFIG, formatted, serve_app

CONFIG = {
    **RULES_CONFIG,
    "pipelines": {
        **RULES_CONFIG["pipelines"],
        # `exact` is computed only for formatted answers: other items lack that component.
        "gated": {"reward": {"type": "gate", "when": {"node": "fmt", "value": 1}, "then": "exact"}},
    },
}


@pytest.fixture
async def client() -> httpx.AsyncClient:
    async with serve_app(CONFIG) as (client, _):
        yield client


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400"])
async def test_openrlhf_error_reward_that_json_cannot_carry_is_a_422(
    client: httpx.AsyncClient, value: str
) -> None:
    r = await client.post(f"/openrlhf/meta?error_reward={value}", json={"query": ["x"]})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request" and error["param"] == "query.error_reward"
    assert "finite" in error["message"]


@pytest.mark.parametrize("component", ["", "nope", "reward "])
async def test_openrlhf_score_component_the_pipeline_lacks_is_a_422(
    client: httpx.AsyncClient, component: str
) -> None:
    r = await client.post(
        "/openrlhf/gated", params={"score_component": component}, json={"query": ["x"]}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == "score_component"
    assert "has no component" in r.json()["error"]["message"]


async def test_openrlhf_items_without_the_score_component_get_the_finite_error_reward(
    client: httpx.AsyncClient,
) -> None:
    # Finding 3's second case: `exact` is a component of the pipeline that the unformatted
    # item lacks (gated off); its score is the placeholder, a finite number.
    payload = {"query": [formatted("42"), "unformatted"], "labels": ["42", "42"]}
    r = await client.post("/openrlhf/gated?score_component=exact&error_reward=-1", json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scores"] == [1.0, -1.0]
    assert all(math.isfinite(v) for vs in body["extra_logs"].values() for v in vs)


async def test_openrlhf_flags_items_that_were_not_scored(client: httpx.AsyncClient) -> None:
    # `meta` reads metadata the OpenRLHF protocol never sends: each item fails (no verdict).
    r = await client.post("/openrlhf/meta?error_reward=-5", json={"query": ["a", "b"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rewards"] == [-5.0, -5.0]
    logs = body["extra_logs"]
    assert logs["referee/failed"] == [1.0, 1.0] and logs["referee/error"] == [1.0, 1.0]
    assert logs["referee/retryable"] == [0.0, 0.0] and logs["referee/invalid"] == [0.0, 0.0]


async def test_405_says_which_methods_are_allowed(client: httpx.AsyncClient) -> None:
    for method, path, allowed in (("GET", "/v1/rewards", "POST"),
                                  ("DELETE", "/openrlhf/meta", "GET, POST"),
                                  ("POST", "/v1/pipelines", "GET")):  # fmt: skip
        r = await client.request(method, path)
        assert r.status_code == 405, (method, path, r.text)
        assert r.headers["allow"] == allowed
        assert r.json()["error"]["type"] == "method_not_allowed"
        assert allowed in r.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/rewards", "/openrlhf/meta"])
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_a_body_not_declared_json_is_a_415(
    client: httpx.AsyncClient, path: str, content_type: str
) -> None:
    body = b'{"items": [{"id": "a", "response": "x"}], "query": ["x"]}'
    r = await client.post(path, content=body, headers={"content-type": content_type})
    assert r.status_code == 415, r.text
    assert r.json()["error"]["type"] == "unsupported_media_type"
    json_type = {"content-type": "application/json; charset=utf-8"}
    ok = await client.post(path, content=body, headers=json_type)
    assert ok.status_code in (200, 422)  # read as JSON (meta's items fail per item)


async def test_openapi_documents_the_openrlhf_body_and_its_errors(
    client: httpx.AsyncClient,
) -> None:
    doc = (await client.get("/openapi.json")).json()
    op = doc["paths"]["/openrlhf/{pipeline}"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/OpenRLHFRequest"
    assert doc["components"]["schemas"]["OpenRLHFRequest"]["required"] == ["query"]
    assert {"200", "401", "404", "413", "415", "422", "429", "500", "503", "504"} <= set(
        op["responses"]
    )
    assert "415" in doc["paths"]["/v1/rewards"]["post"]["responses"]


# a 1x1 greyscale PNG
_PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4AWNgAAAAAgAB"
        "c3UBGAAAAABJRU5ErkJggg==")  # fmt: skip


def _validator(doc: dict, name: str) -> jsonschema.Draft202012Validator:
    schema = {**doc["components"]["schemas"][name], "components": doc["components"]}
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize(
    "item",
    [
        {"id": "only-an-id"},
        {"id": "a", "response": None},
        {"id": "a", "messages": [{"role": "assistant", "content": "x"}], "response": "r"},
        {"id": "a", "messages": [{"role": "assistant", "content": "x"}], "prompt": "p"},
        {"id": "a", "messages": []},
        {"id": "a", "prompt": "p", "response_images": []},
        {
            "id": "a",
            "messages": [{"role": "assistant", "content": "x"}],
            "response_images": [_PNG],
        },
    ],
)
async def test_items_the_server_rejects_are_rejected_by_the_published_schema(
    client: httpx.AsyncClient, item: dict
) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert not _validator(doc, "RewardRequest").is_valid({"items": [item]})
    r = await client.post("/v1/rewards", json={"pipeline": "meta", "items": [item]})
    assert r.status_code == 422, r.text


@pytest.mark.parametrize(
    "item",
    [
        {"id": "a", "response": "x"},
        {"id": "a", "prompt": "p", "response": "x", "reference": "1"},
        {
            "id": "a",
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}],
        },
        {"id": "a", "messages": [{"role": "assistant", "content": "x"}], "response": None},
        {"id": "a", "prompt": "p", "response_images": [_PNG], "reference_images": [{"url": _PNG}]},
        {
            "id": "a",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": _PNG}},
                        {"type": "text", "text": "what is it?"},
                    ],
                },
                {"role": "assistant", "content": [{"type": "text", "text": "a dot"}]},
            ],
        },
    ],
)
async def test_items_the_server_accepts_are_accepted_by_the_published_schema(
    client: httpx.AsyncClient, item: dict
) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert _validator(doc, "RewardRequest").is_valid({"items": [item]})
    r = await client.post("/v1/rewards", json={"pipeline": "meta", "items": [item]})
    assert r.status_code == 200, r.text
