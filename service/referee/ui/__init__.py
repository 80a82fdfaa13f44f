"""The reward inspector: a static page at ``/ui`` (HTML, JS and CSS shipped in the package;
no build step). It calls the public API from the browser with the key typed on the page,
which stays in the page's memory; these routes serve files only and need no key."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

from referee.errors import ErrorKind, RefereeError

__all__ = ["STATIC", "router"]

STATIC = Path(__file__).with_name("static")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_FILES = {p.name: p for p in STATIC.iterdir() if p.suffix in _TYPES}

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("")
async def ui_root() -> Response:
    return RedirectResponse("/ui/")


@router.get("/")
async def ui_index() -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/{name}")
async def ui_file(name: str) -> Response:
    path = _FILES.get(name)  # only the shipped files: no path is built from the request
    if path is None:
        raise RefereeError(ErrorKind.NOT_FOUND, f"no file {name!r} in the inspector page")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})
