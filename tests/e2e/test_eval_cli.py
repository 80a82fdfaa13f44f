"""`referee eval` as a user types it, on the sample sets shipped in the package: the
table's accuracies and the JSON report equal values worked out by hand from the samples
(see docs/eval.md), offline through the engine and against a running server."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

import referee
from referee.eval import SAMPLES
from tests.e2e.server import REFEREE, cli, running_server

ROOT = Path(__file__).resolve().parents[2]
MATH_PAIRS = SAMPLES / "math_pairs.jsonl"
FORMAT_PAIRS = SAMPLES / "format_pairs.jsonl"
GRADED = SAMPLES / "math_graded_best_of_4.jsonl"


@pytest.fixture(scope="module")
def rules_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The embedded default config without its embedding model (loading it takes most of a
    run on this shared machine): the same `default` and `math` pipelines, same versions."""
    config = yaml.safe_load((Path(referee.__file__).parent / "default_config.yaml").read_text())
    del config["scorers"]["semantic"], config["pipelines"]["similarity"]
    path = tmp_path_factory.mktemp("cfg") / "rules.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def run_eval(tmp_path: Path, path: Path, *args: str) -> tuple[str, dict[str, object]]:
    out = tmp_path / f"{path.stem}.json"
    html = tmp_path / f"{path.stem}.html"
    done = cli("eval", str(path), "--json", str(out), "--html", str(html), *args)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stderr
    if "--no-progress" not in args:
        assert "item/s" in done.stderr  # the progress bar
    page = html.read_text()
    assert page.count('src="data:image/png;base64,') >= 1 and "<table>" in page
    return done.stdout, json.loads(out.read_text())


def test_math_pairs_default_pipeline_matches_the_hand_computed_accuracies(
    tmp_path: Path, rules_config: str
) -> None:
    # 8 pairs: chosen right and formatted, rejected wrong -> 1 each. `div` and `shift`:
    # chosen right but without <think>/<answer>, so the format gate gives it 0, as the wrong
    # rejected answer gets -> ties, 0.5 each. (8 + 1) / 10 = 0.9; 4.5 / 5 per subset.
    stdout, report = run_eval(tmp_path, MATH_PAIRS, "-p", "default", "-c", rules_config)
    assert "| reward | 0.900 (10) | 0.900 (5) | 0.900 (5) |" in stdout
    signals = report["signals"]
    assert isinstance(signals, dict)
    reward = signals["reward"]
    assert reward["accuracy"] == pytest.approx(0.9) and reward["ties"] == 2
    assert reward["margin"]["mean"] == pytest.approx(0.8)
    # chosen shorter: add, div(½), pow, linear, square, shift(½), product -> 6/7; chosen
    # longer: sub, fraction -> 1; `mul` has equal lengths and is in neither
    assert reward["length"]["chosen_shorter"] == {"pairs": 7, "accuracy": pytest.approx(6 / 7)}
    assert reward["length"]["chosen_longer"] == {"pairs": 2, "accuracy": 1.0}
    # per component: the format check prefers the rejected side on div/shift, ties elsewhere
    assert signals["think_format"]["accuracy"] == pytest.approx(0.4)
    # math runs only behind the gate: 8 pairs, all right; div/shift have no value, counted
    assert (signals["math"]["pairs"], signals["math"]["missing"]) == (8, 2)
    assert signals["math"]["accuracy"] == 1.0
    assert signals["overlong"]["accuracy"] == 0.5  # every response is short: all ties
    assert report["item_errors"] == 0 and report["examples"] == 10


def test_math_pipeline_gets_every_math_pair_and_ties_every_format_pair(
    tmp_path: Path, rules_config: str
) -> None:
    stdout, _ = run_eval(tmp_path, MATH_PAIRS, "-p", "math", "-c", rules_config)
    assert "| reward | 1.000 (10) | 1.000 (5) | 1.000 (5) |" in stdout
    stdout, _ = run_eval(tmp_path, FORMAT_PAIRS, "-p", "math", "-c", rules_config,
                              "--no-progress")  # fmt: skip
    # both sides of each format pair hold the right answer: math alone cannot tell them apart
    assert "| reward | 0.500 (6) | 0.500 (6) |" in stdout


def test_format_pairs_default_pipeline_prefers_every_formatted_answer(
    tmp_path: Path, rules_config: str
) -> None:
    _, report = run_eval(tmp_path, FORMAT_PAIRS, "-p", "default", "-c", rules_config)
    signals = report["signals"]
    assert isinstance(signals, dict)
    assert signals["reward"]["accuracy"] == 1.0 and signals["think_format"]["accuracy"] == 1.0
    assert signals["reward"]["length"]["chosen_shorter"]["pairs"] == 2  # two_thinks, prose


def test_graded_best_of_n_top1_and_spearman_match_the_hand_computation(
    tmp_path: Path, rules_config: str
) -> None:
    # grades 3 formatted right, 2 right without format, 1 formatted wrong, 0 no answer.
    # default: rewards 1,0,0,0 -> top-1 1.0; rho = 3/sqrt(15) = 0.775 in every set.
    # math: rewards 1,1,0,0 -> the top is shared by grades 3 and 2: 0.5; rho = 4/sqrt(20)
    stdout, _ = run_eval(tmp_path, GRADED, "-p", "default", "-c", rules_config)
    assert "| reward | 1.000 (3) | 1.000 (2) | 1.000 (1) | 0.250 | 0.775 |" in stdout
    stdout, _ = run_eval(tmp_path, GRADED, "-p", "math", "-c", rules_config)
    assert "| reward | 0.500 (3) | 0.500 (2) | 0.500 (1) | 0.250 | 0.894 |" in stdout


def test_eval_against_a_running_server_gives_the_offline_numbers(
    tmp_path: Path, rules_config: str
) -> None:
    offline = run_eval(tmp_path, MATH_PAIRS, "-p", "default", "-c", rules_config)[1]
    with running_server() as (url, _):  # the embedded default config, as a user starts it
        served = run_eval(tmp_path, MATH_PAIRS, "-p", "default", "--url", url)[1]
    assert served["source"] == f"server {url}"
    assert served["pipeline_version"] == offline["pipeline_version"]
    assert served["signals"] == offline["signals"]


def test_bad_lines_stop_the_eval_with_their_number_or_are_skipped(
    tmp_path: Path, rules_config: str
) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = MATH_PAIRS.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b'{"prompt": "p", "chosen": "c"}\n' + b"\xff\n" + lines[1])
    done = cli("eval", str(path))
    assert done.returncode == 2
    assert f"error: {path}:line 2: `rejected` must be a string; it is missing" in done.stderr
    done = cli("eval", str(path), "--skip-bad", "--no-progress", "-c", rules_config)
    assert done.returncode == 0, done.stderr
    assert "2 pairs from" in done.stdout and "2 bad lines skipped" in done.stdout
    assert f"skipped {path}:3: not valid UTF-8" in done.stderr


def test_an_unknown_pipeline_is_a_clear_error(rules_config: str) -> None:
    done = cli("eval", str(MATH_PAIRS), "-p", "nope", "-c", rules_config)
    assert done.returncode == 2
    assert "nope" in done.stderr and "Traceback" not in done.stderr


def documented_run(name: str) -> tuple[str, str]:
    """The docs/eval.md command marked `tests/e2e/test_eval_cli.py: NAME` and the table
    printed after it (the next ```text block)."""
    marker = f"<!-- doctest: test (tests/e2e/test_eval_cli.py: {name}) -->"
    after = (ROOT / "docs" / "eval.md").read_text().split(marker + "\n", 1)[1]
    command = re.match(r"```bash\n(.*?)```", after, flags=re.S)
    printed = re.search(r"```text\n(.*?)```", after, flags=re.S)
    assert command and printed, f"docs/eval.md: no command and table after {marker}"
    return command.group(1).strip(), printed.group(1).strip()


@pytest.mark.parametrize("name", ["eval-pairs", "eval-best-of-n"])
def test_the_documented_commands_print_the_documented_tables(tmp_path: Path, name: str) -> None:
    command, printed = documented_run(name)
    (tmp_path / "service").symlink_to(ROOT / "service")  # the docs' relative sample paths
    done = subprocess.run([*REFEREE, *shlex.split(command)[1:]], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    # a pipeline's version hashes the installed math-verify/sympy versions too (see the
    # README test): equal where those are equal, so compare everything else
    version = re.compile(r"sha256:[0-9a-f]{16}")
    assert version.sub("sha256:…", done.stdout.strip()) == version.sub("sha256:…", printed)
