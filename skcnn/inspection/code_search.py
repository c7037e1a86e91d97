"""Pairs of codes whose cosine similarity reaches a threshold: exact, or through an approximate index.

The exact search compares every pair, in blocks of matrix products over
unit codes (time grows with the square of the count). The approximate one
(``search="approximate"``, the optional ``faiss-cpu``: ``pip install
'skcnn[scale]'``) finds candidates among the nearest neighbours of each code
in a reduced space, then computes every candidate's cosine similarity from
the full codes again, so that no pair under the threshold is reported: it
may miss a pair, never invent one.

Both stream the codes in blocks of rows, so an array, a ``numpy.memmap`` or
an HDF5 dataset (``h5py``) of any length works: the approximate search holds
the reduced codes (256 float32 a row: 1 GB for 10^6), the index (another
copy of the first 128) and blocks of rows, not the codes. It reads the rows
of the candidates again at random: an HDF5 dataset should be contiguous or
chunked by few rows (a chunk is read whole for one row of it).

Measured (``benchmarks/RESULTS.md``, "Duplicates at a million"), 2-core
Xeon shared with other jobs (load average 4-9), synthetic codes shaped like
the duplicate codes (2,352 dims). The libraries on the same 10^5 codes
reduced to 128 dims, 16 neighbours each, recall of 1,981 planted copies:
faiss IVF (1,264 lists, 16 probed) 4.9 s, recall 1.000; faiss HNSW (M=32,
efSearch=64) 10.9 s, 1.000; usearch HNSW (f16) 10.6 s, 1.000; pynndescent
27.7 s, 1.000. At 10^6: faiss IVF (4,000 lists) 167 s with 8 probed
(recall 0.9963 of 19,817 copies), 347 s with 16 (0.9993); faiss HNSW
(M=32) had not finished building and searching after about 14 minutes.
faiss IVF: the fastest here, the least memory (the vectors and one id
each, no graph), MIT licence, one 66 MB wheel with no other dependencies
(usearch: Apache-2.0, 11 MB and numkong 44 MB; pynndescent: BSD, brings
numba and llvmlite, 210 MB). The whole approximate search of 10^6 codes
from an HDF5 file: 267 s, 99.61% of 14,261 planted copies found, no
false pair.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

#: ``search="auto"`` uses the approximate index from this many codes
#: (``codes`` and ``other_codes`` together). Measured on 2 loaded cores
#: (``benchmarks/bench_duplicates_scale.py``): exact 2.2 s against
#: approximate 1.7 s at 10^4, 138.9 s against 24.3 s at 10^5 (each in a
#: process of its own); in one process, 6.4 s against 7.2 s at 2 * 10^4 and
#: 32.4 s against 9.5 s at 4 * 10^4. The approximate search's fixed costs
#: (PCA, k-means) move most with the load, and the exact one misses nothing:
#: exact up to 2 * 10^4.
APPROXIMATE_FROM = 20_000
#: What ``search`` accepts.
SEARCHES = ("auto", "exact", "approximate")
#: Dimensions the approximate search reduces codes to (PCA fit on a sample),
#: in its index; and with the next components, to bound distances before
#: the full codes are read again.
REDUCED_DIMENSIONS = 128
BOUND_DIMENSIONS = 256
#: Rows the PCA is fit on, taken in runs spread over the codes (10^4 or
#: 2 * 10^4 synthetic codes: the first 128 components explain 77.8% and
#: 77.1% of the variance).
PCA_SAMPLE = 10_000
#: Neighbours first asked of the index per code; a code of which half of
#: them or more prove copies (a cluster of copies) is asked again with four
#: times as many, until fewer prove copies.
NEIGHBOURS = 16
#: Inverted lists probed per query (of about ``4 * sqrt(n)`` lists): at 10^6
#: synthetic codes 8 found 99.63% of the planted copies among 16 neighbours
#: in 167 s, 16 found 99.93% in 347 s.
PROBES = 8
#: Bytes of codes read at a time.
BLOCK_BYTES = 2**26
#: Codes whose neighbours are asked of the index at a time.
QUERY_BATCH = 2**16


def check_search(search) -> None:
    """Raise a ValueError naming the parameter and its values unless ``search`` is one of ``SEARCHES``."""
    if not (isinstance(search, str) and search in SEARCHES):
        raise ValueError(f"search must be one of {', '.join(map(repr, SEARCHES))}; got {search!r}.")


def chosen_search(search: str, n_codes: int) -> str:
    """``"exact"`` or ``"approximate"``: what ``search`` means for ``n_codes`` codes."""
    check_search(search)
    if search == "approximate":
        _faiss()  # says how to install it
        return search
    if search == "exact" or n_codes < APPROXIMATE_FROM:
        return "exact"
    try:
        _faiss()
    except ImportError:
        warnings.warn(
            f"{n_codes} codes: the exact search takes a time that grows with the square of their count "
            "(about 2 minutes at 10^5, hours at 10^6); pip install 'skcnn[scale]' (faiss-cpu) for "
            "search='auto' to use an approximate index from "
            f"{APPROXIMATE_FROM} codes.",
            UserWarning,
            stacklevel=3,
        )
        return "exact"
    return "approximate"


def near_pairs(codes, other_codes=None, *, threshold: float, search: str = "auto") -> tuple[np.ndarray, ...]:
    """``(index, other_index, similarity)`` of the pairs of codes with a cosine similarity of at least
    ``threshold``; NaN rows in no pair. ``other_codes=None``: pairs within ``codes``, ``index < other_index``.

    ``codes`` and ``other_codes`` may be any 2-D array that can be sliced by
    rows (``numpy.memmap``, ``h5py.Dataset``): they are read in blocks.
    """
    n_codes = len(codes) + (0 if other_codes is None else len(other_codes))
    if chosen_search(search, n_codes) == "exact":
        return _exact_pairs(codes, other_codes, threshold)
    return _approximate_pairs(codes, other_codes, threshold)


def _exact_pairs(codes, other_codes, threshold: float) -> tuple[np.ndarray, ...]:
    """Every pair compared, a block of ``other_codes`` against the blocks of ``codes`` (NaN rows give
    NaN similarities, under any threshold)."""
    same_set = other_codes is None
    others = codes if same_set else other_codes
    found = [(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))]
    for b, (other_start, other_block) in enumerate(_unit_blocks(others)):
        for a, (start, block) in enumerate(_unit_blocks(codes)):
            if same_set and a > b:
                break
            similarity = block @ other_block.T
            i, j = np.nonzero(similarity >= threshold)
            if same_set:
                i, j = i[i + start < j + other_start], j[i + start < j + other_start]
            found.append((i + start, j + other_start, similarity[i, j].astype(np.float64)))
    return tuple(np.concatenate(column) for column in zip(*found, strict=True))


def _approximate_pairs(codes, other_codes, threshold: float) -> tuple[np.ndarray, ...]:
    """Candidates among the nearest neighbours of reduced codes, each checked on the full codes.

    The reduction is an orthogonal projection (PCA): it never lengthens the
    distance between two unit codes (``|a - b|^2 = 2 - 2 cos(a, b)``). A
    candidate is dropped where a lower bound of its distance passes the
    threshold's: the distance on the first ``REDUCED_DIMENSIONS`` components
    (the index's), then on ``BOUND_DIMENSIONS``, each plus the difference of
    the lengths the projection left out squared. Only the candidates left
    are read again from the full codes (at 10^5 synthetic codes: 18,059
    candidates for 16,009 pairs, against 105,171 with 128 dimensions alone).

    Clusters: a query of which half the candidates or more proved copies
    may have more than it asked for (a cluster of copies, or a dense region
    near the threshold); it asks again with four times as many neighbours,
    until fewer prove copies. (With "all of them", 92.1% of the exact pairs
    of 10^4 real codes were found, where hundreds of digits are alike.)
    """
    faiss = _faiss()
    same_set = other_codes is None
    others = codes if same_set else other_codes
    projection = _fit_projection(codes, others)
    reduced = _reduced(codes, projection)
    other_reduced = reduced if same_set else _reduced(others, projection)
    rows = np.flatnonzero(~np.isnan(reduced.left))
    queries = np.flatnonzero(~np.isnan(other_reduced.left))
    found = [(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))]
    if not len(rows) or not len(queries):
        return tuple(np.concatenate(column) for column in zip(*found, strict=True))
    index = _index(faiss, reduced.head[rows])
    radius2 = 2.0 - 2.0 * threshold + 1e-4  # squared distance of the threshold, float32 slack
    k = NEIGHBOURS
    while len(queries):
        k = min(k, len(rows))
        full = []
        for start in range(0, len(queries), QUERY_BATCH):
            batch = queries[start : start + QUERY_BATCH]
            distances, neighbours = index.search(other_reduced.head[batch], k)
            i, j = rows[np.maximum(neighbours, 0)], np.repeat(batch, k).reshape(-1, k)
            bound = distances + (reduced.rest[i] - other_reduced.rest[j]) ** 2
            near = (neighbours >= 0) & (bound <= radius2) & ((i != j) if same_set else True)
            i, j, bound = i[near], j[near], distances[near]
            bound += np.einsum("ij,ij->i", *[reduced.tail[i] - other_reduced.tail[j]] * 2)
            near = bound + (reduced.left[i] - other_reduced.left[j]) ** 2 <= radius2
            pairs = _checked(codes, others, i[near], j[near], threshold)
            found.append(pairs)
            copies = np.bincount(np.searchsorted(batch, pairs[1]), minlength=len(batch))
            full.append(batch[copies >= k // 2])
        queries = np.concatenate(full) if k < len(rows) else queries[:0]
        k *= 4
    index_, other, similarity = (np.concatenate(column) for column in zip(*found, strict=True))
    if same_set:
        index_, other = np.minimum(index_, other), np.maximum(index_, other)
    _, first = np.unique(index_ * len(others) + other, return_index=True)
    return index_[first], other[first], similarity[first]


def _index(faiss, reduced: np.ndarray):
    """An inverted-file index of the reduced codes: about ``4 * sqrt(n)`` lists, at least 39 codes each
    to train on."""
    n, dimensions = reduced.shape
    lists = int(max(1, min(4 * np.sqrt(n), n // 39)))
    quantizer = faiss.IndexFlatL2(dimensions)
    index = faiss.IndexIVFFlat(quantizer, dimensions, lists)
    index.cp.niter = 10  # k-means iterations: lists good enough to probe, at 40% of the default's time
    sample = np.random.default_rng(0).choice(n, min(n, 39 * lists), replace=False)
    index.train(reduced[np.sort(sample)])
    index.add(reduced)
    index.nprobe = min(PROBES, lists)
    return index


def _fit_projection(codes, others):
    """PCA of a sample of the unit codes (runs of rows spread over both sets): mean and components, or
    None where the codes are no longer than ``REDUCED_DIMENSIONS``."""
    from sklearn.decomposition import PCA

    if codes.shape[1] <= REDUCED_DIMENSIONS:
        return None
    sets = [codes] if others is codes else [codes, others]
    sample = [block for block in map(_spread_sample, sets) if len(block)]
    sample = np.concatenate(sample) if sample else np.zeros((0, codes.shape[1]), np.float32)
    components = min(BOUND_DIMENSIONS, codes.shape[1], len(sample))
    if components <= REDUCED_DIMENSIONS:
        return None
    pca = PCA(components, svd_solver="randomized", iterated_power=2, random_state=0).fit(sample)
    return pca.mean_.astype(np.float32), pca.components_.astype(np.float32)


def _spread_sample(codes) -> np.ndarray:
    """About ``PCA_SAMPLE`` unit codes (no NaN) in 20 runs of rows spread over ``codes``: contiguous
    reads, quick from a file."""
    n = len(codes)
    run = max(1, PCA_SAMPLE // 20)
    starts = np.unique(np.linspace(0, max(n - run, 0), 20).astype(int))
    blocks = [_unit(np.asarray(codes[s : s + run])) for s in starts]
    sample = np.concatenate(blocks) if blocks else np.zeros((0, codes.shape[1]), np.float32)
    return sample[~np.isnan(sample).any(axis=1)]


class Reduced(NamedTuple):
    """Unit codes projected on the first ``REDUCED_DIMENSIONS`` components (``head``, what the index
    holds) and on the next ones up to ``BOUND_DIMENSIONS`` (``tail``); the length left out of the head
    (``rest``) and of both (``left``); NaN ``rest`` and ``left`` for NaN codes."""

    head: np.ndarray
    tail: np.ndarray
    rest: np.ndarray
    left: np.ndarray


def _reduced(codes, projection) -> Reduced:
    n, width = codes.shape
    dimensions = width if projection is None else REDUCED_DIMENSIONS
    tail_dimensions = 0 if projection is None else len(projection[1]) - REDUCED_DIMENSIONS
    head, tail = np.zeros((n, dimensions), np.float32), np.zeros((n, tail_dimensions), np.float32)
    rest, left = np.zeros(n, np.float32), np.zeros(n, np.float32)
    for start, block in _unit_blocks(codes):
        stop = start + len(block)
        missing = np.isnan(block).any(axis=1)
        block[missing] = 0
        if projection is None:
            head[start:stop] = block
        else:
            mean, components = projection
            centred = block - mean
            projected = centred @ components.T
            head[start:stop], tail[start:stop] = projected[:, :dimensions], projected[:, dimensions:]
            length2 = np.einsum("ij,ij->i", centred, centred)
            rest2 = np.maximum(length2 - np.einsum("ij,ij->i", head[start:stop], head[start:stop]), 0)
            rest[start:stop] = np.sqrt(rest2)
            left[start:stop] = np.sqrt(np.maximum(rest2 - np.einsum("ij,ij->i", tail[start:stop], tail[start:stop]), 0))
        rest[start:stop][missing] = np.nan
        left[start:stop][missing] = np.nan
    return Reduced(head, tail, rest, left)


def _checked(codes, others, index: np.ndarray, other: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
    """The pairs whose cosine similarity, computed from the full codes, reaches ``threshold``."""
    index, other = np.asarray(index, np.int64), np.asarray(other, np.int64)
    similarity = np.zeros(len(index))
    per_batch = max(1, BLOCK_BYTES // (8 * codes.shape[1]))  # two rows of float32 per pair
    order = np.argsort(index, kind="stable")
    for start in range(0, len(order), per_batch):
        batch = order[start : start + per_batch]
        a, b = _rows(codes, index[batch]), _rows(others, other[batch])
        similarity[batch] = np.einsum("ij,ij->i", a, b)
    keep = similarity >= threshold  # NaN rows compare False
    return index[keep], other[keep], similarity[keep]


def _rows(codes, rows: np.ndarray) -> np.ndarray:
    """The unit codes of ``rows`` (in that order), read in increasing order."""
    unique, where = np.unique(rows, return_inverse=True)
    if isinstance(codes, np.ndarray):
        read = codes[unique]
    else:  # h5py and others read increasing indices
        read = np.asarray(codes[unique.tolist()] if len(unique) else codes[:0])
    return _unit(read)[where]


def _unit_blocks(codes) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, unit codes)`` of blocks of rows, NaN rows as they are."""
    rows = max(1, BLOCK_BYTES // (4 * codes.shape[1]))
    for start in range(0, len(codes), rows):
        yield start, _unit(np.asarray(codes[start : start + rows]))


def _unit(codes: np.ndarray) -> np.ndarray:
    """Codes scaled to unit length as float32 (NaN rows stay NaN, all-zero rows zero)."""
    codes = np.asarray(codes, dtype=np.float32)
    norms = np.linalg.norm(codes, axis=1, keepdims=True)
    return codes / np.maximum(norms, np.finfo(np.float32).tiny)


def _faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "search='approximate' uses faiss (an approximate nearest-neighbour index): "
            "pip install 'skcnn[scale]' (or faiss-cpu)."
        ) from error
    return faiss
