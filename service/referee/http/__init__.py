"""The HTTP gateway (FastAPI)."""

from referee.http.app import build_app

__all__ = ["build_app"]
