"""The HTTP edge on a real uvicorn server (in a thread, on a free port): findings 3, 4 and 7
where only a live server shows them.

- An unexpected error is a 500 with the error body, and the keep-alive connection survives
  it (it used to be closed, so the client's next request on it failed too).
- The access log never holds an API key sent in the query, however its name is encoded.
- schemathesis generates requests from the published OpenAPI document for every operation
  and checks each answer: no 5xx, and status codes, content types, headers and bodies as
  the document says.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from referee.config import load_settings
from referee.http import build_app
from tests.integration.conftest import RULES_CONFIG, formatted

KEY = "live-edge-key-7f3a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _app(config: dict[str, Any]) -> FastAPI:
    app = build_app(load_settings(data=config, environ={}))

    @app.get("/test-only/boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("a bug")

    return app


@pytest.fixture(scope="module")
def live() -> Iterator[str]:
    config = {**RULES_CONFIG, "server": {"api_keys": [KEY]}}
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_app(config), host="127.0.0.1", port=port,
                                           log_level="info", access_log=True))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the live server did not become ready"
        time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(timeout=30)


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_an_unexpected_error_is_a_500_and_the_connection_stays_usable(live: str) -> None:
    port = int(live.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /test-only/boom HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = _read_response(sock)
        assert status == 500 and b'"type":"internal"' in body
        assert headers.get("connection", "").lower() != "close"
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection
        status, _, _ = _read_response(sock)
        assert status == 200


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize(
    "query",
    [
        f"api_key={KEY}",
        f"api%5Fkey={KEY}",
        f"api%5fkey={KEY}",
        f"%61pi_key={KEY}",
        f"api%255Fkey={KEY}",  # double-encoded: not a key to the server, still never logged
        f"strip=x&API_KEY={KEY}&strip=y",
        f"api_key={KEY.replace('-', '%2D')}",
    ],
)
def test_the_access_log_never_holds_a_key_in_any_encoding(live: str, query: str) -> None:
    access = logging.getLogger("uvicorn.access")
    lines = _Lines()
    access.addHandler(lines)
    try:
        r = httpx.post(f"{live}/openrlhf/default?{query}", json={"query": [formatted("1")]})
        assert r.status_code in (200, 401), r.text
        time.sleep(0.1)  # uvicorn logs after the response is sent
    finally:
        access.removeHandler(lines)
    logged = [line for line in lines.lines if "/openrlhf/default" in line]
    assert logged, lines.lines
    for line in logged:
        assert KEY not in line and KEY.replace("-", "%2D") not in line, line
        assert "***" in line


def test_the_openrlhf_route_accepts_the_key_whose_name_is_percent_encoded(live: str) -> None:
    # Why encodings matter: the server decodes parameter names, so this key works.
    r = httpx.post(f"{live}/openrlhf/default?api%5Fkey={KEY}", json={"query": [formatted("1")]})
    assert r.status_code == 200, r.text


def test_schemathesis_finds_no_5xx_and_no_answer_the_document_does_not_describe(
    live: str,
) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_headers_conformance, response_schema_conformance]  # fmt: skip
    schema = schemathesis.openapi.from_url(f"{live}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    tested = []
    for operation in operations:

        @settings(max_examples=15, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            response = case.call(base_url=live, headers={"x-api-key": KEY})
            case.validate_response(response, checks=checks)

        run()
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /v1/rewards" in tested and "POST /openrlhf/{pipeline}" in tested
