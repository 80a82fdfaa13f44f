"""Images as scorers see them: the encoded file's bytes, identified by their sha256 (what
cache keys hash, so one image sent as a data URL or as a path gives the same key), and
decoded with Pillow (imported only here, when a scorer asks) under a pixel limit."""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["INVALID_IMAGE", "ImageData", "ImageDecodeError", "decode_all"]

# The per-item error type of an image that does not decode (errors.ITEM_ERRORS: invalid).
INVALID_IMAGE = "invalid_image"


class ImageDecodeError(ValueError):
    """An image that cannot be decoded: truncated, corrupt, or over the pixel limit. The
    scorer turns it into the item's ``invalid_image`` error."""


@dataclass(frozen=True, slots=True)
class ImageData:
    """One encoded image of an item. ``where`` is the request field it came from
    (``items[2].response_images[0]``) for error messages; ``format`` is the format its first
    bytes tell (PNG, JPEG, WEBP, ...)."""

    data: bytes = field(repr=False)
    sha256: str
    format: str
    max_pixels: int
    where: str = ""

    @classmethod
    def of(cls, data: bytes, fmt: str, max_pixels: int, where: str = "") -> ImageData:
        return cls(data, hashlib.sha256(data).hexdigest(), fmt, max_pixels, where)

    def decode(self, mode: str | None = "RGB") -> PILImage:
        """The decoded image (converted to ``mode`` unless None). Raises
        :class:`ImageDecodeError` when it does not decode or has too many pixels."""
        from PIL import Image, UnidentifiedImageError

        label = self.where or "image"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image: PILImage = Image.open(io.BytesIO(self.data))
                width, height = image.size  # read from the header; no pixels decoded yet
                if width * height > self.max_pixels:
                    raise ImageDecodeError(
                        f"{label}: {width}x{height} = {width * height} pixels; the server's "
                        f"limit is {self.max_pixels} (media.max_image_pixels)"
                    )
                image.load()
                if mode is not None and image.mode != mode:
                    image = image.convert(mode)
        except ImageDecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError(f"{label}: {exc}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageDecodeError(
                f"{label}: the {self.format} image does not decode ({exc})"
            ) from None
        return image


def decode_all(images: Sequence[ImageData], mode: str | None = "RGB") -> list[PILImage]:
    """Every image decoded, in order; the first that fails raises ImageDecodeError."""
    return [image.decode(mode) for image in images]
