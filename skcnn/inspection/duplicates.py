"""Duplicate images: exact copies by content, near copies by the cosine similarity of their codes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import clone

from ..decoding import images as image_io
from ..decoding.identity import content_keys
from ..frozen.transformer import CNNFeatureTransformer
from .code_search import check_search, near_pairs
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


def find_duplicates(
    X, X_other=None, *, threshold=DUPLICATE_SIMILARITY, transformer=None, search="auto"
) -> pd.DataFrame:
    """Pairs of images that are copies of each other: exact, or re-encoded, resized or cropped.

    Exact copies are found by content (the code cache's image keys); near
    copies by the cosine similarity of their codes (as
    :func:`find_duplicate_codes` finds them: every pair compared in blocks,
    or candidates from an approximate index, each checked on the full codes).

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
    search : {"auto", "exact", "approximate"}, default="auto"
        How near copies are searched: ``"exact"`` compares every pair of
        codes (time grows with the square of their count); ``"approximate"``
        takes candidates from an index (``pip install 'skcnn[scale]'``,
        faiss) and checks each on the full codes, so it may miss a pair,
        never report one under ``threshold``; ``"auto"``: exact under
        ``APPROXIMATE_FROM`` images (both sets together), approximate from
        there where faiss is installed (a warning otherwise).

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
    check_search(search)
    images = image_io.as_image_list(X)
    others = None if X_other is None else image_io.as_image_list(X_other)
    transformer = clone(duplicate_codes() if transformer is None else transformer).fit(images)
    codes = transformed(transformer, images, fit=False)
    other_codes = None if others is None else transformed(transformer, others, fit=False)
    other = None if others is None else other_codes.codes
    pairs = duplicate_pairs(images, codes.codes, others, other, threshold, search=search)
    left_out = codes.failures + ([] if others is None else other_codes.failures)
    note_failures(pairs, left_out, len(images) + len(others or []), stacklevel=2)
    return pairs


def duplicate_codes() -> CNNFeatureTransformer:
    """The transformer whose codes :func:`find_duplicates` compares by default."""
    return CNNFeatureTransformer(**DUPLICATE_CODES)


def find_duplicate_codes(codes, other_codes=None, *, threshold=DUPLICATE_SIMILARITY, search="auto") -> pd.DataFrame:
    """Pairs of codes with a cosine similarity of at least ``threshold``: :func:`find_duplicates` of
    codes already computed, of any number (read in blocks of rows).

    Parameters
    ----------
    codes : array-like of shape (n_codes, n_features)
        A NumPy array, ``numpy.memmap`` or HDF5 dataset (``h5py``): anything
        sliced by rows is read in blocks, never whole. NaN rows (images
        that could not be read) are in no pair.
    other_codes : array-like of shape (n_other, n_features) or None, default=None
        ``None`` pairs the codes with each other. Otherwise each of
        ``other_codes`` (a test set's) with ``codes`` (the training set's).
    threshold : float in (-1, 1], default=DUPLICATE_SIMILARITY
        Cosine similarity from which a pair is reported (measured for the
        codes of ``duplicate_codes()``, the default transformer of :func:`find_duplicates`).
    search : {"auto", "exact", "approximate"}, default="auto"
        ``"exact"``: every pair compared, in blocks of matrix products.
        ``"approximate"`` (``pip install 'skcnn[scale]'``, faiss): PCA to
        128 dimensions fit on a sample, 16 nearest neighbours of each code
        in an inverted-file index (more where all of them are copies: a
        cluster of copies), and each candidate's similarity computed again
        from the full codes, so no pair under ``threshold`` is reported.
        ``"auto"``: exact under ``APPROXIMATE_FROM`` codes (both sets
        together), approximate from there where faiss is installed (a
        warning otherwise).

    Returns
    -------
    pairs : pandas.DataFrame
        One row per pair, most similar first: ``index`` (into ``codes``),
        ``other_index`` (into ``other_codes`` where given, else into
        ``codes``, larger than ``index``), ``similarity`` and ``exact``
        (``False``: codes do not tell exact copies).

    See Also
    --------
    find_duplicates : The same from images, exact copies included.

    Examples
    --------
    >>> import numpy as np
    >>> from skcnn.inspection import find_duplicate_codes
    >>> rng = np.random.default_rng(0)
    >>> codes = rng.random((1000, 64))
    >>> codes[7] = codes[500] + 0.01 * rng.random(64)  # a near copy
    >>> codes[9] = np.nan  # an image that could not be read
    >>> find_duplicate_codes(codes)[["index", "other_index"]].values.tolist()
    [[7, 500]]
    """
    if not (isinstance(threshold, (int, float)) and -1 < threshold <= 1):
        raise ValueError(f"threshold must be a cosine similarity in (-1, 1]; got {threshold!r}.")
    if other_codes is not None and other_codes.shape[1] != codes.shape[1]:
        raise ValueError(f"other_codes has {other_codes.shape[1]} features, codes {codes.shape[1]}.")
    index, other, similarity = near_pairs(codes, other_codes, threshold=threshold, search=search)
    pairs = _pairs(index, other, similarity, exact=False)
    order = np.lexsort((pairs["other_index"], pairs["index"], -pairs["similarity"]))
    return pairs.iloc[order].reset_index(drop=True)


def duplicate_pairs(
    images: list,
    codes: np.ndarray,
    others: list | None = None,
    other_codes: np.ndarray | None = None,
    threshold: float = DUPLICATE_SIMILARITY,
    search: str = "auto",
) -> pd.DataFrame:
    """:func:`find_duplicates` of images whose codes are given (NaN rows for those left out), without
    naming the images left out (``pairs.attrs``)."""
    keys = content_keys(images, [])
    other_keys = keys if others is None else content_keys(others, [])
    pairs = pd.concat(
        [
            find_duplicate_codes(codes, other_codes, threshold=threshold, search=search),
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
