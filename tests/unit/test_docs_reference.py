"""The reference pages are generated from the code and cannot go stale: each is
regenerated in memory and compared with the committed file; the configuration reference
covers every section, scorer kind, option and node type, each with a description."""

from __future__ import annotations

import re

import pytest
from scripts import gen_docs
from scripts._docgen_config import missing_descriptions, option_rows

from referee.config import Settings
from referee.pipeline import nodes
from referee.scorers._registry import KNOWN_KINDS, scorer_class
from tests.doc_blocks import ROOT


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return {str(path): text for path, text in gen_docs.generate().items()}


@pytest.mark.parametrize("name", sorted(gen_docs.GENERATORS))
def test_committed_reference_page_equals_a_fresh_generation(
    name: str, generated: dict[str, str]
) -> None:
    rel = f"docs/reference/{name}"
    committed = (ROOT / rel).read_text(encoding="utf-8")
    assert committed == generated[rel], f"{rel} is stale: run `python scripts/gen_docs.py`"


def test_every_config_field_has_a_description() -> None:
    assert missing_descriptions() == [], (
        "give these fields a description (Field(description=...) or a docstring under the "
        "field), then run `python scripts/gen_docs.py`"
    )


def _section(page: str, title: str) -> str:
    """The text of a `### title` section of the page."""
    found = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^##|\Z)", page, re.M | re.S)
    assert found, f"no section {title!r} in the configuration reference"
    return found.group(1)


def test_configuration_reference_lists_every_option_of_every_kind_with_its_default(
    generated: dict[str, str],
) -> None:
    page = generated["docs/reference/config.md"]
    models = {
        f"`{s}`": Settings.model_fields[s].annotation for s in ("server", "batching", "cache")
    }
    models |= {f"`{kind}`": scorer_class(kind).Options for kind in KNOWN_KINDS}
    for name in nodes.__all__:
        obj = getattr(nodes, name)
        if isinstance(obj, type) and hasattr(obj, "model_fields"):
            models[f"`{name}`"] = obj
    assert len(models) >= 3 + len(KNOWN_KINDS) + 10
    for title, model in models.items():
        section = _section(page, title)
        for option, field in option_rows(model):  # type: ignore[arg-type]
            row = re.search(
                rf"^\| `{re.escape(option)}` \| (.*?) \| (.*?) \| (.+) \|$", section, re.M
            )
            assert row, f"{title}: option {option} missing"
            default = row.group(2)
            if field.is_required():
                assert default == "**required**", (title, option, default)
            else:
                assert default.startswith(("`", "(see below)")), (title, option, default)


def test_configuration_reference_shows_real_defaults(generated: dict[str, str]) -> None:
    page = generated["docs/reference/config.md"]
    assert "| `port` | integer (≥ 0, ≤ 65535) | `8000` |" in _section(page, "`server`")
    assert "| `timeout_s` | number (> 0, ≤ 600) | `5.0` |" in _section(page, "`math`")
    assert re.search(
        r"^\| `eps` \| number \(> 0, finite\) \| `1e-06` \|",
        _section(page, "`GroupNormTransform`"),
        re.M,
    )


def test_metrics_reference_names_every_metric_of_the_module(generated: dict[str, str]) -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from referee.metrics import Metrics

    page = generated["docs/reference/metrics.md"]
    metrics = [m for m in vars(Metrics()).values() if isinstance(m, MetricWrapperBase)]
    assert len(metrics) > 20
    for metric in metrics:
        assert f"`{metric._name}" in page, metric._name


def test_http_and_grpc_references_cover_every_route_and_rpc(generated: dict[str, str]) -> None:
    http = generated["docs/reference/http.md"]
    for route in ("POST /v1/rewards", "GET /v1/pipelines/{name}/stats", "GET /v1/limits",
                  "GET /readyz", "POST /openrlhf/{pipeline}"):  # fmt: skip
        assert f"### `{route}`" in http
    assert "### RewardRequest" in http and "| `reference_rewards` |" in http
    grpc = generated["docs/reference/grpc.md"]
    for rpc in ("Score", "ScoreStream", "GetLimits"):
        assert f"| `{rpc}` |" in grpc
    assert "stream [RewardRequest](#rewardrequest)" in grpc
    # comments of the proto become the descriptions
    assert "Score a batch: one result per item, in request order." in grpc
