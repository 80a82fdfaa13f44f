"""SDK pieces that need no server: chunk planning, item checks, the error tables (client
and server agree on every error kind), backoff, and what importing the SDK pulls in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from referee.errors import GRPC_STATUS, HTTP_STATUS, ErrorKind
from referee_client import RewardItem
from referee_client._core import ClientCore, ClientSettings, as_items, plan_chunks
from referee_client.errors import (
    TYPE_STATUS,
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    GatewayTimeoutError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    error_for_status,
    is_retryable,
)


def items(groups: list[str | None]) -> list[RewardItem]:
    return [RewardItem(id=str(i), response="x", group=g) for i, g in enumerate(groups)]


def test_chunks_keep_a_group_in_one_request_and_cover_every_item_once() -> None:
    chunks = plan_chunks(items(["a", "a", None, "b", "b", "b", "a", None, "c"]), 4)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(9))
    assert all(len(chunk) <= 4 for chunk in chunks)
    for group_indices in ([0, 1, 6], [3, 4, 5], [8]):
        assert any(set(group_indices) <= set(chunk) for chunk in chunks), group_indices


def test_a_group_larger_than_a_request_is_split() -> None:
    chunks = plan_chunks(items(["big"] * 7), 3)
    assert chunks == [[0, 1, 2], [3, 4, 5], [6]]


def test_item_errors_name_the_index_and_field_and_duplicates_are_refused() -> None:
    with pytest.raises(ValueError, match=r"items\[1\]: `response` is required"):
        as_items([{"id": "a", "response": "x"}, {"id": "b"}])
    with pytest.raises(ValueError, match=r"items\[0\]\.messages\[0\]\.role"):
        as_items([{"id": "a", "messages": [{"role": "robot", "content": "x"}]}])
    with pytest.raises(ValueError, match=r"duplicated: \['a'\]"):
        as_items([{"id": "a", "response": "x"}, {"id": "a", "response": "y"}])


def test_client_and_server_agree_on_every_error_kind() -> None:
    for kind in ErrorKind:
        assert TYPE_STATUS[kind.value] == HTTP_STATUS[kind], kind
        assert kind in GRPC_STATUS, kind
    retried_codes = {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}
    for kind, code in GRPC_STATUS.items():  # retryable over gRPC exactly when over HTTP
        assert (code in retried_codes) == is_retryable(error_for_status(HTTP_STATUS[kind], "m")), (
            kind
        )


def test_error_tree_is_keyed_by_status_and_only_safe_ones_retry() -> None:
    assert type(error_for_status(422, "m")) is BadRequestError
    assert type(error_for_status(404, "m")) is NotFoundError
    assert type(error_for_status(429, "m")) is RateLimitError
    assert isinstance(error_for_status(503, "m"), ServiceUnavailableError | ServerError)
    timeout = error_for_status(504, "m")
    assert isinstance(timeout, GatewayTimeoutError) and isinstance(timeout, APITimeoutError)
    assert type(error_for_status(502, "m")) is ServerError
    assert [s for s in (400, 401, 404, 408, 413, 422, 429, 500, 502, 503, 504)
            if is_retryable(error_for_status(s, "m"))] == [408, 429, 503, 504]  # fmt: skip
    assert is_retryable(APIConnectionError("m")) and is_retryable(APITimeoutError("m"))


def test_backoff_honours_retry_after_and_is_capped_and_jittered() -> None:
    settings = ClientSettings(base_url="http://x", api_key=None, timeout=1, max_retries=9,
                              chunk_size=10, max_concurrency=1, backoff_initial_s=0.5,
                              backoff_max_s=4.0)  # fmt: skip
    core = ClientCore(settings, transport=None)  # type: ignore[arg-type]
    assert core.backoff(0, error_for_status(429, "m", retry_after=3)) == 3
    delays = [core.backoff(attempt, APIConnectionError("m")) for attempt in range(8)]
    assert all(d <= 4.0 for d in delays)
    assert 0.25 <= delays[0] <= 0.5 and delays[-1] >= 2.0
    assert len({core.backoff(5, APIConnectionError("m")) for _ in range(20)}) > 1


def _imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return {name.split(".")[0] for name in out.stdout.split()}


def test_the_sdk_imports_without_the_server_stack_and_grpc_only_for_grpc_urls() -> None:
    heavy = {"referee", "fastapi", "starlette", "uvicorn", "torch", "prometheus_client", "redis"}
    over_http = _imported_after(
        "from referee_client import RewardClient; c = RewardClient('http://127.0.0.1:1'); c.close()"
    )
    assert over_http & (heavy | {"grpc", "google"}) == set()
    over_grpc = _imported_after(
        "from referee_client import RewardClient; c = RewardClient('grpc://127.0.0.1:1'); c.close()"
    )
    assert "grpc" in over_grpc and over_grpc & heavy == set()
    adapters = _imported_after("import referee_client.adapters.trl, referee_client.adapters.verl")
    assert adapters & heavy == set()
