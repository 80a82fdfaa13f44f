"""Images in requests: their sources and limits at the door (``resolve_images``), and the
encoded bytes scorers decode (``ImageData``). Pillow is imported only to decode.

A scorer reads an item's images from its ``ScoreInput`` (``prompt_images``,
``response_images``, ``reference_images``; ``message_images()`` for the image parts of
``messages``) and decodes them with ``ImageData.decode()`` / ``decode_all``, turning an
``ImageDecodeError`` into the item's ``invalid_image`` error."""

from referee.media.images import INVALID_IMAGE, ImageData, ImageDecodeError, decode_all
from referee.media.resolve import has_images, resolve_images
from referee.media.settings import ImageFormat, MediaSettings

__all__ = [
    "INVALID_IMAGE",
    "ImageData",
    "ImageDecodeError",
    "ImageFormat",
    "MediaSettings",
    "decode_all",
    "has_images",
    "resolve_images",
]
