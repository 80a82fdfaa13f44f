"""The inspector page's files as the app serves them (the browser test,
tests/e2e/test_inspector_page.py, clicks through the page itself)."""

from __future__ import annotations

import re

from referee.ui import STATIC
from tests.integration.conftest import serve_app


async def test_the_page_and_its_files_are_served_without_a_key_the_api_still_needs_one() -> None:
    async with serve_app(api_keys=["k"]) as (client, _):
        redirect = await client.get("/ui")
        assert redirect.status_code == 307 and redirect.headers["location"] == "/ui/"
        page = await client.get("/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/ui/app.js">' in page.text
        for name, kind in (("app.js", "text/javascript"), ("core.js", "text/javascript"),
                           ("health.js", "text/javascript"), ("style.css", "text/css")):  # fmt: skip
            response = await client.get(f"/ui/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"].startswith(kind), name
        assert (await client.get("/v1/pipelines")).status_code == 401


async def test_only_the_shipped_files_are_served() -> None:
    async with serve_app() as (client, _):
        for path in ("/ui/__init__.py", "/ui/..%2f..%2fconfig.py", "/ui/static"):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["type"] == "not_found"


def test_the_page_loads_nothing_from_outside_the_server_and_stores_no_key() -> None:
    for path in STATIC.iterdir():
        text = path.read_text()
        outside = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not outside, (path.name, outside)
        for storage in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
            assert storage not in text, (path.name, storage)
