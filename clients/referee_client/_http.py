"""The HTTP transport (httpx): POST /v1/rewards, GET /v1/limits."""

from __future__ import annotations

import httpx

from referee_client._core import RequestTooLargeError
from referee_client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    error_for_status,
    parse_retry_after,
)
from referee_client.schema import RewardRequest, RewardResponse, ServerLimits

__all__ = ["HttpTransport"]


class HttpTransport:
    def __init__(self, base_url: str, headers: dict[str, str], max_connections: int) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=None,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def score(
        self, request: RewardRequest, *, timeout: float | None, max_bytes: int | None
    ) -> RewardResponse:
        body = request.model_dump_json(exclude_none=True).encode()
        if max_bytes is not None and len(body) > max_bytes and len(request.items) > 1:
            raise RequestTooLargeError
        response = await self._request("POST", "/v1/rewards", body, timeout)
        return RewardResponse.model_validate_json(response.content)

    async def limits(self, *, timeout: float | None) -> ServerLimits | None:
        try:
            response = await self._request("GET", "/v1/limits", None, timeout)
        except APIStatusError as exc:
            if exc.status_code == 404:  # a server from before /v1/limits
                return None
            raise
        return ServerLimits.model_validate_json(response.content)

    async def _request(
        self, method: str, path: str, body: bytes | None, timeout: float | None
    ) -> httpx.Response:
        headers = {"content-type": "application/json"} if body is not None else None
        try:
            response = await self._client.request(
                method, path, content=body, headers=headers, timeout=timeout
            )
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"no answer from {self._client.base_url} in {timeout}s") from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(
                f"cannot reach {self._client.base_url}: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code >= 400:
            raise _status_error(response)
        return response

    async def aclose(self) -> None:
        await self._client.aclose()


def _status_error(response: httpx.Response) -> APIStatusError:
    try:
        detail = response.json()["error"]
        message, type_, param = str(detail["message"]), detail.get("type"), detail.get("param")
    except (ValueError, KeyError, TypeError):
        message, type_, param = response.text[:500] or response.reason_phrase, None, None
    return error_for_status(
        response.status_code,
        message,
        type=type_,
        param=param,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )
