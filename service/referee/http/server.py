"""Running the HTTP gateway under uvicorn: one process, or ``server.workers`` processes
sharing one listening socket (uvicorn's supervisor: a dead worker is replaced).

Each worker is a whole Referee (engine, scorers, caches, admission limits) on its own
core. For rule pipelines, whose cost is per-item CPU work on the event loop (JSON,
validation, cache keys, rules), that is what scales; scorers that hold a model load once
per worker, so for shared model replicas use the Ray Serve mode instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from referee.config import Settings, load_settings
from referee.http.connections import ConnectionLimits, GuardedHttpProtocol, RefereeUvicornConfig

if TYPE_CHECKING:
    from types import FrameType

    from fastapi import FastAPI

__all__ = ["create_worker_app", "run_http_server", "uvicorn_config"]

log = logging.getLogger(__name__)

# How the parent hands the settings file and its command-line overrides to the workers.
_CONFIG_ENV = "REFEREE_WORKER_CONFIG"


def uvicorn_config(settings: Settings, app: FastAPI | str, **extra: Any) -> RefereeUvicornConfig:
    server = settings.server
    return RefereeUvicornConfig(
        app,
        host=server.host,
        port=server.port,
        log_level=server.log_level,
        http=GuardedHttpProtocol,
        timeout_keep_alive=server.keep_alive_timeout_s,
        # requests in flight are answered (503) by the engine at the grace; uvicorn's own
        # cut-off comes a little later so it never has to cancel one mid-response
        timeout_graceful_shutdown=int(server.shutdown_grace_s) + 3,
        connection_limits=ConnectionLimits.from_settings(server),
        **extra,
    )


def run_http_server(
    settings: Settings, config_path: Path | None, overrides: dict[str, Any] | None = None
) -> None:
    """Serve until SIGINT/SIGTERM: in this process, or in ``settings.server.workers``.
    ``overrides``: the ``server`` fields the command line set (they survive a config
    applied live). With one process, SIGHUP applies ``config_path`` again, live; with
    several, uvicorn's supervisor restarts the workers on SIGHUP, and the admin API is
    refused (a live reload would reach one worker only)."""
    import uvicorn

    from referee.http import build_app

    server = settings.server
    if server.workers == 1:
        app = build_app(settings, config_path=config_path, server_overrides=overrides)
        engine = app.state.engine
        grace = server.shutdown_grace_s

        class DrainingServer(uvicorn.Server):
            """Tells the engine when a shutdown signal arrives, so readiness turns 503 at
            once and requests in flight are answered before the process exits."""

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                engine.begin_shutdown(grace)
                super().handle_exit(sig, frame)

        DrainingServer(uvicorn_config(settings, app)).run()
        return
    from uvicorn.supervisors import Multiprocess

    # The workers rebuild the settings from the same file and these overrides.
    os.environ[_CONFIG_ENV] = str(config_path) if config_path else ""
    os.environ["REFEREE_SERVER__HOST"] = server.host
    os.environ["REFEREE_SERVER__PORT"] = str(server.port)
    os.environ["REFEREE_SERVER__GRPC_PORT"] = "0"  # refused with workers > 1 (cli.serve)
    config = uvicorn_config(
        settings, "referee.http.server:create_worker_app", factory=True, workers=server.workers,
        # a worker answers the supervisor's ping only once its imports are done: seconds on
        # a busy machine, which uvicorn's default 5 s would take for a hung worker
        timeout_worker_healthcheck=30,
    )  # fmt: skip
    sock = config.bind_socket()
    sock.set_inheritable(True)
    Multiprocess(config, sockets=[sock]).run()
    sock.close()


def create_worker_app() -> FastAPI:
    """The app of one worker process (uvicorn imports this by name in each worker)."""
    from referee.http import build_app

    path = os.environ.get(_CONFIG_ENV) or None
    settings = load_settings(path)
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s",
    )
    app = build_app(settings)
    app.state.reloader.refuse = (
        "live reloads are not available with server.workers > 1 (a reload would reach one "
        "worker only): change the config file and send SIGHUP, which restarts the workers"
    )
    return app
