"""The shared Redis level against a real redis-server (started here on a free port, so it
can be killed, restarted and paused): shared hits, TTL, fingerprints, failure and
recovery without restarting Referee, a slow Redis, AUTH URLs."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from referee.config import load_settings
from referee.engine import RewardEngine
from referee_client.schema import RewardRequest

# .ci/run installs redis-server when a machine lacks it; a missing binary fails here loudly.
assert shutil.which("redis-server"), "these tests need redis-server (apt-get install redis-server)"


class RedisServer:
    def __init__(self, password: str | None = None, tls_dir: Path | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.password = password
        self.tls_dir = tls_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls_dir is not None:
            ca = self.tls_dir / "cert.pem"
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={ca}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if self.tls_dir is None:
            args += ["--port", str(self.port)]
        else:
            cert, key = self.tls_dir / "cert.pem", self.tls_dir / "key.pem"
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                     "--tls-auth-clients", "no"]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    if server.proc is not None:
        server.signal(signal.SIGCONT)
    server.stop()


def settings(url: str, *, l1: int = 0, length_max: int = 100, **cache: Any):
    return load_settings(environ={}, data={
        "cache": {"backend": "redis", "url": url, "max_entries": l1, "namespace": "t",
                  "op_timeout_s": 0.1, "breaker_cooldown_s": 0.3, **cache},
        "scorers": {
            "fmt": {"kind": "format", "options": {"mode": "think_answer"}},
            "len": {"kind": "length", "options": {"mode": "overlong", "max_length": length_max, "buffer_length": 10}},
        },
        "pipelines": {"p": {"reward": {"type": "weighted_sum", "weights": [1, 1], "inputs": ["fmt", "len"]}}},
    })  # fmt: skip


def request(*ids: str) -> RewardRequest:
    return RewardRequest.model_validate({"pipeline": "p", "items": [
        {"id": i, "response": f"<think>{i}</think><answer>{i}</answer>"} for i in ids]})  # fmt: skip


async def started(url: str, **kw: Any) -> RewardEngine:
    engine = RewardEngine(settings(url, **kw))
    await engine.start()
    return engine


async def drain(engine: RewardEngine) -> None:
    for runner in engine.runners.values():
        assert runner.shared is not None
        await runner.shared.drain()


def metric(engine: RewardEngine, name: str, **labels: str) -> float:
    value = engine.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_two_engines_share_hits_through_redis(redis_server: RedisServer) -> None:
    a, b = await started(redis_server.url), await started(redis_server.url)
    try:
        first = await a.score(request("x", "y"))
        assert [r.cached for r in first.results] == [False, False]
        await drain(a)
        second = await b.score(request("x", "y", "z"))
        assert [r.cached for r in second.results] == [True, True, False]
        assert [r.reward for r in second.results[:2]] == [r.reward for r in first.results]
        assert metric(b, "referee_cache_hits_total", scorer="fmt", level="redis") == 2
    finally:
        await a.close()
        await b.close()


async def test_entries_expire_after_ttl(redis_server: RedisServer) -> None:
    engine = await started(redis_server.url, ttl_s=1)
    try:
        await engine.score(request("x"))
        await drain(engine)
        assert (await engine.score(request("x"))).results[0].cached
        await asyncio.sleep(1.5)
        assert not (await engine.score(request("x"))).results[0].cached
    finally:
        await engine.close()


async def test_a_changed_scorer_fingerprint_misses(redis_server: RedisServer) -> None:
    a = await started(redis_server.url, length_max=100)
    b = await started(redis_server.url, length_max=101)  # `len` changed, `fmt` did not
    try:
        await a.score(request("x"))
        await drain(a)
        await b.score(request("x"))
        assert metric(b, "referee_cache_hits_total", scorer="fmt", level="redis") == 1
        assert metric(b, "referee_cache_hits_total", scorer="len", level="redis") == 0
        assert metric(b, "referee_cache_misses_total", scorer="len", level="redis") == 1
    finally:
        await a.close()
        await b.close()


async def test_redis_killed_mid_stream_then_back_without_restarting_referee(
    redis_server: RedisServer,
) -> None:
    engine = await started(redis_server.url)
    try:
        answered = 0
        for n in range(60):
            if n == 20:
                redis_server.stop()
            if n == 40:
                redis_server.start()  # same port, empty
                await asyncio.sleep(0.4)  # past the breaker's cooldown
            response = await engine.score(request(f"a{n}", f"b{n % 5}"))
            assert [r.error for r in response.results] == [None, None]
            answered += 1
            await asyncio.sleep(0.01)
        assert answered == 60
        assert metric(engine, "referee_cache_errors_total", scorer="fmt", level="redis") >= 1
        await drain(engine)
        # writes resumed after the restart: a fresh engine finds items scored after it
        other = await started(redis_server.url)
        try:
            late = await other.score(request("a59", "a5"))
            assert [r.cached for r in late.results] == [True, False]
        finally:
            await other.close()
    finally:
        await engine.close()


async def test_a_paused_redis_does_not_stall_requests(redis_server: RedisServer) -> None:
    engine = await started(redis_server.url)
    try:
        await engine.score(request("warm"))
        redis_server.signal(signal.SIGSTOP)  # accepts connections, answers nothing
        latencies = []
        for n in range(10):
            t = time.perf_counter()
            response = await engine.score(request(f"p{n}"))
            latencies.append(time.perf_counter() - t)
            assert response.results[0].error is None
        # three op timeouts (0.1 s each) open the breaker; later requests skip Redis entirely
        assert max(latencies) < 0.5, latencies
        assert sorted(latencies)[5] < 0.05, latencies
        redis_server.signal(signal.SIGCONT)
    finally:
        await engine.close()


async def test_auth_urls_work_and_a_wrong_password_only_costs_the_cache() -> None:
    server = RedisServer(password="s3cret")
    server.start()
    try:
        good = await started(server.url)
        try:
            await good.score(request("x"))
            await drain(good)
            assert (await good.score(request("x"))).results[0].cached
        finally:
            await good.close()
        bad = await started(server.url.replace("s3cret", "wrong"))
        try:
            response = await bad.score(request("y"))
            assert response.results[0].error is None
            assert metric(bad, "referee_cache_errors_total", scorer="fmt", level="redis") >= 1
        finally:
            await bad.close()
    finally:
        server.stop()


async def test_garbage_under_a_key_is_a_miss_not_an_error(redis_server: RedisServer) -> None:
    from redis.asyncio import Redis

    engine = await started(redis_server.url)
    try:
        await engine.score(request("g"))
        await drain(engine)
        client = Redis.from_url(redis_server.url)
        for key in await client.keys("t:v1:*"):
            await client.set(key, b"\x00not json")
        await client.aclose()
        fresh = await started(redis_server.url)
        try:
            response = await fresh.score(request("g"))
            assert response.results[0].error is None and not response.results[0].cached
            assert metric(fresh, "referee_cache_errors_total", scorer="fmt", level="redis") == 1
        finally:
            await fresh.close()
    finally:
        await engine.close()


async def test_tls_url_with_auth(tmp_path: Path) -> None:
    """rediss:// against a TLS redis-server with a self-signed certificate (openssl)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = RedisServer(password="tls-pass", tls_dir=tmp_path)
    server.start()
    try:
        engine = await started(server.url)
        try:
            await engine.score(request("t"))
            await drain(engine)
            assert metric(engine, "referee_cache_errors_total", scorer="fmt", level="redis") == 0
            other = await started(server.url)
            try:
                assert (await other.score(request("t"))).results[0].cached
            finally:
                await other.close()
        finally:
            await engine.close()
    finally:
        server.stop()
