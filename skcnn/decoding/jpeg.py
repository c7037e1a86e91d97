"""JPEG files -> uint8 pixels, with libjpeg-turbo's DCT scaling where asked.

JPEG is what cameras and phones write, and decoding it is most of the cost
of a 12 MP photo, so it has its own fast path: ``simplejpeg`` (libjpeg-turbo,
the whole decode without the GIL, straight into a numpy array). It gives the
pixels Pillow gives, bit for bit, full size and DCT-scaled (both run
libjpeg-turbo's accurate integer IDCT with fancy upsampling;
``tests/test_jpeg.py`` checks it), at 1.1x Pillow's speed on 12 MP photos
and 1.4x on 500-1000 px files (``benchmarks/RESULTS.md``).

Pillow stays the decoder of everything else, and of the JPEGs this path
declines: colour spaces other than RGB and gray (CMYK, YCCK), and any file
libjpeg-turbo reports as damaged, so that Pillow gives its own verdict on it
(a truncated file is refused as before). The caller (:mod:`skcnn.images`)
reads the header, applies the pixel limit and the EXIF orientation: this
module only decodes.

DCT scaling decodes 1/2, 1/4 or 1/8 of each side directly from the
compressed coefficients, skipping most of the inverse DCT and colour
conversion; the entropy decoding remains, so a 12 MP photo decodes about
1.5x faster at 1/4 scale, not 16x. The scales are those Pillow's ``draft``
offers too, so both decoders agree wherever a file falls back.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

try:  # optional where only Pillow is installed (skcnn.serving): Pillow decodes the same pixels
    import simplejpeg
except ImportError:  # pragma: no cover - installed with skcnn
    simplejpeg = None

#: Pillow's names of the formats that are JPEG streams (MPO: the multi-picture
#: JPEGs of some phones and 3D cameras; its first picture is the photo).
JPEG_FORMATS = frozenset({"JPEG", "MPO"})

#: The DCT scales (side divided by), largest first.
DCT_SCALES = (8, 4, 2)

# Pillow modes of JPEG headers that simplejpeg decodes to the same pixels.
_COLORSPACES = {"RGB": "RGB", "L": "GRAY"}


def dct_scale(size: tuple[int, int], min_side: int | None) -> int:
    """The largest DCT scale that keeps the shorter side at least ``min_side``.

    ``size`` is (width, height). The scaled side is ``ceil(side / scale)``;
    the rule uses ``side // scale``, which is never larger. Returns 1 (no
    scaling) when ``min_side`` is None or no scale keeps it.
    """
    if min_side is None:
        return 1
    shorter = min(size)
    return next((scale for scale in DCT_SCALES if shorter // scale >= max(min_side, 1)), 1)


def min_decoded_side(resize_size: int, margin: float | None) -> int | None:
    """The smallest shorter side a JPEG may be DCT-scaled to: ``margin`` times the resize
    target (None: never scaled)."""
    return None if margin is None else math.ceil(margin * resize_size)


def scaled_size(size: tuple[int, int], scale: int) -> tuple[int, int]:
    """(width, height) of an image decoded at 1/``scale``: libjpeg rounds up."""
    return -(-size[0] // scale), -(-size[1] // scale)


def decode(data: bytes, header: Image.Image, scale: int = 1) -> np.ndarray | None:
    """The ``(H, W, C)`` uint8 pixels of the JPEG ``data`` at 1/``scale``, C 3 or 1.

    ``header`` is the file opened (not loaded) by Pillow, for its mode and
    size. Returns None where this path declines (see the module
    docstring): decode with Pillow then.
    """
    colorspace = _COLORSPACES.get(header.mode)
    if colorspace is None or simplejpeg is None:
        return None
    width, height = scaled_size(header.size, scale)
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace=colorspace, min_height=height, min_width=width)
    except ValueError:  # damaged, or a variant libjpeg-turbo refuses in strict mode
        return None
    if pixels.shape[:2] != (height, width):  # another n/8 scale than asked: Pillow's own
        return None
    return pixels


def draft(image: Image.Image, scale: int) -> None:
    """Ask Pillow to decode ``image`` (a JPEG not yet loaded) at 1/``scale``."""
    if scale > 1:
        # Pillow picks the largest scale whose size stays >= the one asked: exactly ``scale``.
        image.draft(None, (image.width // scale, image.height // scale))
