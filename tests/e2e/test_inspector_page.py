"""The reward inspector page (/ui) in a real browser: Debian's Chromium, driven by
Playwright (no browser download), against a `referee serve` subprocess with real scorers
(rule scorers; all-MiniLM-L6-v2 as a similarity scorer, and with seeded heads as a reward
model and a process reward model). Each view is clicked through; the page must log no
console error once the key is entered, show server errors as messages, and every
screenshot must hold a drawn page (not blank). With REFEREE_UI_SCREENSHOTS=DIR the
screenshots are also saved there (docs/images holds the ones the docs show)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright import sync_api  # the dev extra; a missing one fails, never skips

from referee.eval import SAMPLES
from tests.e2e.server import REFEREE, running_server
from tests.models import minilm_dir

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]  # fmt: skip
KEY = "inspector-test-key"
STEPS = "First, 7 * 8 = 56.\n\nThen 56 + 4 = 60.\n\nSo the answer is \\boxed{60}."


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, minilm_classifier: Path, minilm_prm: Path
) -> Iterator[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: apt-get install -y chromium (.ci/run does)")
    scorers: dict[str, Any] = {
        "math": {"kind": "math"},
        "think_format": {"kind": "format", "options": {"mode": "think_answer"}},
        "overlong": {"kind": "length", "options": {"mode": "overlong", "unit": "chars",
                                                   "max_length": 400, "buffer_length": 100}},
        "rm": {"kind": "classifier", "options": {"model": str(minilm_classifier),
                                                 "aspects": {"helpful": 1, "safe": 2}}},
        "prm": {"kind": "prm", "options": {"model": str(minilm_prm), "step_token": "[unused0]",
                                           "aggregate": "min"}},
        "semantic": {"kind": "similarity", "options": {"model": str(minilm_dir())}},
    }  # fmt: skip
    pipelines = {
        "default": {"description": "math behind the format gate, minus overlong",
                    "reward": {"type": "weighted_sum", "weights": [1.0, 1.0], "inputs": [
                        {"type": "gate", "name": "correct_if_formatted",
                         "when": {"node": "think_format", "op": ">=", "value": 1.0},
                         "then": "math", "otherwise": 0.0}, "overlong"]}},
        "hybrid": {"description": "a reward model and embedding similarity, penalised when "
                   "they disagree", "reward": {"type": "uwo", "lam": 0.5,
                                               "inputs": ["rm", "semantic", "math"]}},
        "steps": {"description": "a process reward model (min over steps)", "reward": "prm"},
    }  # fmt: skip
    path = tmp_path_factory.mktemp("cfg") / "inspector.yaml"
    path.write_text(yaml.safe_dump({"server": {"api_keys": [KEY]}, "scorers": scorers,
                                    "pipelines": pipelines}))  # fmt: skip
    with running_server("--config", str(path)) as (url, _):
        yield url


def assert_drawn(png: Path) -> None:
    """A screenshot of a drawn page: many colours, and a good share of non-white pixels."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, f"{png.name}: only {len(colours)} colours: a blank page?"
    inked = sum(n for n, rgb in colours if sum(rgb) < 3 * 235)
    assert inked / (image.width * image.height) > 0.02, f"{png.name}: almost nothing drawn"


def test_every_view_of_the_inspector_works_in_chromium(server: str, tmp_path: Path) -> None:
    shots = tmp_path / "shots"
    shots.mkdir()
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))

        def shot(name: str) -> None:
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            assert_drawn(shots / f"{name}.png")

        # without the key: the server's 401 is shown as a message, never a blank page
        page.goto(f"{server}/ui")
        page.wait_for_selector("#pipelines .item-error")
        assert "unauthorized" in page.inner_text("#message")
        assert errors and all("401" in e for e in errors), errors  # the refused calls only
        errors.clear()

        # pipelines: a tree per pipeline, its scorers and version
        page.fill("#api-key", KEY)
        page.dispatch_event("#api-key", "change")
        page.wait_for_selector(".pipeline[data-name='hybrid'] .tree")
        assert page.locator(".pipeline").count() == 3
        hybrid = page.inner_text(".pipeline[data-name='hybrid']")
        assert "uwo" in hybrid and "classifier" in hybrid and "similarity" in hybrid
        assert "sha256:" in hybrid
        assert "gate: when think_format >= 1" in page.inner_text(".pipeline[data-name='default']")
        assert page.is_hidden("#message")
        shot("pipelines")

        # playground: a PRM's step scores over the steps, compared with a second pipeline
        page.click("nav button[data-view='playground']")
        page.fill("#items", "\n".join([
            json.dumps({"id": "steps", "prompt": "What is 7 * 8 + 4?", "response": STEPS,
                        "reference": "60"}),
            '{"id": "short", "prompt": "What is 7 * 8 + 4?", "response": "60", "reference": "60"}',
        ]))  # fmt: skip
        page.select_option("#pg-pipeline", "steps")
        page.select_option("#pg-compare", "hybrid")
        page.click("#score")
        page.wait_for_selector(".item[data-id='short']")
        assert page.locator(".item[data-id='steps'] .step").count() == 3  # three highlighted
        assert "3 step scores" in page.inner_text(".item[data-id='steps']")
        compare = page.inner_text(".item[data-id='short']")
        assert "steps" in compare and "hybrid" in compare and "semantic" in compare
        shot("playground")

        # an item that fails shows its error inline; the others still get rewards
        page.fill("#items", '{"id": "ok", "response": "56", "reference": "56"}\n'
                            '{"id": "no-ref", "response": "56"}')  # fmt: skip
        page.select_option("#pg-pipeline", "hybrid")
        page.select_option("#pg-compare", "")
        page.click("#score")
        page.wait_for_selector(".item[data-id='no-ref'] .item-error")
        assert "reference" in page.inner_text(".item[data-id='no-ref'] .item-error")
        assert page.locator(".item[data-id='ok'] .reward").count() == 1
        # a request the server refuses (an item without a response): its message is shown
        page.fill("#items", '{"id": "x", "prompt": "p"}')
        page.click("#score")
        page.wait_for_selector("#results .item-error")
        assert "422 invalid_request" in page.inner_text("#message")
        assert [e for e in errors if "422" not in e] == [], errors
        errors.clear()
        page.fill("#items", '{"id": "x", ')  # not JSON: caught on the page
        page.click("#score")
        assert "not valid JSON" in page.inner_text("#message")

        # health: the stats of what was just scored, as charts that refresh
        page.click("nav button[data-view='health']")
        page.select_option("#health-pipeline", "hybrid")
        page.wait_for_selector(".chart h4:text('Reward histogram: rm')")
        first = page.inner_text("#health-updated")
        page.wait_for_function(
            f"document.querySelector('#health-updated').textContent !== {first!r}"
        )
        text = page.inner_text("#health")
        assert "Ensemble disagreement" in text and "Length correlation over time" in text
        assert "4 items in the window" in text and "1 errors (missing_field: 1)" in text
        assert page.locator(".chart svg rect").count() > 0  # histogram bars drawn
        shot("health")

        # eval: a report written by `referee eval --html` against this server, opened
        report = tmp_path / "report.html"
        done = subprocess.run([*REFEREE, "eval", str(SAMPLES / "math_pairs.jsonl"), "--url", server,
                               "-p", "default", "--html", str(report), "--no-progress"],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "REFEREE_API_KEY": KEY})  # fmt: skip
        assert done.returncode == 0, done.stderr
        page.click("nav button[data-view='eval']")
        page.set_input_files("#eval-file", str(report))
        page.wait_for_selector("#eval-frame:not([hidden])")
        assert "pipeline default" in page.inner_text("#eval-summary")
        assert "0.900" in page.inner_text("#eval-summary")  # the hand-computed accuracy
        frame = page.frame_locator("#eval-frame")
        frame.locator("img").last.wait_for()
        assert frame.locator("img").count() >= 3  # a figure per signal
        handle = page.query_selector("#eval-frame")
        inner = handle.content_frame() if handle else None
        assert inner is not None
        inner.wait_for_function("[...document.images].every((i) => i.complete && i.naturalWidth)")
        page.locator("#eval-frame").screenshot(path=str(shots / "eval-report.png"))
        assert_drawn(shots / "eval-report.png")  # the report itself, not an empty frame
        shot("eval")
        browser.close()
    assert errors == [], errors
    missing = httpx.get(f"{server}/ui/__init__.py")  # only the shipped files are served
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    target = os.environ.get("REFEREE_UI_SCREENSHOTS")
    if target:
        for png in shots.iterdir():
            shutil.copy(png, Path(target) / f"inspector-{png.name}")
