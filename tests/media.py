"""Real image files for tests: PNG/JPEG/WebP encoded by Pillow, a truncated JPEG, and a
decompression bomb (a small PNG whose header declares a huge canvas)."""

from __future__ import annotations

import base64
import io
import struct
import zlib

__all__ = ["bomb_png", "data_url", "encoded", "gradient", "truncated_jpeg"]


def gradient(width: int = 32, height: int = 24, seed: int = 0) -> object:
    """A deterministic RGB PIL image (a colour gradient shifted by ``seed``)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 7 + seed * 31) % 256, (y * 11 + seed * 17) % 256,
                    ((x + y) * 5 + seed * 53) % 256], axis=-1).astype(np.uint8)  # fmt: skip
    return Image.fromarray(rgb)


def encoded(image: object, fmt: str = "PNG", **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)  # type: ignore[attr-defined]
    return out.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def truncated_jpeg() -> bytes:
    whole = encoded(gradient(64, 64), "JPEG", quality=90)
    return whole[: len(whole) // 2]


def bomb_png(width: int = 10_000, height: int = 10_000) -> bytes:
    """A valid PNG of ``width`` x ``height`` black grey pixels that compresses to a few
    hundred kilobytes: decoding it would take width*height bytes."""
    rows = (b"\x00" + b"\x00" * width) * 100  # filter byte + one grey byte a pixel
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(rows) for _ in range(height // 100)) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
