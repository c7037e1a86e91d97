"""Duplicate images: exact copies by content, near copies by the cosine similarity of their codes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.neighbors import NearestNeighbors

from .. import images as image_io
from ..identity import content_keys
from ..transformer import CNNFeatureTransformer
from .codes import transformed
from .models import image_path, note_failures

#: The default transformer's codes: a mid-level layer of EfficientNet-Lite0
#: (112 channels at 1/16 of the input) in a spatial pyramid of average pools,
#: so that the layout of an image counts, not only what is in it. Measured
#: on 104 photo crops and three copies of each (re-encoded at JPEG quality
#: 70, resized 0.8x, cropped by 10%): the copies' lowest similarity was
#: 0.910 and two different crops of one photo reached at most 0.926; the
#: penultimate codes gave 0.70 and 0.97, no threshold between
#: (``benchmarks/RESULTS.md``, "Duplicates").
DUPLICATE_CODES = {"layer": "blocks.4", "pooling": "spp"}
#: Cosine similarity of those codes from which two images count as copies.
DUPLICATE_SIMILARITY = 0.93


def find_duplicates(X, X_other=None, *, threshold=DUPLICATE_SIMILARITY, transformer=None) -> pd.DataFrame:
    """Pairs of images that are copies of each other: exact, or re-encoded, resized or cropped.

    Exact copies are found by content (the code cache's image keys); near
    copies by the cosine similarity of their codes, through
    :class:`~sklearn.neighbors.NearestNeighbors` (a radius query on the
    normalised codes, computed in chunks, never all pairs in memory).

    Parameters
    ----------
    X : sequence of images
        Paths, PIL images or arrays.
    X_other : sequence of images or None, default=None
        ``None`` pairs the images of ``X`` with each other. Otherwise each
        image of ``X_other`` (a test set) with the images of ``X`` (the
        training set): the test images that leak, having a copy in training.
    threshold : float in (-1, 1], default=DUPLICATE_SIMILARITY
        Cosine similarity from which a pair is reported. The default was
        measured with the default ``transformer``; another network or layer
        needs its own.
    transformer : CNNFeatureTransformer or None, default=None
        Whose codes measure similarity (cloned and fit, so a fitted one
        works too; with its ``cache``, codes are computed once). ``None``:
        ``CNNFeatureTransformer(**DUPLICATE_CODES)`` (progress shown as ``progress="auto"`` says), a spatial pyramid of
        a mid-level layer of the default backbone, where copies stand
        apart from other photos of the same scene (penultimate codes
        describe what is in an image, and rate such photos as alike as
        copies).

    Returns
    -------
    pairs : pandas.DataFrame
        One row per pair, most similar first: ``index`` (into ``X``),
        ``other_index`` (into ``X_other`` where given, else into ``X``,
        larger than ``index``), ``similarity`` (1.0 for exact copies),
        ``exact`` (the same content), and ``path`` / ``other_path`` where
        the images are files (as :func:`skcnn.datasets.shown_path` shows
        them). Images that could not be used are left out, named in a
        warning and in ``pairs.attrs["failed"]``.

    Examples
    --------
    >>> from PIL import Image
    >>> from skimage import data
    >>> from skcnn.inspection import find_duplicates
    >>> photo = data.astronaut()
    >>> train = [photo[:256, :256], photo[:256, 256:], photo[256:, :256]]
    >>> smaller = Image.fromarray(train[1]).resize((200, 200))  # a resized copy of the second
    >>> test = [train[0], smaller, photo[256:, 256:]]
    >>> pairs = find_duplicates(train, test)
    >>> pairs[["index", "other_index", "exact"]].values.tolist()
    [[0, 0, True], [1, 1, False]]
    """
    if not (isinstance(threshold, (int, float)) and -1 < threshold <= 1):
        raise ValueError(f"threshold must be a cosine similarity in (-1, 1]; got {threshold!r}.")
    images = image_io.as_image_list(X)
    others = None if X_other is None else image_io.as_image_list(X_other)
    transformer = clone(duplicate_codes() if transformer is None else transformer).fit(images)
    codes = transformed(transformer, images, fit=False)
    other_codes = None if others is None else transformed(transformer, others, fit=False)
    pairs = duplicate_pairs(images, codes.codes, others, None if others is None else other_codes.codes, threshold)
    left_out = codes.failures + ([] if others is None else other_codes.failures)
    note_failures(pairs, left_out, len(images) + len(others or []), stacklevel=2)
    return pairs


def duplicate_codes() -> CNNFeatureTransformer:
    """The transformer whose codes :func:`find_duplicates` compares by default."""
    return CNNFeatureTransformer(**DUPLICATE_CODES)


def duplicate_pairs(
    images: list,
    codes: np.ndarray,
    others: list | None = None,
    other_codes: np.ndarray | None = None,
    threshold: float = DUPLICATE_SIMILARITY,
) -> pd.DataFrame:
    """:func:`find_duplicates` of images whose codes are given (NaN rows for those left out), without
    naming the images left out (``pairs.attrs``)."""
    codes = _unit(codes)
    keys = content_keys(images, [])
    if others is None:
        other_codes, other_keys = codes, keys
    else:
        other_codes, other_keys = _unit(other_codes), content_keys(others, [])
    pairs = pd.concat(
        [
            _near_pairs(codes, other_codes, threshold, same_set=others is None),
            _exact_pairs(keys, other_keys, same_set=others is None),
        ]
    )
    pairs = pairs.sort_values("exact", ascending=False, kind="stable").drop_duplicates(["index", "other_index"])
    pairs = pairs.sort_values(["similarity", "index", "other_index"], ascending=[False, True, True], kind="stable")
    pairs = pairs.reset_index(drop=True)
    if any(image_path(image) for image in images + (others or [])):
        pairs["path"] = [image_path(images[i]) for i in pairs["index"]]
        pairs["other_path"] = [image_path((others or images)[i]) for i in pairs["other_index"]]
    return pairs


def _unit(codes: np.ndarray) -> np.ndarray:
    """Codes scaled to unit length (NaN rows stay NaN)."""
    codes = np.asarray(codes, dtype=np.float32)
    norms = np.linalg.norm(codes, axis=1, keepdims=True)
    return codes / np.maximum(norms, np.finfo(np.float32).tiny)  # all-zero codes stay zero: similarity 0


def _near_pairs(codes: np.ndarray, other_codes: np.ndarray, threshold: float, same_set: bool) -> pd.DataFrame:
    """Pairs whose unit codes lie within the distance a cosine similarity of ``threshold`` allows."""
    rows = np.flatnonzero(~np.isnan(codes).any(axis=1))
    other_rows = np.flatnonzero(~np.isnan(other_codes).any(axis=1))
    if not len(rows) or not len(other_rows):
        return _pairs([], [], [], exact=False)
    # |a - b|^2 = 2 - 2 cos(a, b) for unit vectors; a hair of slack for float32 rounding.
    radius = np.sqrt(max(2.0 - 2.0 * threshold, 0.0)) + 1e-6
    search = NearestNeighbors(radius=radius).fit(codes[rows])
    neighbours = search.radius_neighbors(other_codes[other_rows], return_distance=False)
    found = [(rows[j], other_rows[i]) for i, row in enumerate(neighbours) for j in row]
    index = np.asarray([a for a, _ in found], dtype=np.int64)
    other = np.asarray([b for _, b in found], dtype=np.int64)
    if same_set:  # each pair once, no image with itself
        index, other = np.minimum(index, other), np.maximum(index, other)
        keep = index < other
        index, other = index[keep], other[keep]
    similarity = np.einsum("ij,ij->i", codes[index], other_codes[other]).astype(np.float64)
    keep = similarity >= threshold
    pairs = _pairs(index[keep], other[keep], similarity[keep], exact=False)
    return pairs.drop_duplicates(["index", "other_index"])


def _exact_pairs(keys: dict[int, str], other_keys: dict[int, str], same_set: bool) -> pd.DataFrame:
    """Pairs of images with the same content key."""
    where: dict[str, list[int]] = {}
    for i, key in keys.items():
        where.setdefault(key, []).append(i)
    found = [(i, j) for j, key in other_keys.items() for i in where.get(key, []) if not same_set or i < j]
    return _pairs([i for i, _ in found], [j for _, j in found], [1.0] * len(found), exact=True)


def _pairs(index, other, similarity, exact: bool) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "index": np.asarray(index, dtype=np.int64),
            "other_index": np.asarray(other, dtype=np.int64),
            "similarity": np.asarray(similarity, dtype=np.float64),
            "exact": np.full(len(index), exact),
        }
    )
