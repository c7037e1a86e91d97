"""torch's antialiased uint8 resize, in numpy: the server's resize of small images.

A fitted model resizes uint8 pixels with torch's antialiased kernel
(:meth:`skcnn.decoding.preprocessing.Preprocessing.crop`). That kernel is Pillow's
algorithm (the same filter supports, centres and normalised weights) but
rounds the weights to int16 at a precision chosen per axis from its
largest weight: 14 bits where an image is enlarged (a weight near 1),
against Pillow's fixed 22. Where a small image is enlarged many times
(a 28 px digit to 256 px) the two disagree by one or two levels on about
1% of the values, which moves a classifier's probabilities by up to a
few 1e-3 (``benchmarks/RESULTS.md``, "Parity of the served file").
:func:`resize` computes exactly what torch computes (the same weights in
float64, the same integer sums and shifts, width first), needing numpy
only. It is several times slower than Pillow on large images, so
:mod:`skcnn.serving` uses it where the image is small and Pillow elsewhere.
"""

from __future__ import annotations

import numpy as np

#: The filters torch computes this way (torchvision's interpolation names).
FILTERS = ("bilinear", "bicubic")


def resize(pixels: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """Resize ``(H, W, C)`` uint8 pixels to ``size`` (height, width) as torch's antialiased uint8 kernel does.

    Parameters
    ----------
    pixels : ndarray of shape (H, W, C), uint8
        The image.
    size : (int, int)
        Height and width of the result.
    interpolation : {"bilinear", "bicubic"}
        The filter (antialiased when reducing, as torchvision's ``antialias=True``).

    Returns
    -------
    resized : ndarray of shape (size[0], size[1], C), uint8
    """
    if interpolation not in FILTERS:
        raise ValueError(f"interpolation must be one of {FILTERS}; got {interpolation!r}.")
    out = pixels.astype(np.int32)
    if size[1] != pixels.shape[1]:
        out = _resampled(out, 1, size[1], interpolation)
    if size[0] != pixels.shape[0]:
        out = _resampled(out, 0, size[0], interpolation)
    return out.astype(np.uint8)


def _resampled(pixels: np.ndarray, axis: int, out_size: int, interpolation: str) -> np.ndarray:
    """One pass along ``axis`` of int32 levels: sums of int16 weights, rounded and clipped to 0-255 (as torch's)."""
    first, weights, precision = _weights(pixels.shape[axis], out_size, interpolation)
    weights, last = weights.astype(np.int32), pixels.shape[axis] - 1
    shape = [1, 1, 1]
    shape[axis] = out_size
    total = np.full([out_size if i == axis else n for i, n in enumerate(pixels.shape)], 1 << (precision - 1), np.int32)
    for tap in range(weights.shape[1]):  # taps past an output's own count have weight 0
        taken = np.take(pixels, np.minimum(first + tap, last), axis=axis)
        taken *= weights[:, tap].reshape(shape)
        total += taken
    total >>= precision
    return np.clip(total, 0, 255, out=total)


def _weights(in_size: int, out_size: int, interpolation: str) -> tuple[np.ndarray, np.ndarray, int]:
    """First source index and int16 weights of each output index, and their precision (bits).

    torch's ``_compute_indices_min_size_weights_aa`` and
    ``_compute_index_ranges_int16_weights`` (aten/src/ATen/native/cpu/UpSampleKernel.cpp),
    operation for operation in float64.
    """
    support_size = 2 if interpolation == "bilinear" else 4
    scale = in_size / out_size
    support = support_size * 0.5 * scale if scale >= 1.0 else support_size * 0.5
    taps = int(np.ceil(support)) * 2 + 1
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    centre = scale * (np.arange(out_size) + 0.5)
    first = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # C casts truncate toward zero
    count = np.clip(np.minimum((centre + support + 0.5).astype(np.int64), in_size) - first, 0, taps)
    offsets = np.arange(taps)
    x = ((first[:, None] + offsets).astype(np.float64) - centre[:, None] + 0.5) * invscale
    weights = np.where(offsets < count[:, None], _filter(x, interpolation), 0.0)
    total = np.zeros(out_size)
    for tap in range(taps):  # summed in order, as torch sums them
        total = total + weights[:, tap]
    weights = np.divide(weights, total[:, None], out=weights, where=total[:, None] != 0.0)
    largest = max(float(weights.max()), 0.0)
    precision = 0
    while precision < 22 and int(0.5 + largest * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = weights * (1 << precision)
    return first, np.trunc(np.where(scaled < 0, scaled - 0.5, scaled + 0.5)), precision


def _filter(x: np.ndarray, interpolation: str) -> np.ndarray:
    """torch's antialiasing filters: the triangle, and Keys' cubic with a = -0.5 (as Pillow's)."""
    x = np.abs(x)
    if interpolation == "bilinear":
        return np.where(x < 1.0, 1.0 - x, 0.0)
    a = -0.5
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


__all__ = ["FILTERS", "resize"]
