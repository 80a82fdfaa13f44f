"""Connection hygiene for the HTTP server: read timeouts, a header size bound and a
connection limit, as a uvicorn protocol.

uvicorn alone leaves a connection that sends nothing, half a request head or half a body
open for ever: its keep-alive timer is armed only after a response, ``limit_concurrency``
answers 503 only once a request head has arrived (the connection, and its file
descriptor, stay), and the httptools parser has no header size limit. This protocol adds:

- a head deadline: a request's head (request line and headers) must arrive within
  ``header_read_timeout_s`` of the connection opening or of the request's first byte;
- a body deadline: its body within ``body_read_timeout_s`` of the head (time the server
  itself stops reading, while a request waits at admission, does not count);
- ``max_header_bytes`` for a head (431);
- ``max_connections`` open at once: at the limit a new connection closes the one that
  has been idle longest (between requests, or not yet sent a complete head); when none is
  idle, the new connection is answered 503 and closed. Idle connections therefore never
  lock out working ones, and descriptors stay bounded.

A timed-out request gets ``408`` (if nothing was answered yet) and the connection closes.
It also stamps each request with the moment its first byte arrived
(``scope["state"]["accepted_at"]``, ``time.monotonic()``): admission control and the
request deadline count from there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from referee.admission import ADMISSION_STATE, AdmissionController
from referee.config import ServerSettings
from referee.http.admission import body_size, is_reward_path

__all__ = ["ConnectionLimits", "GuardedHttpProtocol", "RefereeUvicornConfig"]


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 1000
    header_read_timeout_s: float = 10.0
    body_read_timeout_s: float = 60.0
    max_header_bytes: int = 65536

    @classmethod
    def from_settings(cls, server: ServerSettings) -> ConnectionLimits:
        return cls(
            max_connections=server.max_connections,
            header_read_timeout_s=server.header_read_timeout_s,
            body_read_timeout_s=server.body_read_timeout_s,
            max_header_bytes=server.max_header_bytes,
        )


class RefereeUvicornConfig(uvicorn.Config):
    """uvicorn's Config carrying the connection limits to the protocol (a module-level
    class, so it pickles into worker processes)."""

    def __init__(self, *args: Any, connection_limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection_limits = connection_limits


def _response(status: int, reason: str, kind: str, message: str, *, keep_alive: bool = False,
              retry_after_s: int | None = None) -> bytes:  # fmt: skip
    body = json.dumps({"error": {"type": kind, "message": message, "param": None}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
    )
    if not keep_alive:
        head += "connection: close\r\n"
    if retry_after_s is not None:
        head += f"retry-after: {retry_after_s}\r\n"
    return head.encode() + b"\r\n" + body


_TOO_MANY = _response(503, "Service Unavailable", "overloaded",
                      "too many open connections; retry shortly", retry_after_s=1)  # fmt: skip
_HEAD_TOO_LARGE = _response(431, "Request Header Fields Too Large", "bad_request",
                            "request head is too large")  # fmt: skip


def _timed_out(what: str, seconds: float) -> bytes:
    return _response(408, "Request Timeout", "timeout",
                     f"the request {what} did not arrive within {seconds:g}s")  # fmt: skip


class _Registry:
    """The idle connections of one server, longest idle first."""

    def __init__(self) -> None:
        self.idle: OrderedDict[GuardedHttpProtocol, None] = OrderedDict()


_REGISTRIES: dict[int, _Registry] = {}


class GuardedHttpProtocol(HttpToolsProtocol):
    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None,
                 ) -> None:  # fmt: skip
        super().__init__(config, server_state, app_state, _loop)
        limits = getattr(config, "connection_limits", None)
        self.limits: ConnectionLimits = limits or ConnectionLimits()
        self._registry = _REGISTRIES.setdefault(id(server_state), _Registry())
        self._timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # request line and header bytes of the request being read
        self._discarding = False  # reading the body of a request refused at the door
        self._reading_head = True  # between requests or in a head: bytes count as head
        self._raw_head_bytes = 0

    # -- connection lifecycle -----------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._evict_idle():
            self.transport.write(_TOO_MANY)
            self.transport.close()
            return
        self._registry.idle[self] = None
        self._arm(self.limits.header_read_timeout_s, "head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._registry.idle.pop(self, None)
        super().connection_lost(exc)

    def _evict_idle(self) -> bool:
        while self._registry.idle:
            victim, _ = self._registry.idle.popitem(last=False)
            if victim is not self and not victim.transport.is_closing():
                victim._cancel()
                victim.transport.close()
                return True
        return False

    # -- timers ---------------------------------------------------------------------------
    def _arm(self, seconds: float, what: str) -> None:
        self._cancel()
        self._timer = self.loop.call_later(seconds, self._expired, seconds, what)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, seconds: float, what: str) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if what == "body" and self.flow.read_paused:  # we stopped reading, not the client
            self._arm(seconds, what)
            return
        cycle = self.cycle
        if what == "head":  # unless an earlier (pipelined) request is still being answered
            answer = cycle is None or cycle.response_complete
        else:  # unless this request was answered already (refused before its body was read)
            answer = cycle is not None and not cycle.response_started
        if answer:
            self.transport.write(_timed_out(what, seconds))
        self.transport.close()

    # -- parser callbacks -----------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():  # refused or timed out: read no further
            return
        if self._reading_head:
            self._raw_head_bytes += len(data)
        super().data_received(data)
        if self._reading_head and self._raw_head_bytes > self.limits.max_header_bytes:
            self._head_bytes = self._raw_head_bytes  # a head still arriving, already too large
            self._refused_head()

    def on_message_begin(self) -> None:
        # A request whose head arrives in the same read as the end of a body discarded after
        # a refusal at the door finds the keep-alive timer armed for the moment between
        # them (uvicorn cancels it only when data arrives): left armed, it would close the
        # connection under this request once keep_alive_timeout_s had passed.
        self._unset_keepalive_if_required()
        super().on_message_begin()
        self.scope["state"]["accepted_at"] = time.monotonic()
        self._head_bytes = 0
        if self._timer is None:  # not the connection's first request: its head starts now
            self._arm(self.limits.header_read_timeout_s, "head")

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes <= self.limits.max_header_bytes:  # past it: refused, not kept
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._raw_head_bytes = 0
        self._registry.idle.pop(self, None)  # a request is under way: not evictable
        if self._refused_head():
            return
        self._arm(self.limits.body_read_timeout_s, "body")
        if self._refused_at_door():
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._discarding and self._head_bytes <= self.limits.max_header_bytes:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel()
        self._reading_head = True  # what comes next is the next request's head
        if self._discarding:  # the body of a request refused at the door: now idle
            self._discarding = False
            if not self.transport.is_closing():
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )
                self._registry.idle[self] = None
        elif self._head_bytes <= self.limits.max_header_bytes:
            super().on_message_complete()

    def _refused_at_door(self) -> bool:
        """Admission's immediate refusal of a reward request, answered here, from its
        head: no app task, no body read (it is discarded as it arrives), no JSON."""
        admission = self.app_state.get(ADMISSION_STATE)
        if not isinstance(admission, AdmissionController) or self.parser.get_method() != b"POST":
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # an earlier pipelined request is still being answered
        if not is_reward_path(httptools.parse_url(self.url).path.decode("latin-1")):
            return False
        size = body_size(self.headers)
        if size > admission.max_request_bytes:
            return False  # the route answers 413
        refused = admission.refusal(size, self.scope["state"]["accepted_at"])
        if refused is None:
            return False
        keep_alive = self.parser.should_keep_alive() and not self.expect_100_continue
        retry = round(refused.retry_after_s or 1.0)
        self.transport.write(_response(429, "Too Many Requests", refused.kind.value,
                                       refused.message, keep_alive=keep_alive,
                                       retry_after_s=retry))  # fmt: skip
        if keep_alive:
            self._discarding = True
        else:
            self._cancel()
            self.transport.close()
        return True

    def _refused_head(self) -> bool:
        """A head over ``max_header_bytes``: answer 431 and close (once)."""
        if self._head_bytes <= self.limits.max_header_bytes:
            return False
        if not self.transport.is_closing():
            self._cancel()
            self.transport.write(_HEAD_TOO_LARGE)
            self.transport.close()
        return True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._registry.idle[self] = None  # uvicorn's keep-alive timer runs from here
