"""math-verify's regression cases through the HTTP app: a `math` pipeline on a real engine."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from referee.config import default_config_path
from tests.integration.conftest import serve_app
from tests.unit.test_math_verify_cases import CASES, TEXTUAL

CONFIG: dict[str, Any] = {
    "scorers": {"math": {"kind": "math", "options": {"workers": 1}}},
    "pipelines": {"math": {"reward": "math"}},
}


def case(file: str, index: int) -> dict[str, Any]:
    [found] = [c for c in CASES if c["file"] == f"test_{file}.py" and c["index"] == index]
    return found


async def test_cases_over_http_give_verdicts_info_and_per_item_errors_in_order() -> None:
    chosen = {
        "text-only": case("open_thoughts", 7),  # the reference parses only to text
        "hedge": case("open_thoughts", 18),  # Referee differs on purpose (see the data file)
        "even": case("numina_cases", 29),
        "wrong": case("numina_cases", 17),
        "tuples": case("numina_cases", 0),
    }
    items = [{"id": k, "response": c["pred"], "reference": c["gold"]} for k, c in chosen.items()]
    items.insert(2, {"id": "broken", "response": "\\boxed{1}", "reference": "$\\frac{1}{$"})
    async with serve_app(CONFIG) as (client, _):
        response = await client.post("/v1/rewards", json={"pipeline": "math", "items": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["id"] for r in results] == [item["id"] for item in items]
    by_id = {r["id"]: r for r in results}
    for key, c in chosen.items():
        want = 1.0 if c.get("referee", c["expected"]) else 0.0
        assert by_id[key]["reward"] == want and by_id[key]["error"] is None, key
    assert [k for k in chosen if chosen[k].get("referee") is not None] == ["hedge"]
    assert by_id["text-only"]["info"]["math"].startswith(TEXTUAL)
    assert by_id["even"]["info"] is None  # an expression reference: no note
    assert "not equivalent" in by_id["hedge"]["info"]["math"]
    broken = by_id["broken"]
    assert broken["reward"] is None and broken["error"]["type"] == "invalid_reference"
    assert broken["error"]["message"] == (
        "scorer 'math': cannot parse the reference '$\\\\frac{1}{$' as a math answer: "
        "it has a '{' that is never closed"
    )
    assert response.json()["usage"]["errors"] == 1


DOC = Path(__file__).parents[2] / "docs" / "scorers" / "rules.md"


def doc_block(name: str) -> Any:
    found = re.search(
        rf"<!-- doctest: test \(tests/integration/test_math_verify_cases_http.py: {name}\) -->\n```json\n(.*?)\n```",
        DOC.read_text(),
        re.S,
    )
    assert found, f"no {name} block in {DOC}"
    return json.loads(found.group(1))


async def test_the_documented_text_reference_example_gives_the_documented_results() -> None:
    default = yaml.safe_load(default_config_path().read_text())
    config = {  # the default config's math scorer and pipeline, without its model scorer
        "scorers": {"math": default["scorers"]["math"]},
        "pipelines": {"math": default["pipelines"]["math"]},
    }
    async with serve_app(config) as (client, _):
        response = await client.post("/v1/rewards", json=doc_block("math-text-request"))
    assert response.status_code == 200, response.text
    documented = doc_block("math-text-results")
    got = [
        {k: r[k] for k in d} for r, d in zip(response.json()["results"], documented, strict=True)
    ]
    assert got == documented
