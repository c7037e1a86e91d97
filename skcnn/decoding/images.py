"""Images in, pixel arrays out: uint8 wherever the source is 8-bit.

Every rule about what counts as an image lives here: which containers ``X``
may be, which pixel types and modes are accepted, and how each becomes an
array of shape ``(H, W, C)``, ``C`` 1 (gray) or 3 (RGB). 8-bit sources (JPEG
and PNG files, PIL images, uint8 and bool arrays) stay ``uint8``: a 12 MP
photo is 36 MB of pixels, not 145 MB of floats, and it is resized in uint8
(``skcnn.decoding.preprocessing``). 16-bit sources become ``float32`` in ``[0, 1]``
(scaled by 65535), float arrays in ``[0, 1]`` stay float. The same picture
given as a file path, a PIL image or a uint8 array gives the same array, so
it gives the same codes.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..options import MAX_PIXELS
from . import jpeg

ImageLike = Union[str, "os.PathLike[str]", Image.Image, np.ndarray]

# PIL modes that carry colour (or a palette / alpha) and are converted to RGB;
# gray modes stay one channel and are replicated to three after resizing.
_GRAY_MODES = {"L", "1", "LA", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
# Modes that give float pixels (16-bit), or are refused ("I", "F"): never uint8.
_FLOAT_MODES = _SIXTEEN_BIT_MODES | {"I", "F"}


#: Images more elongated than this (long side over short side) are cut to
#: the centre part of their long side that keeps this ratio when decoded.
#: The network input is resized from the shorter side, so the resize of a
#: 1 x 20,000 strip would allocate a 224 x 4,480,000 image (3 GB) to keep a
#: 224 px centre; the cut keeps far more than any centre crop sees, and no
#: camera or panorama mode writes such pictures.
MAX_ASPECT_RATIO = 16

#: A JPEG file is read whole (the fast decoder takes its bytes), so one
#: larger than this many bytes per pixel of its header's size, plus
#: :data:`MAX_JPEG_EXTRA_BYTES` of metadata and extra pictures, is refused
#: before reading: a JPEG of random noise at quality 100 takes about 1.6
#: bytes per pixel, and no picture needs more than 3.
MAX_JPEG_BYTES_PER_PIXEL = 8
#: EXIF, XMP, ICC profiles and the extra pictures of multi-picture (MPO) files.
MAX_JPEG_EXTRA_BYTES = 64 * 2**20

#: Bytes, and read calls, a decoder may spend to find an image's size and
#: kind. Pillow scans junk between JPEG markers a byte at a time (a JPEG
#: header followed by a sparse gigabyte took minutes): 2**16 calls take a
#: few tens of milliseconds, where a real header takes a few hundred; 16 MiB
#: is far more than the EXIF, ICC and XMP data any camera or editor writes.
MAX_HEADER_BYTES = 16 * 2**20
MAX_HEADER_READS = 2**16


class ImageError(ValueError):
    """An input image cannot be read or has an unsupported format."""


@dataclass(frozen=True)
class ImageFailure:
    """An image that could not be used, and why.

    Attributes
    ----------
    index : int
        Its position in ``X``.
    source : str
        Its name: the path, or a description of an in-memory image.
    reason : str
        Why it could not be used, in plain words.
    """

    index: int
    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


class BadImagesWarning(UserWarning):
    """Some images could not be used and were left out (``on_error="skip"``).

    A warning class of its own, so that code can silence, record or turn
    into errors exactly these (``warnings.simplefilter("error",
    skcnn.BadImagesWarning)``) without matching message text.

    Parameters
    ----------
    failures : list of ImageFailure
        The images left out.
    n_images : int
        The images of the call.
    what : str, default="images"
        What they were, as the message says it ("training images").
    where : str, optional
        Where the caller keeps the failures (default: ``"see failed_"``).

    Attributes
    ----------
    failures : list of ImageFailure
        Every image left out, in order.
    n_images : int
        The images of the call.
    """

    def __init__(self, failures: list[ImageFailure], n_images: int, what: str = "images", where: str = "see failed_"):
        self.failures, self.n_images = list(failures), n_images
        super().__init__(
            f"{len(self.failures)} of {n_images} {what} could not be used and are left out ({where}). "
            f"First: {self.failures[0]}"
        )


def warn_bad_images(failures: list[ImageFailure], n_images: int, stacklevel: int, **message) -> None:
    """A :class:`BadImagesWarning` naming ``failures``, if there are any, for the caller ``stacklevel`` frames up."""
    if failures:
        warnings.warn(BadImagesWarning(failures, n_images, **message), stacklevel=stacklevel + 1)


class BadImagesError(ImageError):
    """Some images could not be used; every other image was computed.

    Parameters
    ----------
    failures : list of ImageFailure
        The bad images.
    codes : ndarray or None, default=None
        The codes computed for the call.
    shown : int, default=20
        How many failures the message lists.

    Attributes
    ----------
    failures : list of ImageFailure
        Every bad image of the call, not just the first.
    codes : ndarray or None
        The codes of the call, NaN rows for the bad images: the work done is
        not lost even without a cache.
    """

    def __init__(self, failures: list[ImageFailure], codes=None, shown: int = 20):
        self.failures = failures
        self.codes = codes
        listed = "\n".join(f"  {failure}" for failure in failures[:shown])
        more = f"\n  ... and {len(failures) - shown} more" if len(failures) > shown else ""
        super().__init__(
            f"{len(failures)} image(s) could not be used; the codes of the others were computed "
            f"(and cached, with cache=), and are in this error's .codes:\n{listed}{more}\n"
            "Use on_error='skip' for NaN rows instead, or skcnn.check_images(X) to drop bad "
            "images before fitting."
        )


def check_images(X: Any, max_pixels: int | None = None) -> tuple[np.ndarray, list[ImageFailure]]:
    """Decode every image of ``X`` once; say which ones can be used.

    Returns a boolean mask of the usable images and the failures, so that a
    training set can be cleaned before it enters a pipeline::

        ok, failures = check_images(paths)
        model.fit(np.asarray(paths)[ok], np.asarray(y)[ok])

    Parameters
    ----------
    X : sequence of images
        As accepted by :class:`~skcnn.CNNFeatureTransformer`.
    max_pixels : int or None, default=None
        Pixel limit of image files; ``None`` uses ``skcnn.images.MAX_PIXELS`` (100 megapixels).

    Examples
    --------
    >>> import numpy as np
    >>> from skcnn import check_images
    >>> ok, failures = check_images([np.zeros((8, 8), np.uint8), "no/such/file.png"])
    >>> ok.tolist(), failures[0].index
    ([True, False], 1)
    """
    images = as_image_list(X)
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    failures = []
    for index, image in enumerate(images):
        try:
            load_image(image, limit)
        except ImageError as exc:
            failures.append(failure(image, index, exc))
    ok = np.ones(len(images), dtype=bool)
    ok[[f.index for f in failures]] = False
    return ok, failures


def image_size(image: ImageLike) -> tuple[int, int] | None:
    """``(height, width)`` of one image as shown (EXIF orientation applied),
    read from a file's header without decoding its pixels; None when it
    cannot be read (the decoder names it later, with its reason).

    Parameters
    ----------
    image : str, path, PIL.Image.Image or ndarray
        One image.

    Returns
    -------
    size : (int, int) or None
    """
    if isinstance(image, np.ndarray):
        return (int(image.shape[0]), int(image.shape[1])) if image.ndim in (2, 3) else None
    if isinstance(image, Image.Image):
        width, height = image.size
        return (height, width)
    try:
        with open_image_file(image) as f, _opened(f, quoted(image)) as im:
            width, height = im.size
            transposed = im.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8)
    except Exception:  # any decoder error on any file: the decoder names it later, with its reason
        return None
    return (width, height) if transposed else (height, width)


def gives_uint8(image: ImageLike) -> bool:
    """Whether :func:`load_image` gives ``image`` as uint8 pixels (an 8-bit source), from a
    file's header alone; False for 16-bit and float sources, and for what cannot be read.

    Parameters
    ----------
    image : str, path, PIL.Image.Image or ndarray
        One image.
    """
    if isinstance(image, np.ndarray):
        return image.dtype in (np.uint8, np.bool_)
    if isinstance(image, Image.Image):
        return image.mode not in _FLOAT_MODES
    try:
        with open_image_file(image) as f, _opened(f, quoted(image)) as im:
            return im.mode not in _FLOAT_MODES
    except Exception:  # any decoder error on any file: the decoder names it, with its reason
        return False


def failure(image: Any, index: int, exc: BaseException) -> ImageFailure:
    """An :class:`ImageFailure` for ``image`` from the exception it raised."""
    return ImageFailure(index, describe(image, index), str(exc))


def as_image_list(X: Any) -> list:
    """Return the images held by ``X`` as a list, one entry per sample.

    Accepted containers: a list or tuple of images (paths, PIL images or
    arrays), a 1-D array or pandas Series of paths, a single-column pandas
    DataFrame, or a stacked uint8/float array of shape ``(N, H, W)``,
    ``(N, H, W, 1)``, ``(N, H, W, 3)`` or ``(N, H, W, 4)``.
    """
    if isinstance(X, (str, os.PathLike, Image.Image)):
        raise ImageError(
            "X must be a sequence of images (one per sample); got a single "
            f"{type(X).__name__}. Wrap it in a list: [image]."
        )
    if hasattr(X, "iloc") and hasattr(X, "columns"):  # pandas DataFrame
        if X.shape[1] != 1:
            raise ImageError(
                "A DataFrame X must have exactly one column of images or paths; "
                f"got {X.shape[1]} columns {list(X.columns)[:5]}."
            )
        X = X.iloc[:, 0]
    if hasattr(X, "iloc"):  # pandas Series
        return X.tolist()
    if isinstance(X, np.ndarray):
        return _split_array(X)
    if isinstance(X, Sequence):
        return list(X)
    raise ImageError(
        "X must be a list of image paths, PIL images or arrays, or an array of "
        f"shape (N, H, W[, C]); got {type(X).__name__}."
    )


def _split_array(X: np.ndarray) -> list:
    if X.dtype.kind in "OUS":  # an array of paths or of image objects
        if X.ndim != 1:
            raise ImageError(f"An object or string array X must be 1-D (one entry per image); got shape {X.shape}.")
        return X.tolist()
    if X.ndim not in (3, 4):
        raise ImageError(
            f"An image array X must have shape (N, H, W) or (N, H, W, C); got shape {X.shape}. "
            "skcnn takes images, not 2-D feature tables."
        )
    return list(X)


def load_image(image: ImageLike, max_pixels: int | None = MAX_PIXELS, min_side: int | None = None) -> np.ndarray:
    """Decode one image to an ``(H, W, 1 or 3)`` array: uint8, or float32 in [0, 1].

    Paths and PIL images are decoded with their EXIF orientation applied;
    animated files give their first frame. Colour images, CMYK, palettes
    and images with alpha become RGB (alpha is dropped); gray images stay
    one channel (the network input replicates it over three channels, the
    usual recipe for MNIST-like data). 8-bit images and bool arrays (as
    0 and 255) give uint8; 16-bit images are scaled by 65535 and float
    arrays checked to lie in [0, 1], both as float32. Image files larger
    than ``max_pixels`` (width x height; ``None``: no limit) are refused
    before decoding, and so are files that are not regular files (a FIFO,
    a device, a link to one: :func:`open_image_file`) and JPEG files far
    larger than their pictures need (:data:`MAX_JPEG_BYTES_PER_PIXEL`).
    Whatever a decoder raises on a crafted or damaged file becomes an
    :class:`ImageError` naming the file. An image more elongated than
    :data:`MAX_ASPECT_RATIO` is cut to the centre of its long side, so
    that what is allocated after the resize is bounded too.

    ``min_side`` (JPEG files only) lets the decoder scale the image by 1/2,
    1/4 or 1/8 in the DCT while its shorter side stays at least
    ``min_side`` (``skcnn.decoding.jpeg.dct_scale``): several times less work
    after the entropy decoding, and slightly different pixels than decoding
    in full and resizing. ``None`` decodes in full.

    Parameters
    ----------
    image : str, path, PIL.Image.Image or ndarray
        One image.
    max_pixels : int or None, default=MAX_PIXELS
        The largest file (width x height) decoded; 100 megapixels.
    min_side : int or None, default=None
        The shorter side a JPEG may be DCT-scaled down to.

    Returns
    -------
    pixels : ndarray of shape (H, W, 1) or (H, W, 3)
        uint8, or float32 in [0, 1].
    """
    if isinstance(image, (str, os.PathLike)):
        return _within_aspect_ratio(_read_file(image, max_pixels, min_side))
    if isinstance(image, Image.Image):
        return _within_aspect_ratio(_shown(image))
    if isinstance(image, np.ndarray):
        return _within_aspect_ratio(_array_to_pixels(image))
    raise ImageError(
        "Each image must be a file path (str or os.PathLike), a PIL.Image.Image or a "
        f"numpy array; got {type(image).__name__}."
    )


def open_image_file(path: str | os.PathLike) -> BinaryIO:
    """Open an image file for reading, refusing anything but a regular file.

    A FIFO would block the reader forever, a device (or a link to
    ``/dev/zero``) never ends: both are refused with an :class:`ImageError`
    before a byte is read. The file is opened without blocking and checked
    again once open, so a file swapped for one of those in between is
    refused too.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    file : binary file object
        Open for reading; close it (``with``).
    """
    name = quoted(path)
    _check_regular(os.stat(path).st_mode, name)  # follows links: a link to a device is refused
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        _check_regular(os.fstat(fd).st_mode, name)
    except ImageError:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _check_regular(mode: int, name: str) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise ImageError(f"{name} is a directory, not an image file.")
    kinds = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
             stat.S_ISSOCK: "a socket"}  # fmt: skip
    kind = next((what for test, what in kinds.items() if test(mode)), "not a regular file")
    raise ImageError(f"{name} is {kind}, not an image file: only regular files are read.")


def _opened(f: BinaryIO, name: str) -> Image.Image:
    """``f`` opened by Pillow: its header read within :data:`MAX_HEADER_BYTES` and :data:`MAX_HEADER_READS`."""
    limited = _HeaderLimit(f, name)
    with warnings.catch_warnings():
        # skcnn applies its own limit (max_pixels) once the header is read.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(limited)
    limited.done = True  # decoding the pixels reads what the header announced
    return im


class _HeaderLimit:
    """``f``, whose reads are counted until :attr:`done`; seeks are free."""

    def __init__(self, f: BinaryIO, name: str):
        self._f, self._name, self.done = f, name, False
        self._bytes = self._calls = 0

    def read(self, size: int | None = -1) -> bytes:
        if self.done:
            return self._f.read(size)
        self._calls += 1
        left = MAX_HEADER_BYTES - self._bytes
        if left <= 0 or self._calls > MAX_HEADER_READS:
            raise ImageError(
                f"{self._name}: no image header within {self._bytes:,} bytes and {self._calls - 1:,} reads "
                "(skcnn.images.MAX_HEADER_BYTES, MAX_HEADER_READS); not an image skcnn reads."
            )
        data = self._f.read(left if size is None or size < 0 else min(size, left))
        self._bytes += len(data)
        return data

    def __getattr__(self, name: str):
        return getattr(self._f, name)


def _read_file(path: str | os.PathLike, max_pixels: int | None, min_side: int | None) -> np.ndarray:
    name = quoted(path)
    try:
        with open_image_file(path) as f, _opened(f, name) as im:
            _check_pixels(im, max_pixels, name)
            return _decoded(im, f, name, min_side)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"Image file not found: {name}.") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image file PIL can read (empty, or not an image).") from None
    except Image.DecompressionBombError:
        raise ImageError(
            f"{name} is larger than PIL's decompression-bomb limit; raise "
            "PIL.Image.MAX_IMAGE_PIXELS if the image is genuine."
        ) from None
    except OSError as exc:  # truncated or corrupt data, or a file that cannot be read
        raise ImageError(f"Cannot decode image {name}: {exc}.") from None
    except Exception as exc:
        # Decoders raise what they meet on crafted data: ValueError for a PNG
        # text or ICC chunk that inflates past Pillow's limit, SyntaxError,
        # struct.error, EOFError, ... Each is a bad file, not a failed run.
        raise ImageError(f"Cannot decode image {name}: {type(exc).__name__}: {exc}.") from None


def _decoded(im: Image.Image, f: BinaryIO, name: str, min_side: int | None) -> np.ndarray:
    """The pixels of the opened file ``im`` (read from ``f``), oriented."""
    if im.format in jpeg.JPEG_FORMATS:
        scale = jpeg.dct_scale(im.size, min_side)
        pixels = jpeg.decode(_whole_jpeg(f, im, name), im, scale)
        if pixels is not None:
            return _oriented(pixels, im.getexif().get(_ORIENTATION, 1))
        jpeg.draft(im, scale)  # a JPEG the fast path declines: Pillow's decoder and verdict
    im.load()  # the first frame of animated images
    return _shown(im)


def _whole_jpeg(f: BinaryIO, im: Image.Image, name: str) -> bytes:
    """The bytes of a JPEG file, refused unread when far larger than its picture needs."""
    size = os.fstat(f.fileno()).st_size
    bound = MAX_JPEG_BYTES_PER_PIXEL * im.width * im.height + MAX_JPEG_EXTRA_BYTES
    if size > bound:
        raise ImageError(
            f"{name} is a {im.width} x {im.height} JPEG of {size:,} bytes, more than such a picture can "
            f"hold ({bound:,}: skcnn.images.MAX_JPEG_BYTES_PER_PIXEL per pixel plus MAX_JPEG_EXTRA_BYTES); "
            "it is not read."
        )
    f.seek(0)
    return f.read()


def _shown(im: Image.Image) -> np.ndarray:
    """The pixels of a PIL image as shown: its EXIF orientation applied to the array (a view
    where no turn is needed, never a copy of the image in PIL's memory)."""
    return _oriented(_pil_to_array(im), im.getexif().get(_ORIENTATION, 1))


def _within_aspect_ratio(pixels: np.ndarray) -> np.ndarray:
    """The centre of the long side, as long as :data:`MAX_ASPECT_RATIO` times the short side allows (a view)."""
    height, width = pixels.shape[:2]
    longest = MAX_ASPECT_RATIO * max(min(height, width), 1)
    if max(height, width) <= longest:
        return pixels
    if height > width:
        top = (height - longest) // 2
        return pixels[top : top + longest]
    left = (width - longest) // 2
    return pixels[:, left : left + longest]


#: The EXIF tag of how the stored pixels are shown, and for each of its
#: values the numpy view that shows them (as PIL's ``ImageOps.exif_transpose``).
_ORIENTATION = 0x0112
_SHOWN = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _oriented(pixels: np.ndarray, orientation: int) -> np.ndarray:
    shown = _SHOWN.get(orientation)
    return pixels if shown is None else np.ascontiguousarray(shown(pixels))


def _check_pixels(im: Image.Image, max_pixels: int | None, name: str) -> None:
    width, height = im.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{name} is {width} x {height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} (max_pixels); raise max_pixels if the image is genuine."
        )


def _pil_to_array(im: Image.Image) -> np.ndarray:
    # np.asarray of an "RGB" or "L" image is its only copy of the pixels:
    # convert() to the same mode would copy them once more (in PIL's 4 bytes
    # per RGB pixel), which a 100-megapixel file cannot afford.
    if im.mode in ("RGB", "L"):
        return _array_to_pixels(_as_array(im))
    if im.mode in _SIXTEEN_BIT_MODES:
        return _array_to_pixels(np.asarray(im, dtype=np.uint16))
    if im.mode in _GRAY_MODES:
        return _array_to_pixels(np.asarray(im.convert("L")))
    if im.mode in ("I", "F"):
        raise ImageError(
            f"PIL image mode {im.mode!r} (32-bit integer or float pixels) has no defined "
            "intensity range; convert it to 'L', 'RGB' or a float array in [0, 1] first."
        )
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL's advice for palettes with transparency
    return _array_to_pixels(np.asarray(im.convert("RGB")))


#: Rows of a large image copied out of PIL at a time (see :func:`_as_array`).
_BAND_PIXELS = 2**22


def _as_array(im: Image.Image) -> np.ndarray:
    """An "RGB" or "L" image's pixels in a new array, copied a band of rows at a time.

    np.asarray(im) goes through im.tobytes(), which joins a list of chunks:
    two copies of the pixels beside PIL's own at the peak, and a read-only
    array (which torch would copy once more to wrap it). Band by band the
    peak is PIL's pixels, the array and one band; small images take the
    short way.
    """
    width, height = im.size
    if width * height <= _BAND_PIXELS:
        return np.asarray(im)
    out = np.empty((height, width, len(im.getbands())), dtype=np.uint8)
    rows = max(1, _BAND_PIXELS // width)
    for top in range(0, height, rows):
        band = im.crop((0, top, width, min(top + rows, height)))
        out[top : top + band.height] = np.asarray(band).reshape(band.height, width, -1)
    return out if out.shape[2] == 3 else out[:, :, 0]


def _array_to_pixels(array: np.ndarray) -> np.ndarray:
    array = _to_hwc(array)
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.view(np.uint8) * np.uint8(255)
    if array.dtype == np.uint16:
        return _scaled(array, np.float32(65535))
    if array.dtype.kind == "f":
        return _check_unit_range(array.astype(np.float32, copy=False))
    raise ImageError(
        f"Image arrays must be uint8 (0-255), uint16 (0-65535), bool or float in [0, 1]; got dtype {array.dtype}."
    )


def _scaled(array: np.ndarray, full_scale: np.float32) -> np.ndarray:
    """``array / full_scale`` in float32, in one pass over the pixels.

    The result is an (H, W, C) view of channel-major memory: float images
    are resized channel-major, so preprocessing then needs no copy of the
    full-resolution image to reorder it (the values are those of
    ``array.astype(np.float32) / full_scale``, bit for bit).
    """
    channels_first = np.empty((array.shape[2], *array.shape[:2]), dtype=np.float32)
    np.divide(array.transpose(2, 0, 1), full_scale, out=channels_first, dtype=np.float32)
    return channels_first.transpose(1, 2, 0)


def _to_hwc(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim == 3 and array.shape[2] in (1, 3):
        return array
    if array.ndim == 3 and array.shape[2] == 4:
        return array[:, :, :3]  # RGBA: drop alpha, as PIL's convert("RGB") does
    raise ImageError(
        f"An image array must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {array.shape}."
    )


def _check_unit_range(array: np.ndarray) -> np.ndarray:
    if not np.isfinite(array).all():
        raise ImageError("A float image contains NaN or infinite values.")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ImageError(
            f"Float images must have values in [0, 1]; got values in [{low:g}, {high:g}]. "
            "Divide uint8-range data by 255 or pass it as uint8."
        )
    return array


def shown_path(path: str | os.PathLike) -> str:
    r"""A path as shown to people and written into text files: bytes that are not UTF-8 escaped.

    A file name on Linux can be any bytes; Python gives one that is not
    UTF-8 as a str with surrogate escapes (:func:`os.fsdecode`), which
    opens the right file but cannot be encoded: printing it, or writing it
    into a UTF-8 file or a pandas string column, fails. Here each such byte
    is written ``\xNN``; other names are returned as they are. Keep the
    path itself to read the file: the name shown may not open it.

    Parameters
    ----------
    path : str or path
        A path as Python gives it (or a folder name, or a message naming one).

    Returns
    -------
    shown : str
        The path, encodable as UTF-8.

    Examples
    --------
    >>> import os
    >>> from skcnn.images import shown_path
    >>> print(shown_path(os.fsdecode(b"photos/caf\xe9.jpg")))
    photos/caf\xe9.jpg
    >>> print(shown_path("photos/café.jpg"))
    photos/café.jpg
    """
    # The escapes back to their bytes, whatever the locale's encoding, then only those bytes escaped.
    return os.fspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def quoted(path: str | os.PathLike) -> str:
    """A path in quotes, as error messages name files (:func:`shown_path`)."""
    return f"'{shown_path(path)}'"


def describe(image: Any, index: int) -> str:
    """Name an image in error messages: its path if it has one, else its index."""
    if isinstance(image, (str, os.PathLike)):
        return f"image {index} ({quoted(image)})"
    return f"image {index}"


__all__ = [
    "MAX_ASPECT_RATIO",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_READS",
    "MAX_JPEG_BYTES_PER_PIXEL",
    "MAX_JPEG_EXTRA_BYTES",
    "BadImagesError",
    "BadImagesWarning",
    "ImageError",
    "ImageFailure",
    "check_images",
    "gives_uint8",
    "load_image",
    "open_image_file",
    "shown_path",
]
