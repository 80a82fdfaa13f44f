"""Live reloads on a real `referee serve`: the SDK's admin calls over HTTP and gRPC,
SIGHUP re-applying the config file, and the docs' trainer recipe run as written."""

from __future__ import annotations

import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from referee_client import RewardClient
from referee_client.errors import AuthenticationError, BadRequestError, NotFoundError
from tests.e2e.server import free_port, running_server

pytest.importorskip("torch", reason="model scorers need the models extra")

ROOT = Path(__file__).parents[2]
ITEMS = [{"id": f"i{i}", "prompt": f"What is {i} + {i}?", "response": f"It is {2 * i}."}
         for i in range(4)]  # fmt: skip


def config(model: Path) -> dict[str, Any]:
    return {
        "server": {"api_keys": ["user"], "admin_api_keys": ["adm"]},
        "scorers": {"rm": {"kind": "classifier",
                           "options": {"model": str(model), "input": "pair"}}},
        "pipelines": {"rm": {"reward": "rm"}},
    }  # fmt: skip


def recipe() -> str:
    page = (ROOT / "docs/operations/live-updates.md").read_text()
    found = re.search(
        r"<!-- doctest: test \(tests/e2e/test_live_reload_process.py: live-reload\) -->\s*```python\n(.*?)```",
        page,
        re.DOTALL,
    )
    assert found, "the live-reload recipe is on the page"
    return found.group(1)


def test_sdk_admin_calls_over_http_and_grpc_and_sighup_reapplies_the_config_file(
    tmp_path: Path, minilm_classifier: Path, minilm_classifier_b: Path
) -> None:
    path = tmp_path / "referee.yaml"
    path.write_text(yaml.safe_dump(config(minilm_classifier)))
    grpc_port = free_port()
    with running_server("--config", str(path), "--grpc-port", str(grpc_port)) as (url, proc):
        http = RewardClient(url, api_key="user", admin_key="adm")
        grpc = RewardClient(f"grpc://127.0.0.1:{grpc_port}", api_key="user", admin_key="adm")
        with http, grpc:
            before = http.score(ITEMS, pipeline="rm")
            [rm] = http.admin.scorers().scorers
            assert rm.name == "rm" and rm.state == "ready" and rm.pipelines == ["rm"]
            with pytest.raises(AuthenticationError):
                RewardClient(url, admin_key="user").admin.scorers()
            with pytest.raises(NotFoundError):
                grpc.admin.reload_scorer("nope")
            with pytest.raises(BadRequestError, match="no such file or directory"):
                grpc.admin.reload_scorer("rm", options={"model": str(tmp_path / "missing")})
            result = grpc.admin.reload_scorer("rm", options={"model": str(minilm_classifier_b)})
            assert result.reloaded == ["rm"] and result.pipelines["rm"] != before.pipeline_version
            after = grpc.score(ITEMS, pipeline="rm")
            assert after.pipeline_version == result.pipelines["rm"]
            assert [r.reward for r in after.results] != [r.reward for r in before.results]
            assert grpc.admin.scorers().scorers[0].fingerprint == result.fingerprints["rm"]

            # SIGHUP: the file gains a pipeline; the server applies it without a restart
            changed = config(minilm_classifier_b)
            changed["scorers"]["len"] = {"kind": "length", "options": {
                "mode": "overlong", "max_length": 100, "buffer_length": 20}}  # fmt: skip
            changed["pipelines"]["len"] = {"reward": "len"}
            path.write_text(yaml.safe_dump(changed))
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 60
            while "len" not in httpx.get(f"{url}/v1/pipelines",
                                         headers={"x-api-key": "user"}).text:  # fmt: skip
                assert time.monotonic() < deadline, "SIGHUP did not apply the config"
                time.sleep(0.2)
            assert http.score(ITEMS, pipeline="len").results[0].reward == 0.0
            assert proc.poll() is None, "the server keeps running"


def test_the_docs_recipe_reloads_every_k_steps_and_the_next_step_carries_the_new_version(
    tmp_path: Path, minilm_classifier: Path, minilm_classifier_b: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    path = tmp_path / "referee.yaml"
    path.write_text(yaml.safe_dump(config(minilm_classifier)))
    heads = [minilm_classifier_b, minilm_classifier]
    with running_server("--config", str(path)) as (url, _):
        monkeypatch.setenv("REFEREE_URL", url)
        monkeypatch.setenv("REFEREE_API_KEY", "user")
        monkeypatch.setenv("REFEREE_ADMIN_KEY", "adm")
        namespace: dict[str, Any] = {}
        exec(compile(recipe(), "live-updates.md", "exec"), namespace)
        saved: list[int] = []

        def save_reward_model(step: int) -> str:  # the trainer's save: a new checkpoint dir
            target = tmp_path / f"rm-{step}"
            shutil.copytree(heads[len(saved) % 2], target)
            saved.append(step)
            return str(target)

        logged: list[tuple[int, str, list[float]]] = []
        batches = [ITEMS] * 6
        try:
            namespace["train"](batches, 2, save_reward_model,
                               lambda s, v, r: logged.append((s, v, r)))  # fmt: skip
        finally:
            namespace["client"].close()
    assert saved == [1, 3, 5]
    versions = [v for _, v, _ in logged]
    # steps 0-1 on A, 2-3 on B, 4-5 on A again: the version changes right after each reload
    assert versions[0] == versions[1] != versions[2] == versions[3] != versions[4] == versions[5]
    assert versions[0] == versions[4], "the same weights give the same version back"
    assert logged[0][2] == logged[4][2] != logged[2][2]
