"""Overload through a real `referee serve` (issue 13, finding 2): a reward request that
cannot finish within its deadline is refused from its head, at once, 429 with Retry-After,
its body discarded and the keep-alive connection still usable; the deadline covers the
time a request waits at the door."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.e2e.server import running_server

# One request in service at a time, 0.5 s an item; deadline 1 s, so a request may be
# predicted to need at most 0.5 s (half its deadline) when it arrives.
CONFIG = """
server: {request_timeout_s: 1.0, max_concurrent_requests: 1}
scorers:
  slow:
    kind: python
    options: {function: "tests.probes:slow_reward", kwargs: {delay_s: 0.5}}
    batching: {max_batch_size: 1, max_concurrent_batches: 1, max_wait_ms: 0}
pipelines:
  default: {reward: slow}
"""


def body(tag: str, pad: int = 0) -> bytes:
    item = {"id": "a", "response": f"{tag} words" + " x" * pad}
    return json.dumps({"items": [item]}).encode()


def post(sock: socket.socket, payload: bytes) -> tuple[bytes, float]:
    """One POST on an open connection: the response head and body, and the seconds taken."""
    t0 = time.monotonic()
    sock.sendall(b"POST /v1/rewards HTTP/1.1\r\nHost: referee\r\nContent-Type: "
                 b"application/json\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)  # fmt: skip
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += sock.recv(65536)
    return head + b"\r\n\r\n" + rest, time.monotonic() - t0


def test_overload_is_refused_from_the_head_with_retry_after(tmp_path: Path) -> None:
    config = tmp_path / "slow.yaml"
    config.write_text(CONFIG)
    with running_server("--config", str(config)) as (url, _):
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(3):  # the throughput is measured over 1 s of busy time
                assert client.post("/v1/rewards", content=body(f"warm{i}")).status_code == 200
        address = urlsplit(url)
        where = (address.hostname or "127.0.0.1", address.port or 80)
        busy = threading.Thread(
            target=lambda: httpx.post(f"{url}/v1/rewards", content=body("busy"), timeout=10)
        )
        busy.start()
        deadline = time.monotonic() + 5
        while "referee_admission_in_service 1.0" not in httpx.get(f"{url}/metrics").text:
            assert time.monotonic() < deadline, "the busy request never started"
            time.sleep(0.01)  # until `busy` is in service (for 0.5 s)
        with socket.create_connection(where) as sock:
            refused, seconds = post(sock, body("refused", pad=100_000))  # a 200 KB body
            assert refused.startswith(b"HTTP/1.1 429 "), refused[:300]
            assert b"retry-after: " in refused.lower()
            assert b'"type": "overloaded"' in refused
            assert seconds < 0.3, f"refusal took {seconds:.2f}s"
            busy.join()
            # the refused body was read past, and the connection serves the next request
            served, seconds = post(sock, body("after"))
            assert served.startswith(b"HTTP/1.1 200 "), served[:300]
            assert json.loads(served.partition(b"\r\n\r\n")[2])["results"][0]["reward"] == 2.0


def test_deadline_includes_the_wait_at_the_door(tmp_path: Path) -> None:
    config = tmp_path / "slow.yaml"
    config.write_text(CONFIG.replace("request_timeout_s: 1.0", "request_timeout_s: 30"))
    with running_server("--config", str(config)) as (url, _):
        payloads = [{"items": [{"id": "a", "response": f"w{i} x"}], "options": {"timeout_s": 0.8}}
                    for i in range(3)]  # fmt: skip
        results: list[tuple[int, float]] = []

        def send(payload: dict[str, object]) -> None:
            t0 = time.monotonic()
            r = httpx.post(f"{url}/v1/rewards", json=payload, timeout=10)
            results.append((r.status_code, time.monotonic() - t0))

        threads = [threading.Thread(target=send, args=(p,)) for p in payloads]
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        for thread in threads:
            thread.join()
    # one slot, 0.5 s each: the second waits ~0.5 s and the third ~1 s for a slot, so with
    # 0.8 s deadlines counted from arrival they cannot finish; none takes much over 0.8 s
    statuses = sorted(status for status, _ in results)
    assert statuses.count(200) == 1 and statuses.count(504) == 2, results
    assert max(seconds for _, seconds in results) < 0.8 + 0.4, results
