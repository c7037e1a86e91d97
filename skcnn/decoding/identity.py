"""Content keys of images: what makes two inputs "the same image" for the cache.

A file is keyed by a hash of its bytes (no decoding needed to find a hit),
so a renamed or copied file hits and a file edited in place misses, whatever
its name, size or modification time. A PIL image is keyed by the pixels it
decodes to (palette and EXIF orientation applied), an array by its dtype,
shape and bytes. A file and the same
picture given as an array therefore have different keys: both give the same
codes, the second is simply computed once more.

Only hashlib, numpy and PIL are used: no torch.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from PIL import Image

from . import images as image_io
from .images import load_image

#: Hex digits of a key (BLAKE2b with a 16-byte digest).
KEY_LENGTH = 32
_CHUNK = 1 << 20


def image_key(image) -> str:
    """The content key of one image (path, PIL image or array)."""
    digest = hashlib.blake2b(digest_size=KEY_LENGTH // 2)
    if isinstance(image, (str, os.PathLike)):
        digest.update(b"file\0")
        with image_io.open_image_file(image) as f:  # a FIFO or a device is refused, not read forever
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    elif isinstance(image, Image.Image):
        # The pixels the network will see: palette, EXIF orientation and
        # mode conversions applied, so no two different pictures share a key.
        pixels = np.ascontiguousarray(load_image(image))  # keyed in (H, W, C) order
        digest.update(f"pil\0{pixels.shape}\0".encode())
        digest.update(pixels.data)
    elif isinstance(image, np.ndarray):
        digest.update(f"array\0{image.dtype.str}\0{image.shape}\0".encode())
        digest.update(np.ascontiguousarray(image).data)
    else:
        raise TypeError(f"Cannot key an image of type {type(image).__name__}.")
    return digest.hexdigest()


def content_keys(images, failures: list[image_io.ImageFailure]) -> dict[int, str]:
    """Content keys of the images that can be read, by position; failures for the others."""
    keys = {}
    for index, image in enumerate(images):
        try:
            keys[index] = image_key(image)
        except (OSError, TypeError, image_io.ImageError) as exc:
            reason = f"cannot read the file: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else str(exc)
            failures.append(image_io.ImageFailure(index, image_io.describe(image, index), reason))
    return keys
