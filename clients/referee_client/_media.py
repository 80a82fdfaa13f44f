"""Images into the wire format: what a trainer holds (a PIL image, a numpy array, a local
file's path, bytes) as an encoded file, and an encoded file as a ``data:`` URL.

Pillow and numpy are imported only when an image needs encoding; a PNG, JPEG or WebP file
given as bytes or a path is sent as it is (no re-encoding)."""

from __future__ import annotations

import base64
import binascii
import io
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["b64decode", "data_url", "encode_image", "sniff_format"]

_pybase64: ModuleType | None
try:
    import pybase64 as _pybase64
except ImportError:  # optional: the standard library's base64 then
    _pybase64 = None

# magic bytes -> format name (as Pillow names it)
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif",
        "BMP": "image/bmp"}  # fmt: skip


def sniff_format(data: bytes) -> str | None:
    """The image format of an encoded file from its first bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return None


def b64decode(text: str | bytes) -> bytes:
    """Strict base64 (no characters outside the alphabet, correct padding). pybase64 (SIMD;
    the ``models`` extra installs it) decodes an image about seven times faster than the
    standard library, which is used without it. Raises ``binascii.Error``."""
    if _pybase64 is not None:
        return bytes(_pybase64.b64decode(text, validate=True))
    if sys.version_info >= (3, 11):
        return binascii.a2b_base64(text, strict_mode=True)
    return base64.b64decode(text, validate=True)  # pragma: no cover - Python 3.10


def data_url(data: bytes) -> str:
    """``data:image/...;base64,...`` for an encoded image file."""
    mime = MIME.get(sniff_format(data) or "", "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def encode_image(value: object) -> bytes:
    """An encoded image file (PNG unless it already is one) from a PIL image, a numpy array
    (HxW, HxWx1, HxWx3 or HxWx4; uint8, or floats in [0, 1]), a ``pathlib.Path`` of a local
    file, or ``bytes``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, Path):
        return value.read_bytes()
    module = type(value).__module__
    if module == "numpy" or (
        hasattr(value, "__array_interface__") and not module.startswith("PIL")
    ):
        return _png(_from_array(value))
    if module.startswith("PIL"):
        return _png(value)
    raise ValueError(
        f"an image is a url string, a PIL image, a numpy array, a pathlib.Path or bytes; "
        f"got a `{type(value).__name__}`"
    )


def _from_array(array: object) -> object:
    import numpy as np

    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - depends on the environment
        raise ValueError(
            "encoding a numpy array as an image needs Pillow: pip install pillow"
        ) from None
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"an image array is HxW, HxWx1, HxWx3 or HxWx4; got shape {a.shape}")
    if a.dtype != np.uint8:
        if a.dtype.kind == "f":
            if not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0:
                raise ValueError("a float image array holds values in [0, 1]")
            a = np.round(a * 255.0).astype(np.uint8)
        elif a.dtype.kind in "iu" and a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(f"an integer image array holds values in 0..255 ({a.dtype})")
        else:
            a = a.astype(np.uint8)
    return Image.fromarray(a)


def _png(image: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)  # type: ignore[attr-defined]
    return out.getvalue()
