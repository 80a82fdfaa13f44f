"""`referee serve` as a real subprocess on the embedded default config, over real HTTP,
and the rest of the CLI as a user runs it."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import cli, free_port, running_server


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve") / "server.log"


@pytest.fixture(scope="module")
def server(server_log: Path) -> Iterator[str]:
    with running_server(log_path=server_log) as (url, _):
        yield url


def test_the_start_up_heap_is_frozen_once_the_scorers_are_ready(
    server: str, server_log: Path
) -> None:
    # server.gc_freeze (default on): full collections skip the start-up objects, so they no
    # longer stall the loop under load (referee.heap)
    deadline = time.monotonic() + 10
    while "start-up objects out of the garbage collector" not in server_log.read_text():
        assert time.monotonic() < deadline, server_log.read_text()[-3000:]
        time.sleep(0.1)


def test_default_config_scores_math_format_and_length_over_http(server: str) -> None:
    good = "<think>6 times 7</think><answer>\\boxed{42}</answer>"
    items = [
        {"id": "good", "prompt": "6*7?", "response": good, "reference": "42"},
        {"id": "wrong", "prompt": "6*7?", "response": good.replace("42", "41"), "reference": "42"},
        {"id": "no-format", "prompt": "6*7?", "response": "\\boxed{42}", "reference": "42"},
        {
            "id": "overlong",
            "prompt": "6*7?",
            "reference": "42",
            "response": good.replace("6 times 7", "6 times 7" + " pad" * 4500),
        },
    ]
    r = httpx.post(f"{server}/v1/rewards", json={"items": items}, timeout=60)
    assert r.status_code == 200, r.text
    results = {x["id"]: x for x in r.json()["results"]}
    assert list(results) == ["good", "wrong", "no-format", "overlong"]
    assert results["good"]["reward"] == 1.0
    assert results["wrong"]["reward"] == 0.0
    assert results["no-format"]["reward"] == 0.0
    assert results["no-format"]["components"]["think_format"] == 0.0
    # 18,000+ characters: past DAPO's max of 16,000, so correct (1) plus the full penalty (-1)
    assert results["overlong"]["components"]["overlong"] == -1.0
    assert results["overlong"]["reward"] == 0.0


def test_errors_over_real_http(server: str) -> None:
    r = httpx.post(f"{server}/v1/rewards", content=b"{", timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "bad_request"
    r = httpx.post(
        f"{server}/v1/rewards", json={"pipeline": "nope", "items": [{"id": "a", "response": "x"}]}
    )
    assert r.status_code == 404
    r = httpx.get(f"{server}/metrics")
    assert "referee_requests_total" in r.text


def test_grpo_pipeline_normalises_within_groups(server: str) -> None:
    fmt = "<think>t</think><answer>\\boxed{{{}}}</answer>"
    items = [{"id": f"g{i}", "response": fmt.format(a), "reference": "4", "group": "p1"}
             for i, a in enumerate([4, 4, 5, 3])]  # fmt: skip
    body = httpx.post(f"{server}/v1/rewards", json={"pipeline": "grpo", "items": items}).json()
    rewards = [x["reward"] for x in body["results"]]
    # raw rewards [1, 1, 0, 0]: mean 0.5, sample std 0.57735
    assert rewards == pytest.approx([0.866025, 0.866025, -0.866025, -0.866025], abs=1e-5)


def test_serve_refuses_an_invalid_config_and_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "scorers:\n  m: {kind: math, options: {timeout_s: -1}}\n"
        "pipelines:\n  p:\n    reward: {type: weighted_sum, weights: [1, .nan], inputs: [m, m]}\n"
    )
    result = cli("serve", "--config", str(bad), "--port", str(free_port()))
    assert result.returncode == 2
    assert "scorers.m: options.timeout_s" in result.stderr
    assert "pipelines.p.reward.weights[1]: Input should be a finite number" in result.stderr
    result = cli("validate", str(bad))
    assert result.returncode == 2 and "timeout_s" in result.stderr


def test_validate_and_pipelines_on_good_config(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "scorers:\n  fmt: {kind: format, options: {mode: think_answer}}\n"
        "pipelines:\n  p: {reward: fmt}\n"
    )
    result = cli("validate", str(good))
    assert result.returncode == 0, result.stderr
    assert "ok (1 scorers, 1 pipelines)" in result.stdout
    listed = cli("pipelines")
    assert listed.returncode == 0
    assert {line.split("\t")[0] for line in listed.stdout.splitlines()} >= {"default", "grpo"}


def test_missing_config_file_and_bad_env_override_are_refused(tmp_path: Path) -> None:
    result = cli("validate", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "cannot read" in result.stderr
    result = cli("pipelines", env={"REFEREE_SERVER__PORT": "eighty"})
    assert result.returncode == 2
    assert "server.port: Input should be a valid integer" in result.stderr
    result = cli("pipelines", env={"REFEREE_BATCHING__MAX_BATCH_SIZE": "0"})
    assert result.returncode == 2 and "batching.max_batch_size" in result.stderr


def test_offline_score_is_resumable(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    out = tmp_path / "out.jsonl"
    rows = [{"id": f"q{i}", "response": f"<think>t</think><answer>\\boxed{{{i}}}</answer>",
             "reference": str(i if i % 3 else -1)} for i in range(30)]  # fmt: skip
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    # a previous run that stopped after 10 items (and cut its last line in half)
    first = cli("score", str(src), "--pipeline", "math", "--out", str(out), "--chunk-size", "4")
    assert first.returncode == 0, first.stderr
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:10]) + "\n" + lines[10][:15])
    again = cli("score", str(src), "--pipeline", "math", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "10 already done" in again.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {r["id"]: r for r in records}
    assert sorted(by_id) == sorted(r["id"] for r in rows)
    assert len(records) == 30  # nothing scored twice
    assert [by_id[f"q{i}"]["reward"] for i in range(6)] == [0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    done = cli("score", str(src), "--pipeline", "math", "--out", str(out))
    assert done.returncode == 0 and "nothing to do" in done.stderr


def test_offline_score_refuses_duplicate_ids_and_ignores_server_size_limits(tmp_path: Path) -> None:
    src = tmp_path / "dup.jsonl"
    src.write_text(
        '{"id": "a", "response": "x"}\n{"id": "b", "response": "y"}\n{"id": "a", "response": "z"}\n'
    )
    result = cli("score", str(src), "--pipeline", "math")
    assert result.returncode == 2
    assert "dup.jsonl:3: id 'a' already used on line 1" in result.stderr
    big = tmp_path / "big.jsonl"
    big.write_text(
        json.dumps({"id": "long", "response": "\\boxed{7}" + " " * 200, "reference": "7"}) + "\n"
    )
    out = tmp_path / "big.out.jsonl"
    result = cli("score", str(big), "--pipeline", "math", "--out", str(out),
                 env={"REFEREE_SERVER__MAX_TEXT_CHARS": "100"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["reward"] == 1.0


def test_readme_curl_example_gives_the_output_the_readme_shows(server: str) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    payload = readme.split("-d '", 1)[1].split("'", 1)[0]
    shown = json.loads(readme.split("```json\n", 1)[1].split("```", 1)[0])
    got = httpx.post(f"{server}/v1/rewards", content=payload,
                     headers={"content-type": "application/json"}).json()  # fmt: skip
    for result in got["results"]:
        result["cached"] = False  # another test may have scored the same item first
    assert got["results"] == shown["results"]
    # The version hashes the installed math-verify/sympy/regex versions too, so it is only
    # equal to the README's where the same versions are installed: check it is the server's.
    listed = httpx.get(f"{server}/v1/pipelines/default").json()
    assert got["pipeline_version"] == listed["version"]
    assert shown["pipeline_version"].startswith("sha256:")


def test_200_concurrent_requests_over_http_each_item_gets_its_own_reward(server: str) -> None:
    """Overlapping items across 200 concurrent requests, and identical responses whose
    references differ in flight at once: every id answered once, in order, with the reward
    that belongs to it (a mix-up between items would show as a wrong 0 or 1)."""
    rng = random.Random(3)
    answers = list(range(40))

    def item(rid: str, answer: int, correct: bool) -> tuple[dict[str, object], float]:
        response = f"<think>so</think><answer>\\boxed{{{answer}}}</answer>"
        reference = str(answer if correct else answer + 1)
        return {"id": rid, "response": response, "reference": reference}, 1.0 if correct else 0.0

    async def one(client: httpx.AsyncClient, k: int) -> None:
        chosen = [item(f"r{k}-{j}", rng.choice(answers), rng.random() < 0.5)
                  for j in range(rng.randint(1, 16))]  # fmt: skip
        pipeline = rng.choice(["math", "exact", "default"])
        r = await client.post(
            "/v1/rewards", json={"pipeline": pipeline, "items": [c[0] for c in chosen]}
        )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["id"] for x in results] == [c[0]["id"] for c in chosen]
        assert [x["reward"] for x in results] == [c[1] for c in chosen], pipeline

    async def main() -> None:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server, timeout=120, limits=limits) as client:
            await asyncio.gather(*(one(client, k) for k in range(200)))

    asyncio.run(main())


def test_shutdown_answers_requests_in_flight_and_exits_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "slow.yaml"
    config.write_text(
        "server: {shutdown_grace_s: 1}\n"
        "scorers:\n  slow: {kind: python, options: {function: 'tests.probes:slow_reward', kwargs: {delay_s: 20}}}\n"
        "pipelines:\n  slow: {reward: slow}\n"
    )
    with running_server("--config", str(config)) as (url, proc):

        async def main() -> httpx.Response:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                pending = asyncio.create_task(
                    client.post(
                        "/v1/rewards",
                        json={"pipeline": "slow", "items": [{"id": "a", "response": "one two"}]},
                    )
                )
                await asyncio.sleep(0.5)
                proc.send_signal(signal.SIGINT)
                await asyncio.sleep(0.2)
                return await pending

        started = time.monotonic()
        response = asyncio.run(main())
        assert response.status_code == 503, response.text
        assert response.json()["error"]["message"] == "server is shutting down; retry elsewhere"
        assert response.headers["retry-after"] == "1"
        assert time.monotonic() - started < 5
        proc.wait(timeout=10)  # the context manager asserts a clean exit, no traceback


def test_client_that_disconnects_mid_body_is_not_a_server_error(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/rewards HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"items\": [")  # fmt: skip
        time.sleep(0.2)
    time.sleep(0.5)
    metrics = httpx.get(f"{server}/metrics").text
    assert 'status="500"' not in metrics
    assert 'referee_requests_total{pipeline="?",status="499"} 1.0' in metrics


def test_default_config_serves_a_real_model_reward_out_of_the_box(server: str) -> None:
    """The embedded default's `similarity` pipeline: MiniLM embeddings, loaded from the
    installed package; a paraphrase of the reference scores far above an unrelated text."""
    body = {"pipeline": "similarity", "items": [
        {"id": "same", "reference": "Paris is the capital of France.",
         "response": "The capital of France is Paris."},
        {"id": "other", "reference": "Paris is the capital of France.",
         "response": "Turtles can live for over a hundred years."},
        {"id": "none", "response": "no reference given"},
    ]}  # fmt: skip
    results = httpx.post(f"{server}/v1/rewards", json=body, timeout=60).json()["results"]
    assert results[0]["reward"] > 0.8 > 0.3 > results[1]["reward"]
    assert results[2]["error"]["type"] == "invalid_input"
    assert "compares with `reference`" in results[2]["error"]["message"]
    ready = httpx.get(f"{server}/readyz").json()
    assert ready["scorers"]["semantic"]["ready"] is True
    assert ready["scorers"]["semantic"]["device"] == "cpu"
