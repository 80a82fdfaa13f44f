"""Trainer adapters against a real server: TRL's reward-function call, verl's custom
reward functions, and OpenRLHF's remote reward-model protocol.

TRL and verl are not installed here (both pull torch, and verl also ray/vllm): the tests
call the adapters exactly as the libraries do. TRL's GRPOTrainer (_calculate_rewards)
calls ``reward_func(prompts=..., completions=..., completion_ids=..., trainer_state=...,
**dataset_columns)`` and turns a None into NaN; verl's NaiveRewardManager calls
``compute_score(data_source=, solution_str=, ground_truth=, extra_info=)`` and its
BatchRewardManager ``compute_score(data_sources=, solution_strs=, ground_truths=,
extra_infos=, **reward_kwargs)``. OpenRLHF's ``remote_rm_fn_ray`` POSTs
``{"query", "prompts", "labels"}`` with only a Content-Type header and reads ``rewards``
(and ``scores``, ``extra_logs`` when present).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from referee_client import RewardClient
from referee_client.adapters import verl
from referee_client.adapters.trl import RefereeReward
from tests.e2e.server import running_server

KEY = "adapter-key"
CONFIG = f"""
server: {{api_keys: [{KEY}], max_items_per_request: 50}}
scorers:
  fmt: {{kind: format, options: {{mode: think_answer}}}}
  exact: {{kind: match, options: {{mode: normalized, extract: "<answer>(.*?)</answer>"}}}}
  meta: {{kind: python, options: {{function: "tests.probes:metadata_value", kwargs: {{key: level}}}}}}
pipelines:
  default:
    reward: {{type: weighted_sum, weights: [1.0], inputs: [{{type: gate, name: correct, when: {{node: fmt, value: 1}}, then: exact}}]}}
  level_norm: {{reward: {{type: scorer, scorer: meta, transforms: [{{type: group_norm}}]}}}}
  level: {{reward: meta}}
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[str]:
    config = workdir / "adapters.yaml"
    config.write_text(CONFIG)
    with running_server("--config", str(config), log_path=workdir / "server.log") as (url, _):
        yield url


def metric(server: str, name: str) -> float:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", httpx.get(f"{server}/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


def answer(text: str) -> str:
    return f"<think>t</think><answer>{text}</answer>"


def test_trl_reward_function_with_plain_completions_and_trainer_kwargs(server: str) -> None:
    reward = RefereeReward(server, api_key=KEY)
    assert reward.__name__ == "referee_default"
    prompts = ["What is 6*7?"] * 2 + ["2+2?"] * 2
    completions = [answer("42"), answer("41"), answer("4"), "4"]
    logged: list[object] = []
    rewards = reward(
        prompts=prompts, completions=completions, completion_ids=[[1, 2]] * 4,
        trainer_state=SimpleNamespace(global_step=3), log_extra=lambda *a: logged.append(a),
        solution=["42", "42", "4", "4"], level=[1, 1, 2, 2],
    )  # fmt: skip
    assert rewards == [1.0, 0.0, 1.0, 0.0]


def test_trl_conversational_completions_and_columns_as_metadata_grouped_by_prompt(
    server: str,
) -> None:
    with RewardClient(server, api_key=KEY) as client:
        reward = RefereeReward(pipeline="level_norm", client=client, name="level")
        prompts = [[{"role": "user", "content": "a"}]] * 2 + [
            [{"role": "user", "content": "b"}]
        ] * 2
        completions = [[{"role": "assistant", "content": f"c{i}"}] for i in range(4)]
        rewards = reward(prompts=prompts, completions=completions, level=[1, 3, 5, 5],
                         answer=["x"] * 4, trainer_state=None)  # fmt: skip
    # group normalisation within each prompt's completions: (1, 3) -> -/+ ; (5, 5) -> 0, 0
    assert rewards == pytest.approx([-0.707107, 0.707107, 0.0, 0.0], abs=1e-5)
    assert reward.__name__ == "level"


def test_trl_multimodal_prompts_send_their_text_parts(server: str) -> None:
    reward = RefereeReward(server, api_key=KEY)
    prompt = [{"role": "user", "content": [{"type": "image"},
                                           {"type": "text", "text": "What is 6*7?"}]}]  # fmt: skip
    completions = [[{"role": "assistant", "content": [{"type": "text", "text": answer("42")}]}],
                   [{"role": "assistant", "content": answer("41")}]]  # fmt: skip
    assert reward(prompts=[prompt, prompt], completions=completions, solution=["42"] * 2) == [
        1.0,
        0.0,
    ]


def test_trl_item_errors_come_back_as_none_for_trl_to_treat_as_nan(server: str) -> None:
    reward = RefereeReward(server, api_key=KEY, pipeline="level_norm")
    assert reward(prompts=["p"], completions=["c"], level=["not a number"]) == [None]


def test_verl_compute_score_and_batch_signatures(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFEREE_URL", server)
    monkeypatch.setenv("REFEREE_API_KEY", KEY)
    monkeypatch.setenv("REFEREE_PIPELINE", "default")
    assert verl.compute_score(data_source="openai/gsm8k", solution_str=answer("42"),
                              ground_truth="42", extra_info={"index": 0}) == 1.0  # fmt: skip
    scores = verl.compute_score_batch(
        data_sources=["gsm8k"] * 3, solution_strs=[answer("7"), answer("8"), "7"],
        ground_truths=["7", "7", "7"], extra_infos=[{"index": i} for i in range(3)],
    )  # fmt: skip
    assert scores == [1.0, 0.0, 0.0]
    monkeypatch.setenv("REFEREE_PIPELINE", "level_norm")
    monkeypatch.setenv("REFEREE_ERROR_REWARD", "-1")
    assert verl.compute_score_batch(["d"], ["x"], [None], [{"note": "no level"}]) == [-1.0]


def test_verl_numpy_extra_info_is_converted_odd_values_dropped_and_list_truths_sent_as_json(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    np = pytest.importorskip("numpy")
    monkeypatch.setenv("REFEREE_URL", server)
    monkeypatch.setenv("REFEREE_API_KEY", KEY)
    monkeypatch.setenv("REFEREE_PIPELINE", "level")
    extras = [{"level": np.float32(2.5), "index": np.int64(0), "ids": np.arange(3)},
              {"level": np.int64(4), "tokenizer": object()}]  # fmt: skip
    with pytest.warns(UserWarning, match=r"tokenizer is a `object`, not JSON data; dropped"):
        scores = verl.compute_score_batch(["d", "d"], ["x", "y"], [None, None], extras)
    assert scores == [2.5, 4.0]
    monkeypatch.setenv("REFEREE_PIPELINE", "default")
    truths = [["42", "43"], np.array(["1", "2"])]
    solutions = [answer('["42", "43"]'), answer('["1", "2"]')]
    assert verl.compute_score_batch(["d", "d"], solutions, truths, None) == [1.0, 1.0]


def test_openrlhf_remote_rm_payload_gets_rewards_scores_and_extra_logs(server: str) -> None:
    prompts = [
        "<|user|>6*7?<|assistant|>",
        "<|user|>6*7?<|assistant|>",
        "<|user|>2+2?<|assistant|>",
    ]
    responses = [answer("42") + "<|end|>", answer("41") + "<|end|>", answer("4") + "<|end|>"]
    payload = {"query": [p + r for p, r in zip(prompts, responses, strict=True)],
               "prompts": prompts, "labels": ["42", "42", "4"]}  # fmt: skip
    url = f"{server}/openrlhf/default?api_key={KEY}&strip=<|end|>"
    r = httpx.post(url, json=payload, headers={"Content-Type": "application/json"}, timeout=180)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rewards"] == [1.0, 0.0, 1.0]
    assert body["scores"] == body["rewards"]
    assert body["extra_logs"]["referee/error"] == [0.0, 0.0, 0.0]
    assert body["extra_logs"]["referee/fmt"] == [1.0, 1.0, 1.0]
    # older OpenRLHF sends only the queries; without `strip` the suffix stays and the
    # format check (which wants the text to end at </answer>) fails
    r = httpx.post(url.split("&")[0], json={"query": [answer("1") + "<|end|>"]})
    assert r.status_code == 200 and r.json()["rewards"] == [0.0]


def test_openrlhf_route_refuses_bad_payloads_and_missing_keys_clearly(server: str) -> None:
    r = httpx.post(f"{server}/openrlhf/default", json={"query": ["x"]})
    assert r.status_code == 401
    url = f"{server}/openrlhf/default?api_key={KEY}"
    r = httpx.post(url, json={"query": ["a", "b"], "prompts": ["a"]})
    assert r.status_code == 422
    assert r.json()["error"] == {"type": "invalid_request", "param": "prompts",
                                 "message": "`prompts` must be a list of 2 entries, one per query"}  # fmt: skip
    r = httpx.post(f"{server}/openrlhf/nope?api_key={KEY}", json={"query": ["x"]})
    assert r.status_code == 404 and "configured pipelines" in r.json()["error"]["message"]


def test_openrlhf_extra_logs_have_every_component_as_numbers_for_every_item(server: str) -> None:
    """OpenRLHF merges workers' answers by the first answer's extra_logs keys and makes a
    tensor of each list: the keys must not depend on which items failed."""
    url = f"{server}/openrlhf/default?api_key={KEY}"
    keys = {"referee/reward", "referee/correct", "referee/fmt", "referee/exact", "referee/error",
            "referee/failed", "referee/retryable", "referee/invalid"}  # fmt: skip
    for queries in (["unformatted"], [answer("1"), "unformatted"]):  # the gate skips `exact`
        logs = httpx.post(url, json={"query": queries, "labels": ["1"] * len(queries)}).json()[
            "extra_logs"
        ]
        assert set(logs) == keys
        assert all(len(v) == len(queries) and all(math.isfinite(x) for x in v)
                   for v in logs.values())  # fmt: skip


def test_openrlhf_strips_common_eos_tokens_and_counts_queries_without_their_prompt(
    server: str,
) -> None:
    url = f"{server}/openrlhf/default?api_key={KEY}"
    eos = [answer("7") + "<|im_end|>", answer("7") + "<|eot_id|></s>"]
    r = httpx.post(url, json={"query": eos, "labels": ["7", "7"]})
    assert r.json()["rewards"] == [1.0, 1.0]
    before = metric(server, "referee_openrlhf_prompt_mismatch_total")
    r = httpx.post(url, json={"query": ["Q:7?" + answer("7"), "garbled" + answer("7")],
                              "prompts": ["Q:7?", "Q: 7?"], "labels": ["7", "7"]})  # fmt: skip
    # the second is scored whole (prompt included), which the format check refuses
    assert r.json()["rewards"] == [1.0, 0.0]
    assert metric(server, "referee_openrlhf_prompt_mismatch_total") - before == 1


def test_openrlhf_scores_can_be_a_named_component(server: str) -> None:
    url = f"{server}/openrlhf/default?api_key={KEY}"
    body = {"query": [answer("3"), answer("4")], "labels": ["4", "4"]}
    r = httpx.post(f"{url}&score_component=fmt", json=body)
    assert r.json()["rewards"] == [0.0, 1.0] and r.json()["scores"] == [1.0, 1.0]
    r = httpx.post(f"{url}&score_component=nope", json=body)
    assert r.status_code == 422 and r.json()["error"]["param"] == "score_component"


def test_openrlhf_a_rollout_over_max_items_per_request_is_split_by_the_route(server: str) -> None:
    n = 120  # the server takes 50 items per request
    queries = [answer(str(i % 3)) for i in range(n)]
    r = httpx.post(f"{server}/openrlhf/default?api_key={KEY}",
                   json={"query": queries, "labels": ["1"] * n}, timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["rewards"] == [1.0 if i % 3 == 1 else 0.0 for i in range(n)]


def test_openrlhf_api_key_in_the_url_is_redacted_from_the_access_log(
    server: str, workdir: Path
) -> None:
    r = httpx.post(f"{server}/openrlhf/default?strip=x&api_key={KEY}", json={"query": ["a"]})
    assert r.status_code == 200
    log = (workdir / "server.log").read_text()
    assert "/openrlhf/default?strip=x&api_key=*** HTTP/1.1" in log, log[-2000:]
    assert KEY not in log
