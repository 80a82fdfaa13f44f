"""A request's images, fetched and checked at the door: every image source becomes the
encoded file's bytes, and every limit an image can break in the request is a 413 or 422
naming the field.

Sources: ``data:`` URLs always; a path (``/abs`` or ``file:///abs``) only when it resolves
under one of ``media.roots`` (symlinks resolved first, so neither ``..`` nor a link can
lead out); ``http(s)`` only from hosts in ``media.url_hosts`` (none by default: the server
is not a proxy to whatever a request names), without following redirects. The checks here
need no decoding: size, count and format (from the file's first bytes). Decoding, and the
pixel limit with it, happens in the scorer that reads the image; an image that does not
decode is that item's error, not the request's.
"""

from __future__ import annotations

import asyncio
import binascii
import os
import stat
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from referee.errors import ErrorKind, RefereeError
from referee.media.settings import MediaSettings
from referee_client._media import b64decode, sniff_format
from referee_client.schema import ContentPart, Image, Message, RewardItem, RewardRequest

__all__ = ["has_images", "resolve_images"]

_IMAGE_FIELDS = ("prompt_images", "response_images", "reference_images")
# A data: URL longer than this is base64-decoded in a worker thread.
_INLINE_DATA_URL_CHARS = 1 << 20


def has_images(item: RewardItem) -> bool:
    if any(getattr(item, name) for name in _IMAGE_FIELDS):
        return True
    return any(not isinstance(m.content, str) for m in item.messages or ())


def _located(item: RewardItem, i: int) -> list[tuple[str, Image]]:
    """(field path, image) for every image of an item, in a fixed order."""
    out = []
    for name in _IMAGE_FIELDS:
        for k, image in enumerate(getattr(item, name) or ()):
            out.append((f"items[{i}].{name}[{k}]", image))
    for m, message in enumerate(item.messages or ()):
        if not isinstance(message.content, str):
            for p, part in enumerate(message.content):
                if part.image_url is not None:
                    out.append((f"items[{i}].messages[{m}].content[{p}].image_url", part.image_url))
    return out


class _Resolver:
    def __init__(self, settings: MediaSettings) -> None:
        self.settings = settings
        self.roots = [Path(os.path.realpath(root)) for root in settings.roots]
        self.fetched: dict[str, bytes] = {}  # one fetch per distinct URL in a request

    def too_large(self, size: int, where: str) -> RefereeError:
        return RefereeError(
            ErrorKind.PAYLOAD_TOO_LARGE,
            f"{where} is {size} bytes; the server's limit is {self.settings.max_image_bytes} "
            "bytes an image (media.max_image_bytes): send a smaller image",
            param=where,
        )

    def check(self, data: bytes, where: str) -> bytes:
        if len(data) > self.settings.max_image_bytes:
            raise self.too_large(len(data), where)
        fmt = sniff_format(data)
        if fmt is None or fmt not in self.settings.formats:
            allowed = ", ".join(self.settings.formats)
            what = f"a {fmt} image" if fmt else "not an image file of a known format"
            raise RefereeError(
                ErrorKind.INVALID_REQUEST,
                f"{where} is {what}; the server accepts {allowed} (media.formats)",
                param=where,
            )
        return data

    def data_url(self, url: str, where: str) -> bytes:
        head, comma, payload = url.partition(",")
        if not comma:
            raise _invalid(where, "a data: URL has a comma before its data")
        if head.endswith(";base64"):
            # base64 holds 3 bytes in 4 characters: refuse before decoding a huge payload
            if len(payload) * 3 // 4 > self.settings.max_image_bytes + 3:
                raise self.too_large(len(payload) * 3 // 4, where)
            try:
                return b64decode(payload)
            except (binascii.Error, ValueError):
                raise _invalid(where, "the data: URL's payload is not valid base64") from None
        return urllib.parse.unquote_to_bytes(payload)

    def read_path(self, url: str, where: str) -> bytes:
        raw = urllib.parse.unquote(url.removeprefix("file://")) if url.startswith("file:") else url
        if not self.roots:
            raise _invalid(where, "the server reads no image paths (media.roots is empty): "
                           "send the image as a data: URL or bytes")  # fmt: skip
        if not os.path.isabs(raw):
            raise _invalid(where, "an image path is absolute (under media.roots)")
        real = Path(os.path.realpath(raw))  # symlinks and `..` resolved
        if not any(real.is_relative_to(root) for root in self.roots):
            raise _invalid(where, f"{raw} is not under the server's media.roots")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise _invalid(where, f"cannot read {raw}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise _invalid(where, f"{raw} is not a regular file")
            if info.st_size > self.settings.max_image_bytes:
                raise self.too_large(info.st_size, where)
            return f.read(self.settings.max_image_bytes + 1)

    async def fetch(self, url: str, where: str) -> bytes:
        parsed = urllib.parse.urlsplit(url)
        host = (parsed.hostname or "").lower()
        hostport = f"{host}:{parsed.port}" if parsed.port else host
        if host not in self.settings.url_hosts and hostport not in self.settings.url_hosts:
            raise _invalid(
                where,
                f"the server does not fetch images from {hostport or url!r} (only from hosts "
                "in media.url_hosts): send the image as a data: URL or bytes",
            )
        if url in self.fetched:
            return self.fetched[url]
        import httpx

        limit = self.settings.max_image_bytes
        try:
            async with (
                httpx.AsyncClient(timeout=self.settings.url_timeout_s, trust_env=False) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise _invalid(where, f"fetching {url} answered HTTP {response.status_code}")
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise self.too_large(size, where)
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise _invalid(where, f"fetching {url} failed: {type(exc).__name__}: {exc}") from None
        self.fetched[url] = data = b"".join(chunks)
        return data

    async def load(self, image: Image, where: str) -> Image:
        if image.data is not None:
            return Image(data=self.check(image.data, where), detail=image.detail)
        url = image.url or ""
        scheme = url.split(":", 1)[0].lower() if ":" in url[:12] else ""
        if scheme == "data":
            if len(url) > _INLINE_DATA_URL_CHARS:  # a large one decodes off the event loop
                data = await asyncio.to_thread(self.data_url, url, where)
            else:
                data = self.data_url(url, where)
        elif scheme in ("http", "https"):
            data = await self.fetch(url, where)
        elif scheme in ("", "file"):
            data = await asyncio.to_thread(self.read_path, url, where)
        else:
            raise _invalid(where, f"unsupported image URL scheme {scheme!r}: use data:, a "
                           "path, or http(s) on an allowed host")  # fmt: skip
        return Image(data=self.check(data, where), detail=image.detail)


def _invalid(where: str, message: str) -> RefereeError:
    return RefereeError(ErrorKind.INVALID_REQUEST, f"{where}: {message}", param=where)


async def resolve_images(request: RewardRequest, settings: MediaSettings) -> RewardRequest:
    """The request with every image as its checked bytes (``Image(data=...)``); the same
    request when it has none. Raises RefereeError (413/422, ``param`` = the field)."""
    if not any(has_images(item) for item in request.items):
        return request
    resolver = _Resolver(settings)
    items: list[RewardItem] = []
    for i, item in enumerate(request.items):
        if not has_images(item):
            items.append(item)
            continue
        located = _located(item, i)
        if len(located) > settings.max_images_per_item:
            raise RefereeError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"items[{i}] has {len(located)} images; the server's limit is "
                f"{settings.max_images_per_item} an item (media.max_images_per_item)",
                param=f"items[{i}]",
            )
        loaded = [await resolver.load(image, where) for where, image in located]
        items.append(_with_images(item, loaded))
    return request.model_copy(update={"items": items})


def _with_images(item: RewardItem, loaded: Sequence[Image]) -> RewardItem:
    """``item`` with its images replaced, in the order ``_located`` lists them."""
    queue = iter(loaded)
    update: dict[str, object] = {}
    for name in _IMAGE_FIELDS:
        images = getattr(item, name)
        if images:
            update[name] = [next(queue) for _ in images]
    if item.messages is not None:
        messages = []
        for message in item.messages:
            if isinstance(message.content, str):
                messages.append(message)
                continue
            parts = [
                part if part.image_url is None
                else ContentPart(type="image_url", image_url=next(queue))
                for part in message.content
            ]  # fmt: skip
            messages.append(Message(role=message.role, content=parts))
        update["messages"] = messages
    return item.model_copy(update=update)
