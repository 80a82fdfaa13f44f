"""The ``media`` section of the config: where images may come from and how large they may be."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ImageFormat", "MediaSettings"]

ImageFormat = Literal["PNG", "JPEG", "WEBP", "GIF", "BMP"]
DEFAULT_FORMATS: tuple[ImageFormat, ...] = ("PNG", "JPEG", "WEBP")


class MediaSettings(BaseModel):
    """Images in requests (docs/multimodal.md): where the server may read them from, and
    the limits a request's images must keep."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    roots: list[Path] = Field(
        default_factory=list,
        description="Directories an image may be read from by path (`/abs/path.png` or "
        "`file:///abs/path.png`, e.g. a volume the trainer shares). A path that resolves "
        "outside them (`..`, a symlink pointing out) is refused; empty: no paths.",
    )
    url_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (`name` or `name:port`) whose http(s) image URLs the server "
        "fetches. Empty (the default): none, so the server never fetches a URL a request "
        "names (no SSRF). Redirects are not followed.",
    )
    url_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Timeout of one image fetch from an allowed host."
    )
    max_image_bytes: int = Field(
        default=20 * 1024 * 1024, gt=0,
        description="Largest encoded image (after base64 decoding); larger: 413 naming the field.",
    )  # fmt: skip
    max_images_per_item: int = Field(
        default=16, ge=0,
        description="Most images in one item (prompt, response, reference and message "
        "images together); more: 413 naming the field.",
    )  # fmt: skip
    max_image_pixels: int = Field(
        default=4096 * 4096, gt=0,
        description="Most pixels (width x height) an image may decode to. Checked from the "
        "header before the pixels are decoded (decompression bombs); over it the item gets "
        "an `invalid_image` error.",
    )  # fmt: skip
    formats: list[ImageFormat] = Field(
        default_factory=lambda: list(DEFAULT_FORMATS),
        min_length=1,
        description="Image formats accepted (told from the file's first bytes); another "
        "format: 422 naming the field.",
    )

    @field_validator("roots")
    @classmethod
    def _absolute_directories(cls, value: list[Path]) -> list[Path]:
        for root in value:
            if not root.is_absolute():
                raise ValueError(f"{root}: a media root is an absolute path")
        return value

    @field_validator("url_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        for host in value:
            if not host or "/" in host or "@" in host or host != host.strip():
                raise ValueError(f"{host!r}: give a host name, optionally with :port")
        return [host.lower() for host in value]
