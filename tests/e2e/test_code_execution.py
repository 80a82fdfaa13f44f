"""`referee serve` with the code scorer in a real bubblewrap sandbox: a mixed batch of
correct, wrong and hostile Python and C++ solutions over HTTP, with an API key set on the
server that the programs try to read, while the server keeps answering other requests.
Where a hostile program would print a secret, the expected output is that secret, so a
leak would pass the case."""

from __future__ import annotations

import json
import platform
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from referee.config import load_settings
from tests.e2e.server import running_server
from tests.support import sandbox_uid_processes

pytestmark = pytest.mark.slow

API_KEY = f"sk-e2e-{secrets.token_hex(8)}"
ADD = {"inputs": ["1 2\n", "3 4\n", "5 5\n"], "outputs": ["3\n", "7\n", "10\n"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    config = tmp_path_factory.mktemp("cfg") / "referee.yaml"
    config.write_text(
        "scorers:\n"
        "  code:\n"
        "    kind: code\n"
        "    options:\n"
        "      limits: {cpu_s: 1, wall_s: 12, memory_mb: 256, output_bytes: 65536}\n"
        "pipelines:\n"
        "  code:\n"
        "    reward: code\n"
    )
    env = {"REFEREE_SERVER__API_KEYS": API_KEY}
    with running_server("--config", str(config), env=env) as (url, _):
        yield url, config


def item(
    id_: str, code: str, language: str = "python", tests: dict[str, object] = ADD
) -> dict[str, object]:
    return {
        "id": id_, "response": f"```{language}\n{code}\n```", "reference": json.dumps(tests),
        "metadata": {"language": language},
    }  # fmt: skip


def leaks(secret: str) -> dict[str, object]:
    return {"inputs": [""], "outputs": [secret + "\n"]}


def test_mixed_python_and_cpp_batch_gets_the_right_verdicts(server: tuple[str, Path]) -> None:
    url, config = server
    port = int(url.rsplit(":", 1)[1])
    add_cpp = "#include <iostream>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a+b<<'\\n';}"
    items = [
        item("py-right", "a, b = map(int, input().split())\nprint(a + b)"),
        item("py-wrong", "a, b = map(int, input().split())\nprint(a - b)"),
        item("cpp-right", add_cpp, "cpp"),
        item("cpp-wrong", add_cpp.replace("a+b", "a*b"), "cpp"),
        item("cpp-broken", "int main( {", "cpp"),
        item("cpp-loop", "int main(){ volatile long x = 0; for(;;) x++; }", "cpp"),
        item("py-fork-bomb", "import os\nwhile True:\n    os.fork()"),
        item("py-memory-bomb", "x = bytearray(2**31)"),
        item("py-huge-stdout", "while True:\n    print('x' * 10000)"),
        item("py-sleep", "import time\ntime.sleep(60)"),
        item("py-read-env", "import os\nprint(os.environ.get('REFEREE_SERVER__API_KEYS'))", tests=leaks(API_KEY)),
        item("py-read-config", f"print(open('{config}').read().splitlines()[0])", tests=leaks("scorers:")),
        item("py-call-server", f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')", tests=leaks("connected")),
        item("py-kill-parent", "import os\nos.kill(os.getppid(), 9)\nprint('alive')", tests=leaks("alive")),
        {"id": "no-code", "response": "I give up.", "reference": json.dumps(ADD)},
        item("bad-tests", "print(1)", tests={"inputs": ["1"], "outputs": []}),
        item("bad-language", "print(1)", "cobol"),
    ]  # fmt: skip
    headers = {"Authorization": f"Bearer {API_KEY}"}
    side: list[float] = []
    side_errors: list[str] = []

    def keep_asking() -> None:  # the server answers other requests during the batch
        for n in range(5):  # distinct programs: each one runs, none comes from the cache
            t = time.monotonic()
            try:
                r = httpx.post(f"{url}/v1/rewards", headers=headers, timeout=60, json={
                    "pipeline": "code", "items": [item(f"side-{n}", f"print(sum(map(int, input().split())))  # {n}")],
                })  # fmt: skip
            except httpx.HTTPError as exc:
                side_errors.append(repr(exc))
                continue
            if r.status_code != 200 or r.json()["results"][0]["reward"] != 1.0:
                side_errors.append(r.text)
            side.append(time.monotonic() - t)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    r = httpx.post(f"{url}/v1/rewards", headers=headers, timeout=120,
                   json={"pipeline": "code", "items": items})  # fmt: skip
    asker.join(120)
    assert r.status_code == 200, r.text
    results = {x["id"]: x for x in r.json()["results"]}
    assert list(results) == [i["id"] for i in items]
    rewards = {k: v["reward"] for k, v in results.items()}
    assert rewards["py-right"] == rewards["cpp-right"] == 1.0
    assert rewards["py-wrong"] == 0.0 and rewards["cpp-wrong"] == 0.0

    def verdict(id_: str) -> str:
        note = " ".join((results[id_].get("info") or {}).values())
        return note.split(": ")[1] if note.startswith("case ") else note

    assert verdict("py-wrong") == "wrong_answer"
    assert verdict("cpp-broken") == "compile_error"
    assert verdict("cpp-loop") == "time_limit"
    assert verdict("py-fork-bomb") in ("runtime_error", "time_limit")
    assert verdict("py-memory-bomb") == "memory_limit"
    assert verdict("py-huge-stdout") == "output_limit"
    assert verdict("py-sleep") == "time_limit"
    for hostile in ("py-read-env", "py-read-config", "py-call-server", "py-kill-parent"):
        assert rewards[hostile] == 0.0 or hostile == "py-kill-parent", (hostile, results[hostile])
        assert results[hostile]["error"] is None
    assert rewards["no-code"] == 0.0 and "no_code" in verdict("no-code")
    assert results["bad-tests"]["error"]["type"] == "invalid_reference"
    assert results["bad-language"]["error"]["type"] == "invalid_input"
    assert len(side) == 5 and side_errors == [], side_errors
    # after the batch: still answering, and nothing of the runs is left (sandboxes made
    # ahead for the next runs wait, holding no program)
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    deadline = time.monotonic() + 5
    while (left := sandbox_uid_processes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []
    metrics = httpx.get(f"{url}/metrics", timeout=5).text
    assert 'referee_code_runs_total{scorer="code",verdict="memory_limit"}' in metrics
    assert "referee_sandbox_run_seconds_bucket" in metrics


def test_readyz_reports_the_isolation(server: tuple[str, Path]) -> None:
    body = httpx.get(f"{server[0]}/readyz", timeout=5).json()
    assert body["scorers"]["code"]["isolation"] == "bwrap"
    assert body["scorers"]["code"]["seccomp"] == ("on" if platform.machine() == "x86_64" else "off")


# -- docs/scorers/execution.md: its config blocks load, its trainer sample runs ------------
DOC = Path(__file__).resolve().parents[2] / "docs" / "scorers" / "execution.md"


def doc_blocks(language: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.M | re.S)


def test_doc_config_blocks_load(tmp_path: Path) -> None:
    config, fragment, sql = (yaml.safe_load(b) for b in doc_blocks("yaml"))
    load_settings(data=config)
    load_settings(data={**fragment, "pipelines": {"code": {"reward": "code"}}})
    (tmp_path / "db").mkdir()
    sql["scorers"]["sql"]["options"]["databases"] = str(tmp_path / "db")
    load_settings(data=sql)


def test_doc_trainer_sample_runs_against_the_doc_config(tmp_path: Path) -> None:
    config = tmp_path / "execution.yaml"
    config.write_text(doc_blocks("yaml")[0])
    [sample] = doc_blocks("python")
    with running_server("--config", str(config)) as (url, _):
        code = sample.replace("http://localhost:8000", url)
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("1.0")
