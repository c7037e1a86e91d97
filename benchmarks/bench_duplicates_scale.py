"""find_duplicate_codes at a million codes: exact against approximate search, time, memory, recall.

    pip install -e '.[scale]'          # faiss-cpu (usearch and pynndescent for --parts libraries)
    python benchmarks/bench_duplicates_scale.py                      # all parts
    python benchmarks/bench_duplicates_scale.py --parts scale --sizes 10000,100000

- **model**: the default duplicate codes (EfficientNet-Lite0 ``blocks.4``,
  spatial pyramid: 2,352 dims) of crops of scikit-image's photos and three
  near copies of every third (JPEG quality 70, resized 0.8x, cropped by up
  to 10%). Synthetic codes are drawn from a Gaussian with their mean and
  covariance (all principal components of the real codes), clipped at 0
  (non-negative, correlated); a planted copy moves a code along a direction
  drawn from the covariance of the real copies' differences, as far as a
  similarity drawn from the real copies' similarities.
- **libraries**: faiss IVF and HNSW, usearch and pynndescent on the same
  synthetic codes reduced to 128 dims (PCA fit on 20,000), 16 neighbours
  each: time and recall of the planted copies (not the clusters').
- **scale**: synthetic codes at each of ``--sizes`` with 1% planted copies,
  10 clusters of 30 copies of one code and 1% near misses (similarity
  0.85-0.92), written to an HDF5 file and searched from it in a process of
  their own (peak RSS of that process, ``VmHWM``). Recall against the
  exact search where it runs (``--exact-up-to``); above, against the
  planted pairs at or over the threshold and against the exact pairs of a
  subsample of rows (each with all codes). False pairs: reported pairs
  under the threshold, recomputed here.
- **crossover**: exact and approximate search of in-memory synthetic codes
  at growing sizes, side by side: where the index pays.
- **real**: about 10^4 real images (crops of scikit-image photos and
  textures, scikit-learn's digits) and three copies of every fourth, their
  duplicate codes, exact against approximate search.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from reporting import load_average, machine_line, table
from sklearn.decomposition import PCA

from skcnn.inspection import code_search, find_duplicate_codes
from skcnn.inspection.duplicates import DUPLICATE_SIMILARITY, duplicate_codes

PHOTOS = (
    "astronaut",
    "coffee",
    "rocket",
    "camera",
    "coins",
    "chelsea",
    "page",
    "immunohistochemistry",
    "retina",
    "hubble_deep_field",
    "moon",
    "text",
    "grass",
    "gravel",
    "brick",
    "colorwheel",
)


# -- real images and their codes --------------------------------------------------


def near_copies(image: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Re-encoded at JPEG quality 70, resized 0.8x, cropped by up to 10% of each side."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=70)
    h, w = image.shape[:2]
    resized = Image.fromarray(image).resize((max(1, int(w * 0.8)), max(1, int(h * 0.8))), Image.BICUBIC)
    ch, cw = h - int(rng.integers(0, h // 10 + 1)), w - int(rng.integers(0, w // 10 + 1))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return [np.asarray(Image.open(buffer).convert("RGB")), np.asarray(resized), image[top : top + ch, left : left + cw]]


def photo_crops(sides_offsets) -> list[np.ndarray]:
    """Square crops of scikit-image's photos, flat ones (pixel std under 8) left out."""
    from skimage import data

    crops = []
    for name in PHOTOS:
        image = getattr(data, name)()
        image = np.stack([image] * 3, axis=2) if image.ndim == 2 else image[..., :3]
        for side, offset in sides_offsets:
            for top in range(offset, image.shape[0] - side + 1, side):
                for left in range(offset, image.shape[1] - side + 1, side):
                    crop = np.ascontiguousarray(image[top : top + side, left : left + side])
                    if crop.std() >= 8:
                        crops.append(crop)
    return crops


def digits() -> list[np.ndarray]:
    from sklearn.datasets import load_digits

    images = np.round(load_digits().images * (255 / 16)).astype(np.uint8)
    return [np.stack([np.kron(image, np.ones((4, 4), np.uint8))] * 3, axis=2) for image in images]


def real_codes(images: list[np.ndarray], copied_every: int, seed: int) -> tuple[np.ndarray, list]:
    """Codes of the images followed by three copies of every ``copied_every``-th; the planted pairs."""
    rng = np.random.default_rng(seed)
    copies, planted = [], []
    for i in range(0, len(images), copied_every):
        for copy in near_copies(images[i], rng):
            planted.append((i, len(images) + len(copies)))
            copies.append(copy)
    codes = duplicate_codes().set_params(progress=False).fit_transform(images + copies)
    return codes, planted


class CodeModel:
    """Synthetic duplicate codes: a clipped Gaussian fit to real ones, copies moved as real copies move."""

    def __init__(self, codes: np.ndarray, n_originals: int, planted: list):
        originals = codes[:n_originals].astype(np.float64)
        pca = PCA().fit(originals)
        self.mean, self.components, self.scale = pca.mean_, pca.components_, np.sqrt(pca.explained_variance_)
        i, j = np.asarray(planted).T
        unit = _unit(codes.astype(np.float64))
        moves = PCA().fit(unit[j] - unit[i])
        self.moves, self.move_scale = moves.components_, np.sqrt(moves.explained_variance_)
        self.copy_similarity = np.einsum("ij,ij->i", unit[i], unit[j])

    def codes(self, n: int, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal((n, len(self.scale))) * self.scale
        return np.maximum(self.mean + z @ self.components, 0).astype(np.float32)

    def copies(self, codes: np.ndarray, similarity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        move = (rng.standard_normal((len(codes), len(self.move_scale))) * self.move_scale) @ self.moves
        move /= np.linalg.norm(move, axis=1, keepdims=True)
        step = np.sqrt(1 / np.asarray(similarity, np.float64) ** 2 - 1)[:, None]
        norms = np.linalg.norm(codes, axis=1, keepdims=True)
        return (np.maximum(_unit(codes.astype(np.float64)) + step * move, 0) * norms).astype(np.float32)


def _unit(codes):
    return codes / np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-30)


def the_model(seed: int = 0) -> CodeModel:
    crops = photo_crops([(128, 0), (96, 20), (160, 40)])
    start = time.perf_counter()
    codes, planted = real_codes(crops, 3, seed)
    unit = _unit(codes[: len(crops)].astype(np.float64))
    similarity = unit @ unit.T
    others = similarity[np.triu_indices(len(crops), 1)]
    model = CodeModel(codes, len(crops), planted)
    print(
        f"model: {len(crops)} photo crops and {len(planted)} copies -> codes of {codes.shape[1]} dims "
        f"({time.perf_counter() - start:.1f} s); {np.mean(codes == 0):.1%} zeros; cosine similarity of "
        f"different crops: median {np.median(others):.3f}, 99.9% {np.quantile(others, 0.999):.3f}; of copies: "
        f"5% {np.quantile(model.copy_similarity, 0.05):.3f}, median {np.median(model.copy_similarity):.3f}"
    )
    return model


# -- synthetic sets -------------------------------------------------------------------


def synthetic(model: CodeModel, n: int, out, seed: int = 0) -> dict:
    """``n`` codes written into ``out`` (an array or HDF5 dataset) in blocks: originals, then 1% copies
    of them, 10 clusters of 30 copies and 1% near misses. Returns the planted pairs (rows)."""
    rng = np.random.default_rng(seed)
    n_copies, n_misses, clusters = n // 100, n // 100, 10 if n >= 10_000 else 0
    n_originals = n - n_copies - n_misses - 30 * clusters
    sources = np.sort(rng.choice(n_originals, n_copies + n_misses + clusters, replace=False))
    kept = np.zeros((len(sources), out.shape[1]), np.float32)
    block = 50_000
    for start in range(0, n_originals, block):
        codes = model.codes(min(block, n_originals - start), rng)
        out[start : start + len(codes)] = codes
        inside = (sources >= start) & (sources < start + len(codes))
        kept[inside] = codes[sources[inside] - start]
    order = rng.permutation(len(sources))
    copied, missed, clustered = np.split(order, [n_copies, n_copies + n_misses])
    rows = n_originals
    similarity = rng.choice(model.copy_similarity, n_copies)
    out[rows : rows + n_copies] = model.copies(kept[copied], similarity, rng)
    pairs = list(zip(sources[copied], range(rows, rows + n_copies), strict=True))
    rows += n_copies
    out[rows : rows + n_misses] = model.copies(kept[missed], rng.uniform(0.85, 0.92, n_misses), rng)
    rows += n_misses
    for source in clustered:
        members = model.copies(np.repeat(kept[[source]], 30, axis=0), rng.uniform(0.98, 0.995, 30), rng)
        out[rows : rows + 30] = members
        everyone = [source, *range(rows, rows + 30)]
        pairs += [(a, b) for k, a in enumerate(everyone) for b in everyone[k + 1 :]]
        rows += 30
    return {"pairs": np.asarray(pairs, np.int64).reshape(-1, 2), "copies": n_copies}


def cosine_of(codes, pairs: np.ndarray) -> np.ndarray:
    if not len(pairs):
        return np.zeros(0)
    out = np.zeros(len(pairs))
    for start in range(0, len(pairs), 20_000):
        batch = pairs[start : start + 20_000]
        a, b = code_search._rows(codes, batch[:, 0]), code_search._rows(codes, batch[:, 1])
        out[start : start + len(batch)] = np.einsum("ij,ij->i", a, b)
    return out


# -- parts ---------------------------------------------------------------------------------


def part_libraries(args, model: CodeModel) -> None:
    import faiss

    n = args.library_size
    data = np.zeros((n, len(model.mean)), np.float32)
    made = synthetic(model, n, data)
    planted = made["pairs"][: made["copies"]]  # not the clusters: 16 neighbours cannot hold 30 copies
    planted = planted[cosine_of(data, planted) >= DUPLICATE_SIMILARITY]
    reduced = code_search._reduced(data, code_search._fit_projection(data, data)).head
    del data
    print(f"\nlibraries: {n} synthetic codes reduced to 128 dims, 16 neighbours each, {len(planted)} planted pairs")
    rows = []

    def found(neighbours: np.ndarray) -> float:
        hits = [b in neighbours[a] or a in neighbours[b] for a, b in planted]
        return float(np.mean(hits))

    def timed(name, search):
        start = time.perf_counter()
        neighbours = search()
        rows.append([name, f"{time.perf_counter() - start:.1f} s", f"{found(neighbours):.4f}"])
        print("  " + "  ".join(rows[-1]), flush=True)

    def ivf():
        index = code_search._index(faiss, reduced)
        return index.search(reduced, 16)[1]

    def hnsw():
        index = faiss.IndexHNSWFlat(128, 32)
        index.add(reduced)
        index.hnsw.efSearch = 64
        return index.search(reduced, 16)[1]

    timed(f"faiss {faiss.__version__} IVF (4 sqrt(n) lists, {code_search.PROBES} probed)", ivf)
    timed(f"faiss {faiss.__version__} HNSW (M=32, efSearch=64)", hnsw)
    try:
        import usearch
        from usearch.index import Index

        def usearch_hnsw():
            index = Index(ndim=128, metric="l2sq", dtype="f16", connectivity=16)
            index.add(np.arange(n), reduced, threads=os.cpu_count())
            return index.search(reduced, 16, threads=os.cpu_count()).keys.astype(np.int64)

        timed(f"usearch {usearch.__version__} HNSW (f16, connectivity 16)", usearch_hnsw)
    except ImportError:
        print("  usearch not installed")
    try:
        import pynndescent

        def nndescent():
            graph = pynndescent.NNDescent(reduced, n_neighbors=16, metric="sqeuclidean", n_jobs=-1, random_state=0)
            return graph.neighbor_graph[0]

        timed(f"pynndescent {pynndescent.__version__} (16 neighbours)", nndescent)
    except ImportError:
        print("  pynndescent not installed")
    table(["library", "build + search", "recall of planted pairs"], rows)


def search_file(path: str, search: str, reduce: bool) -> dict:
    """Run in a process of its own: the search of the HDF5 file's codes, time and peak RSS."""
    import h5py

    if not reduce:
        code_search.REDUCED_DIMENSIONS = 10**9
    with h5py.File(path, "r") as f:
        codes = f["codes"]
        baseline = _rss_gb()
        start = time.perf_counter()
        pairs = find_duplicate_codes(codes, search=search)
        seconds = time.perf_counter() - start
        peak = _rss_gb("VmHWM")  # before the check below; not ru_maxrss, which keeps the parent's at exec
        found = pairs[["index", "other_index"]].to_numpy()
        similarity = cosine_of(codes, found)
    return {
        "seconds": seconds,
        "rss_gb": peak,
        "baseline_gb": baseline,
        "pairs": found.tolist(),
        "false_pairs": int((similarity < DUPLICATE_SIMILARITY - 1e-6).sum()),
    }


def _rss_gb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 2**20


def in_a_process(path: str, search: str, reduce: bool = True) -> dict:
    command = [sys.executable, __file__, "--search-file", path, "--search", search] + ([] if reduce else ["--full"])
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def part_scale(args, model: CodeModel) -> None:
    import h5py

    print(
        f"\nscale: synthetic codes in an HDF5 file, each search in a process of its own "
        f"(threshold {DUPLICATE_SIMILARITY})"
    )
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        for n in args.sizes:
            path = str(Path(folder) / f"codes_{n}.h5")
            with h5py.File(path, "w") as f:
                # Contiguous: a row read alone costs one row (the checks read rows at random).
                codes = f.create_dataset("codes", (n, len(model.mean)), np.float32)
                planted = synthetic(model, n, codes)["pairs"]
                planted = planted[cosine_of(codes, planted) >= DUPLICATE_SIMILARITY]
            approximate = in_a_process(path, "approximate")
            found = {tuple(pair) for pair in approximate["pairs"]}
            rss = f"{approximate['rss_gb']:.2f} GB ({approximate['baseline_gb']:.2f} before)"
            row = [f"{n:,}", f"{approximate['seconds']:.1f} s", rss]
            row.append(f"{np.mean([tuple(p) in found for p in planted]):.4f} of {len(planted)}")
            if n <= args.exact_up_to:
                exact = in_a_process(path, "exact")
                truth = {tuple(pair) for pair in exact["pairs"]}
                row += [f"{len(found & truth) / max(len(truth), 1):.4f} of {len(truth)}", f"{exact['seconds']:.1f} s"]
                row.append(f"{exact['rss_gb']:.2f} GB ({exact['baseline_gb']:.2f} before)")
                if n <= args.full_up_to:
                    full = in_a_process(path, "approximate", reduce=False)
                    unreduced = {tuple(pair) for pair in full["pairs"]}
                    row.append(f"{len(unreduced & truth) / max(len(truth), 1):.4f} in {full['seconds']:.1f} s")
                else:
                    row.append("-")
            else:
                with h5py.File(path, "r") as f:
                    recall, n_truth, seconds = subsample_recall(f["codes"], found, args.subsample)
                row += [
                    f"{recall:.4f} of {n_truth} (subsample of {args.subsample})",
                    f"{seconds:.1f} s (subsample)",
                    "-",
                    "-",
                ]
            row.append(str(approximate["false_pairs"]))
            rows.append(row)
            print("  " + "  ".join(row), flush=True)
    table(
        [
            "codes",
            "approximate",
            "peak RSS",
            "recall: planted",
            "recall: exact",
            "exact",
            "exact RSS",
            "recall unreduced",
            "false pairs",
        ],
        rows,
    )


def subsample_recall(codes, found: set, n_rows: int) -> tuple[float, int, float]:
    """Recall over the exact pairs of ``n_rows`` random rows (each against all codes)."""
    rows = np.sort(np.random.default_rng(1).choice(len(codes), n_rows, replace=False))
    start = time.perf_counter()
    pairs = find_duplicate_codes(codes, np.asarray(codes[rows.tolist()]), search="exact")
    seconds = time.perf_counter() - start
    pairs = pairs[["index", "other_index"]].to_numpy()
    truth = {(min(i, int(rows[j])), max(i, int(rows[j]))) for i, j in pairs}
    truth = {pair for pair in truth if pair[0] != pair[1]}
    return len(found & truth) / max(len(truth), 1), len(truth), seconds


def part_crossover(args, model: CodeModel) -> None:
    print("\ncrossover: in-memory synthetic codes, exact and approximate side by side (best of 2)")
    rows = []
    for n in args.crossover_sizes:
        data = np.zeros((n, len(model.mean)), np.float32)
        synthetic(model, n, data)
        times = {}
        for search in ("exact", "approximate"):
            best = np.inf
            for _ in range(2):
                start = time.perf_counter()
                find_duplicate_codes(data, search=search)
                best = min(best, time.perf_counter() - start)
            times[search] = best
        rows.append(
            [
                f"{n:,}",
                f"{times['exact']:.2f} s",
                f"{times['approximate']:.2f} s",
                f"{times['exact'] / times['approximate']:.2f}",
            ]
        )
        print("  " + "  ".join(rows[-1]), flush=True)
    table(["codes", "exact", "approximate", "exact / approximate"], rows)


def part_real(args) -> None:
    from skimage import data

    images = photo_crops([(64, 0), (64, 32), (96, 10), (128, 50), (80, 5)])
    for name in ("brick", "grass", "gravel"):
        texture = np.stack([getattr(data, name)()] * 3, axis=2)
        images += [
            np.ascontiguousarray(texture[t : t + 48, s : s + 48]) for t in range(0, 480, 60) for s in range(0, 480, 60)
        ]
    images += digits()
    start = time.perf_counter()
    codes, planted = real_codes(images, 4, seed=2)
    print(f"\nreal: {len(images)} images and {len(planted)} copies -> codes in {time.perf_counter() - start:.0f} s")
    rows, results = [], {}
    for search in ("exact", "approximate"):
        start = time.perf_counter()
        pairs = find_duplicate_codes(codes, search=search)
        seconds = time.perf_counter() - start
        results[search] = {tuple(p) for p in pairs[["index", "other_index"]].to_numpy()}
        similarity = cosine_of(codes, pairs[["index", "other_index"]].to_numpy())
        planted_found = np.mean([tuple(p) in results[search] for p in planted])
        rows.append(
            [
                search,
                f"{seconds:.2f} s",
                str(len(pairs)),
                f"{planted_found:.4f}",
                str(int((similarity < DUPLICATE_SIMILARITY - 1e-6).sum())),
            ]
        )
    exact, approximate = results["exact"], results["approximate"]
    rows[1].append(f"{len(exact & approximate) / max(len(exact), 1):.4f}")
    rows[0].append("1")
    table(["search", "time", "pairs", "planted copies found", "false pairs", "recall of the exact search"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="libraries,crossover,real,scale")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--crossover-sizes", default="5000,10000,20000,40000,80000")
    parser.add_argument("--library-size", type=int, default=100_000)
    parser.add_argument("--exact-up-to", type=int, default=100_000)
    parser.add_argument("--full-up-to", type=int, default=100_000)
    parser.add_argument("--subsample", type=int, default=1000)
    parser.add_argument("--tmp", default=None, help="where the HDF5 files go (9.4 GB at 10^6)")
    parser.add_argument("--search-file", help=argparse.SUPPRESS)
    parser.add_argument("--search", help=argparse.SUPPRESS)
    parser.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.search_file:
        print(json.dumps(search_file(args.search_file, args.search, reduce=not args.full)))
        return
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.crossover_sizes = [int(s) for s in args.crossover_sizes.split(",")]
    import faiss

    print(machine_line(faiss))
    parts = args.parts.split(",")
    model = the_model() if {"libraries", "scale", "crossover"} & set(parts) else None
    for part in parts:
        {"libraries": part_libraries, "scale": part_scale, "crossover": part_crossover}.get(
            part, lambda a, m: part_real(a)
        )(args, model)
        print(f"  (load average {load_average()})")


if __name__ == "__main__":
    main()
