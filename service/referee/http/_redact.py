"""Keeps API keys out of the access log, in any encoding a client may send them.

uvicorn's access-log line holds the raw query string. A key sent as ``?api_key=K`` is
accepted, and so is ``?api%5Fkey=K`` (the server decodes names), so matching the literal text
``api_key=`` is not enough: the query is parsed, each parameter's *name* decoded (repeatedly,
so double encoding does not hide it) and compared with the secret names, and the value of
every match replaced with ``***``. The rest of the line is left as sent.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

__all__ = ["SECRET_PARAMS", "RedactSecrets", "redact_query"]

# Parameter names whose values are secrets (compared case-insensitively, "-" as "_").
SECRET_PARAMS = frozenset({"api_key", "apikey", "key", "token", "access_token", "x_api_key",
                           "authorization", "password", "secret"})  # fmt: skip
_QUERY = re.compile(r"\?([^\s#]*)")


def _name(raw: str) -> str:
    name = raw
    for _ in range(4):  # %255F -> %5F -> _
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.strip().casefold().replace("-", "_")


def redact_query(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced with ``***``."""

    def one(query: re.Match[str]) -> str:
        parts = []
        for part in re.split(r"([&;])", query.group(1)):
            name, eq, _ = part.partition("=")
            if eq and _name(name) in SECRET_PARAMS:
                part = f"{name}=***"
            parts.append(part)
        return "?" + "".join(parts)

    return _QUERY.sub(one, text) if "?" in text else text


class RedactSecrets(logging.Filter):
    """For uvicorn's access log: redacts secret query parameters in the record's arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact_query(record.msg)
        return True
