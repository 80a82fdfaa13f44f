"""The admin API in the SDK: ``client.admin`` (live reloads, config applies, scorer
status), over HTTP or gRPC, with the admin key (``admin_key=`` or ``$REFEREE_ADMIN_KEY``),
never the ordinary API key. Also the proto conversions of the admin messages."""

from __future__ import annotations

import os
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

from referee_client.schema import (
    ConfigApplyRequest,
    ReloadResult,
    ScorerList,
    ScorerReloadRequest,
    Swap,
)

if TYPE_CHECKING:
    from referee_client._proto import referee_pb2 as pb

__all__ = ["Admin", "AsyncAdmin"]

T = TypeVar("T")


# -- proto <-> schema -----------------------------------------------------------------
def _pb() -> Any:
    from referee_client._proto import referee_pb2

    return referee_pb2


def reload_call_to_proto(name: str, request: ScorerReloadRequest) -> pb.ReloadScorerCall:
    msg = _pb().ReloadScorerCall(name=name)
    msg.request.swap = request.swap
    msg.request.options.update(request.options)
    return msg


def reload_call_from_proto(msg: pb.ReloadScorerCall) -> tuple[str, ScorerReloadRequest]:
    from google.protobuf import json_format

    from referee_client._convert import _integral

    options = json_format.MessageToDict(msg.request.options)
    return msg.name, ScorerReloadRequest.model_validate(
        {"options": _integral(options), "swap": msg.request.swap or "beside"}
    )


def config_to_proto(request: ConfigApplyRequest) -> pb.ConfigApplyRequest:
    msg = _pb().ConfigApplyRequest(swap=request.swap)
    msg.config.update(request.config)
    return msg


def config_from_proto(msg: pb.ConfigApplyRequest) -> ConfigApplyRequest:
    from google.protobuf import json_format

    from referee_client._convert import _integral

    config = _integral(json_format.MessageToDict(msg.config))
    return ConfigApplyRequest.model_validate({"config": config, "swap": msg.swap or "beside"})


def result_to_proto(result: ReloadResult) -> pb.ReloadResult:
    return _pb().ReloadResult(**result.model_dump())


def result_from_proto(msg: pb.ReloadResult) -> ReloadResult:
    return ReloadResult(
        added=list(msg.added), reloaded=list(msg.reloaded), removed=list(msg.removed),
        pipelines=dict(msg.pipelines), fingerprints=dict(msg.fingerprints),
        duration_s=msg.duration_s,
    )  # fmt: skip


def scorers_to_proto(scorers: ScorerList) -> pb.ScorerList:
    return _pb().ScorerList(scorers=[_pb().ScorerStatus(**s.model_dump()) for s in scorers.scorers])


def scorers_from_proto(msg: pb.ScorerList) -> ScorerList:
    return ScorerList.model_validate(
        {
            "scorers": [
                {
                    "name": s.name, "kind": s.kind, "fingerprint": s.fingerprint,
                    "state": s.state, "loaded_at": s.loaded_at, "pipelines": list(s.pipelines),
                    "memory_bytes": s.memory_bytes if s.HasField("memory_bytes") else None,
                }
                for s in msg.scorers
            ]
        }
    )  # fmt: skip


# -- the clients ------------------------------------------------------------------------
def _config_data(config: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """A config as a mapping: given as one, or read from a YAML file."""
    if isinstance(config, Mapping):
        return dict(config)
    import yaml  # the server's config format; PyYAML comes with referee[server]

    data = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{config}: the top level of a config must be a mapping")
    return data


class AsyncAdmin:
    """``await client.admin.reload_scorer("rm", options={"model": "/ckpt/step-200"})``."""

    def __init__(self, base_url: str, admin_key: str | None, timeout: float) -> None:
        self._url = base_url
        self._key = admin_key or os.environ.get("REFEREE_ADMIN_KEY")
        self._timeout = timeout
        self._grpc: Any = None

    async def scorers(self) -> ScorerList:
        """Each scorer's version (fingerprint), load state, memory and load time."""
        if self._is_grpc:
            msg = await self._rpc("ListScorers", _pb().ListScorersRequest())
            return scorers_from_proto(msg)
        return ScorerList.model_validate(await self._http("GET", "/v1/admin/scorers", None))

    async def reload_scorer(
        self, name: str, *, options: Mapping[str, Any] | None = None, swap: Swap = "beside"
    ) -> ReloadResult:
        """Load ``name`` again with ``options`` changed (none: same options, new files)."""
        request = ScorerReloadRequest(options=dict(options or {}), swap=swap)
        if self._is_grpc:
            msg = await self._rpc("ReloadScorer", reload_call_to_proto(name, request))
            return result_from_proto(msg)
        path = f"/v1/admin/scorers/{quote(name, safe='')}/reload"
        return ReloadResult.model_validate(await self._http("POST", path, request))

    async def apply_config(
        self, config: Mapping[str, Any] | str | Path, *, swap: Swap = "beside"
    ) -> ReloadResult:
        """Apply a whole config (a mapping, or a YAML file's path) live."""
        request = ConfigApplyRequest(config=_config_data(config), swap=swap)
        if self._is_grpc:
            msg = await self._rpc("ApplyConfig", config_to_proto(request))
            return result_from_proto(msg)
        return ReloadResult.model_validate(await self._http("POST", "/v1/admin/config", request))

    async def aclose(self) -> None:
        if self._grpc is not None:
            await self._grpc[0].close()
            self._grpc = None

    @property
    def _is_grpc(self) -> bool:
        return urlsplit(self._url).scheme in ("grpc", "grpcs")

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._key}"} if self._key else {}

    async def _http(self, method: str, path: str, body: Any) -> Any:
        import httpx

        from referee_client._http import _status_error
        from referee_client.errors import APIConnectionError, APITimeoutError

        content = body.model_dump_json().encode() if body is not None else None
        headers = {**self._headers(), "content-type": "application/json"}
        try:
            async with httpx.AsyncClient(
                base_url=self._url.rstrip("/"), timeout=self._timeout
            ) as c:
                response = await c.request(method, path, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"no answer from {self._url} in {self._timeout}s") from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"cannot reach {self._url}: {exc}") from exc
        if response.status_code >= 400:
            raise _status_error(response)
        return response.json()

    def _stub(self) -> Any:
        if self._grpc is None:
            import grpc

            from referee_client._proto import referee_pb2_grpc

            parts = urlsplit(self._url)
            if parts.scheme == "grpcs":
                channel = grpc.aio.secure_channel(parts.netloc, grpc.ssl_channel_credentials())
            else:
                channel = grpc.aio.insecure_channel(parts.netloc)
            self._grpc = (channel, referee_pb2_grpc.RefereeAdminStub(channel))
        return self._grpc[1]

    def _call(self) -> dict[str, Any]:
        metadata = tuple(self._headers().items())
        return {"metadata": metadata, "timeout": self._timeout}

    async def _rpc(self, method: str, message: Any) -> Any:
        import grpc

        from referee_client._grpc import error_from_rpc

        try:
            return await getattr(self._stub(), method)(message, **self._call())
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, urlsplit(self._url).netloc) from None


class Admin:
    """The blocking twin of :class:`AsyncAdmin`, on the client's private loop thread."""

    def __init__(self, inner: AsyncAdmin, run: Any) -> None:
        self._inner = inner
        self._run = run

    def scorers(self) -> ScorerList:
        return self._call(self._inner.scorers())

    def reload_scorer(
        self, name: str, *, options: Mapping[str, Any] | None = None, swap: Swap = "beside"
    ) -> ReloadResult:
        return self._call(self._inner.reload_scorer(name, options=options, swap=swap))

    def apply_config(
        self, config: Mapping[str, Any] | str | Path, *, swap: Swap = "beside"
    ) -> ReloadResult:
        return self._call(self._inner.apply_config(config, swap=swap))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        result: T = self._run(coro)
        return result
