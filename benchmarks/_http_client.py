"""A minimal HTTP/1.1 client on asyncio streams for the load benchmarks: keep-alive
connections in a pool, one POST at a time per connection, no JSON of its own. httpx costs
more CPU per request than the server spends refusing one, and shares the same cores."""

from __future__ import annotations

import asyncio

__all__ = ["Client"]


class Client:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        head = (f"POST /v1/rewards HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: "
                f"application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
        for attempt in range(3):
            # skip idle connections the server has closed meanwhile (keep-alive timeout)
            while self.idle and (self.idle[-1][0].at_eof() or self.idle[-1][1].is_closing()):
                self.idle.pop()[1].close()
            reused = bool(self.idle)
            reader, writer = self.idle.pop() if reused else await asyncio.open_connection(
                self.host, self.port)  # fmt: skip
            try:
                writer.write(head + body)
                raw = await reader.readuntil(b"\r\n\r\n")
                lines = raw.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                headers = {k.lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:] if line)}  # fmt: skip
                payload = await reader.readexactly(int(headers.get("content-length", "0")))
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
                if reused and attempt < 2:  # a keep-alive connection the server was closing
                    continue
                raise
            if headers.get("connection", "").lower() == "close":
                writer.close()
            else:
                self.idle.append((reader, writer))
            return status, headers, payload
        raise AssertionError("unreachable")
