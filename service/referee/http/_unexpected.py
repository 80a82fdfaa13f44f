"""Answers an unexpected exception with the 500 error body *and keeps the connection*.

FastAPI hands ``Exception`` handlers to Starlette's outermost ``ServerErrorMiddleware``,
which sends the handler's response and then re-raises, so the server closes the keep-alive
connection and the client's next request on it fails too. This middleware sits inside it
and turns the exception into the response itself; nothing is re-raised.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from referee.errors import ErrorKind, RefereeError

__all__ = ["AnswerUnexpectedErrors"]

log = logging.getLogger("referee.http")


class AnswerUnexpectedErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:  # part of a response went out: nothing sound to add; let it end
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            from referee.http.app import error_response  # the app module imports this one

            error = RefereeError(
                ErrorKind.INTERNAL, f"internal error ({type(exc).__name__}); see logs"
            )
            await error_response(error)(scope, receive, send)
