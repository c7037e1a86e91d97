"""skcnn.inspection.find_duplicate_codes: exact and approximate search of near copies among many codes."""

import numpy as np
import pytest

from skcnn.inspection import code_search, find_duplicate_codes, find_duplicates
from skcnn.inspection.duplicates import duplicate_pairs

THRESHOLD = 0.93


def synthetic_codes(n=3000, dimensions=256, seed=0):
    """Non-negative codes correlated as CNN codes are (cosine similarity 0.58 in the median, up to
    0.87), 150 near copies of other rows, a cluster of 40 copies of one row (more than the index's
    first neighbours) and 100 near misses."""
    rng = np.random.default_rng(seed)
    low_rank = rng.normal(size=(n, 32)) @ rng.normal(0, 0.2, (32, dimensions))
    codes = np.maximum(1 + low_rank + rng.normal(0, 0.3, (n, dimensions)), 0)
    copies = rng.choice(np.arange(200, n), 290, replace=False)
    for copy, source, scale in zip(copies[:150], range(150), np.linspace(0.05, 0.3, 150), strict=True):
        codes[copy] = _moved(codes[source], scale, rng)
    for copy in copies[150:190]:
        codes[copy] = _moved(codes[150], 0.05, rng)
    for copy, source in zip(copies[190:], range(160, 260), strict=True):
        codes[copy] = _moved(codes[source], 0.6, rng)  # under the threshold
    return codes.astype(np.float32), copies[150:190]


def _moved(code, scale, rng):
    return np.maximum(code + scale * np.linalg.norm(code) * rng.normal(size=code.shape) / np.sqrt(len(code)), 0)


def pair_set(pairs):
    return set(zip(pairs["index"], pairs["other_index"], strict=True))


def cosine(a, b):
    return np.einsum("ij,ij->i", a, b) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def codes():
    return synthetic_codes()


def test_approximate_finds_the_pairs_of_the_exact_search_and_whole_clusters(codes):
    pytest.importorskip("faiss")
    X, cluster = codes
    exact = pair_set(find_duplicate_codes(X, search="exact"))
    approximate = find_duplicate_codes(X, search="approximate")
    found = pair_set(approximate)
    assert len(exact) >= 150 + 40 * 39 // 2
    assert len(found & exact) / len(exact) >= 0.95
    assert found <= exact
    members = np.sort(np.append(cluster, 150))
    within = {(a, b) for a in members for b in members if a < b}
    assert within <= found  # 41 copies of one image, a pair between each: beyond the first 16 neighbours


@pytest.mark.parametrize("search", ["exact", "approximate"])
def test_no_pair_under_the_threshold_and_the_table(codes, search):
    if search == "approximate":
        pytest.importorskip("faiss")
    X, _ = codes
    pairs = find_duplicate_codes(X, threshold=THRESHOLD, search=search)
    assert list(pairs.columns) == ["index", "other_index", "similarity", "exact"]
    similarity = cosine(X[pairs["index"]], X[pairs["other_index"]])
    assert (similarity >= THRESHOLD - 1e-6).all()
    np.testing.assert_allclose(pairs["similarity"], similarity, atol=1e-5)
    assert (pairs["index"] < pairs["other_index"]).all() and not pairs["exact"].any()
    assert pairs["similarity"].is_monotonic_decreasing


@pytest.mark.parametrize("search", ["exact", "approximate"])
def test_other_codes_pair_each_test_code_with_its_copies_in_training(codes, search):
    if search == "approximate":
        pytest.importorskip("faiss")
    X, _ = codes
    train, test = X[:2000], X[2000:]
    within = find_duplicate_codes(X, search="exact")
    across = within[(within["index"] < 2000) & (within["other_index"] >= 2000)]
    expected = {(i, j - 2000) for i, j in zip(across["index"], across["other_index"], strict=True)}
    found = pair_set(find_duplicate_codes(train, test, search=search))
    assert found <= expected and len(found) / len(expected) >= 0.95
    assert len(expected) > 50


@pytest.mark.parametrize("search", ["exact", "approximate"])
def test_nan_rows_are_in_no_pair(codes, search):
    if search == "approximate":
        pytest.importorskip("faiss")
    X, cluster = codes
    X = X.copy()
    failed = [0, 1, int(cluster[0])]  # two images with a copy, one in the cluster
    X[failed] = np.nan
    pairs = find_duplicate_codes(X, search=search)
    assert not set(failed) & (set(pairs["index"]) | set(pairs["other_index"]))
    assert len(pairs) > 100


def test_codes_are_read_in_blocks_from_hdf5(codes, tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("faiss")
    X, _ = codes
    with h5py.File(tmp_path / "codes.h5", "w") as f:
        f["codes"] = X
    monkeypatch.setattr(code_search, "BLOCK_BYTES", 256 * 4 * 500)  # 500 rows a block
    with h5py.File(tmp_path / "codes.h5", "r") as f:
        for search in ("exact", "approximate"):
            streamed = find_duplicate_codes(f["codes"], search=search)
            assert pair_set(streamed) == pair_set(find_duplicate_codes(X, search=search))


def test_search_is_checked_by_name():
    message = "search must be one of 'auto', 'exact', 'approximate'; got 'fast'"
    with pytest.raises(ValueError, match=message):
        find_duplicate_codes(np.ones((3, 4)), search="fast")
    with pytest.raises(ValueError, match=message):
        find_duplicates([np.zeros((8, 8, 3), np.uint8)], search="fast")  # before any image is read


def test_auto_is_exact_on_few_codes_and_warns_without_faiss_on_many(codes, monkeypatch):
    X, _ = codes

    def no_index(*args):
        raise AssertionError("the approximate search ran")

    monkeypatch.setattr(code_search, "_approximate_pairs", no_index)
    assert len(X) < code_search.APPROXIMATE_FROM
    expected = pair_set(find_duplicate_codes(X, search="exact"))
    assert pair_set(find_duplicate_codes(X)) == expected
    monkeypatch.setattr(code_search, "APPROXIMATE_FROM", 1000)
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)
    with pytest.warns(UserWarning, match=r"pip install 'skcnn\[scale\]'"):
        assert pair_set(find_duplicate_codes(X)) == expected
    with pytest.raises(ImportError, match=r"skcnn\[scale\]"):
        find_duplicate_codes(X, search="approximate")


def test_duplicate_pairs_passes_search_on(codes):
    pytest.importorskip("faiss")
    X, _ = codes
    images = [np.full((4, 4, 3), i % 251, np.uint8) for i in range(300)]  # rows 251.. repeat rows 0..
    pairs = duplicate_pairs(images, X[:300], search="approximate")
    assert pair_set(pairs[pairs["exact"]]) == {(i, i + 251) for i in range(49)}
    near = pair_set(pairs[~pairs["exact"]])
    assert near and near <= pair_set(find_duplicate_codes(X[:300], search="exact"))
