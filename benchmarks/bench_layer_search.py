"""Layer search: what one pass for many taps saves, and the layer-vs-accuracy curves.

Two parts, each measured side by side in one run:

(a) Cost. The same ``--n`` texture patches (scikit-image's CC0 brick, grass
    and gravel photos) at ``--input-size`` px, no cache:

    1. ``LayerSearchCV`` with the k default candidate layers of the backbone
       (``skcnn.layers.candidate_layers``): its ``extraction_time_``, the
       codes of all k layers from one forward pass per image; against
    2. k separate single-layer extractions (``CNNFeatureTransformer(layer=L)``,
       fit + transform), each stopping after its own layer.

    Rounds are interleaved (the search, the deepest single layer right
    after it, then the other single layers) ``--repeats`` times; the ratio
    search / deepest single layer is taken within each round (both see
    about the same load from other processes) and its median reported,
    with the best and median time of each extraction. Goal: the search
    within 1.3x of ONE single extraction of the deepest layer (the
    penultimate codes). Images entering the network are counted where
    the extraction loop sends each batch into the forward pass.

    Then a ``GridSearchCV`` over ``cnnfeaturetransformer__layer`` (the same k
    candidates, ``--grid-n`` patches, ``--grid-cv`` folds, a ridge
    classifier) three ways, in ``--repeats`` interleaved rounds: no cache;
    a cache; a cache with ``cache_layers=candidates``. Printed: time and
    images run through the network (a pass that stops early counts as one),
    per image of the data set.

(b) Curves. ``LayerSearchCV`` over the default candidates of the pretrained
    backbone on a dataset similar to ImageNet (texture photo patches) and a
    dissimilar one (scikit-learn's 8 x 8 digits, upscaled), ``--n-curve``
    images each, 5-fold cross-validation (``candidate_layers`` leaves out
    ``bn2``, whose average-pooled codes are the penultimate codes). Both curves go on one figure,
    saved as ``benchmarks/layer_curves.png`` (``--figure``).

    The classifier is standardised codes into ``RidgeClassifierCV`` (its
    regularisation tuned by leave-one-out, seconds per layer);
    ``--classifier default`` uses LayerSearchCV's default (logistic
    regression with C tuned by nested cross-validation: several minutes
    per dataset on 2 CPU cores).

About 2-3 minutes on a quiet 2-core CPU VM (several times more while other
processes load it); ``--parts b --classifier default`` about 7 minutes::

    python benchmarks/bench_layer_search.py
    python benchmarks/bench_layer_search.py --parts b --classifier default
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from reporting import load_average, machine_line, table

from skcnn import CNNFeatureTransformer, LayerSearchCV
from skcnn.datasets import load_texture_patches
from skcnn.layers import candidate_layers, probe_backbone
from skcnn.network import backbones

HERE = Path(__file__).resolve().parent


@contextlib.contextmanager
def counted_images(backbone: str, input_size: int):
    """Images the extraction loop sends into the network while the block
    runs (a list of batch sizes), after the network's one-time probe at
    ``input_size``.

    Counted where a batch enters the forward pass
    (``stored_codes_of_batch`` as ``skcnn.codes.extraction`` calls it, whatever
    runtime runs the network), not with a hook on
    ``skcnn.network.backbones.load_backbone(...).network``: on the CPU the batches
    run through a private copy of that network (batch norm folded,
    channels_last), which a hook registered on the original does not see
    (or, registered before the copy is made, keeps seeing after its
    handle is removed).
    """
    from skcnn.codes import extraction

    probe_backbone(backbones.load_backbone(backbone, "DEFAULT", "auto"), (input_size, input_size))
    seen: list[int] = []
    batch_codes = extraction.stored_codes_of_batch

    def counting(backbone, batch, *args, **kwargs):
        seen.append(batch.shape[0])
        return batch_codes(backbone, batch, *args, **kwargs)

    extraction.stored_codes_of_batch = counting
    try:
        yield seen
    finally:
        extraction.stored_codes_of_batch = batch_codes


# -- data ----------------------------------------------------------------------------


def textures(n: int, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    return load_texture_patches("train", n_per_class=n // 3, patch_size=patch_size)


def digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = np.round(data.images * (255 / 16)).astype(np.uint8)  # values 0-16 -> 0-255
    X, _, y, _ = train_test_split(images, data.target, train_size=n, stratify=data.target, random_state=seed)
    return X, y


def ridge():
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=np.logspace(-1, 5, 7)))


# -- part (a): cost ------------------------------------------------------------------


def part_cost(args) -> None:
    from sklearn.dummy import DummyClassifier

    X, y = textures(args.n, args.patch_size)
    candidates = candidate_layers(args.backbone, args.input_size)
    k = len(candidates)
    common = dict(backbone=args.backbone, input_size=args.input_size, batch_size=args.batch_size, progress=False)

    def search_once() -> tuple[float, int]:
        # A classifier that costs nothing: only the extraction is of interest here.
        with counted_images(args.backbone, args.input_size) as seen:
            search = LayerSearchCV(
                CNNFeatureTransformer(**common), layers=candidates, classifier=DummyClassifier(), cv=2, refit=False
            )
            search.fit(X, y)
        return search.extraction_time_, sum(seen)

    def single_once(layer: str) -> tuple[float, int]:
        with counted_images(args.backbone, args.input_size) as seen:
            start = time.perf_counter()
            CNNFeatureTransformer(layer=layer, **common).fit(X).transform(X)
            seconds = time.perf_counter() - start
        return seconds, sum(seen)

    deepest = candidates[-1]
    single_once(deepest)  # warm-up: load the network, first-call costs
    times: dict[str, list[float]] = {"search": []} | {layer: [] for layer in candidates}
    images: dict[str, int] = {}
    for _ in range(args.repeats):
        # The search and the deepest single layer back to back: their ratio in
        # one round sees (nearly) the same load from other processes.
        for name in ["search", deepest, *candidates[:-1]]:
            seconds, images[name] = search_once() if name == "search" else single_once(name)
            times[name].append(seconds)
    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    ratios = [s / d for s, d in zip(times["search"], times[deepest], strict=True)]
    savings = [sum(times[layer][i] for layer in candidates) / times["search"][i] for i in range(args.repeats)]

    print(
        f"\n[a1] {k}-layer search vs {k} single-layer extractions: {len(X)} texture patches, {args.backbone}, "
        f"{args.input_size} px, batch {args.batch_size}, no cache; best and median of {args.repeats} "
        "interleaved rounds (ratio column: of the best single extraction of the deepest layer)"
    )
    rows = [
        [
            f"LayerSearchCV, {k} layers (extraction_time_)",
            f"{best['search']:.2f}",
            f"{median['search']:.2f}",
            f"{best['search'] / best[deepest]:.2f}",
            images["search"],
        ]
    ]
    for layer in candidates:
        rows.append(
            [
                f"single layer {layer}",
                f"{best[layer]:.2f}",
                f"{median[layer]:.2f}",
                f"{best[layer] / best[deepest]:.2f}",
                images[layer],
            ]
        )
    separate = sum(best[layer] for layer in candidates)
    rows.append(
        [
            f"sum of the {k} single extractions",
            f"{separate:.2f}",
            f"{sum(median[layer] for layer in candidates):.2f}",
            f"{separate / best[deepest]:.2f}",
            sum(images[layer] for layer in candidates),
        ]
    )
    table(["extraction", "best s", "median s", f"of single {deepest}", "images into network"], rows)
    ratio = statistics.median(ratios)
    print(
        f"  search / one single extraction of {deepest}, measured back to back in each round: "
        f"{' '.join(f'{r:.2f}' for r in ratios)}; median {ratio:.2f}x "
        f"(goal <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'})"
    )
    print(
        f"  {k} separate extractions / search, per round: {' '.join(f'{r:.2f}' for r in savings)}; "
        f"median {statistics.median(savings):.2f}x"
    )

    X, y = textures(args.grid_n, args.patch_size)
    part_grid(args, X, y, candidates, common)


def part_grid(args, X, y, candidates, common) -> None:
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    k, n = len(candidates), len(X)
    print(
        f"\n[a2] GridSearchCV over cnnfeaturetransformer__layer: {k} candidates x {args.grid_cv} folds "
        f"(+ refit), {n} texture patches, ridge classifier; {args.repeats} interleaved rounds, "
        "each with new cache files"
    )
    variants = ["no cache", "cache", "cache + cache_layers=candidates"]
    times: dict[str, list[float]] = {name: [] for name in variants}
    images, best = {}, {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="skcnn-bench-search-") as folder:
            for name in variants:
                cache = None if name == "no cache" else Path(folder) / f"{len(name)}.h5"
                cache_layers = candidates if "cache_layers" in name else None
                pipe = make_pipeline(CNNFeatureTransformer(cache=cache, cache_layers=cache_layers, **common), ridge())
                grid = GridSearchCV(pipe, {"cnnfeaturetransformer__layer": candidates}, cv=args.grid_cv)
                with counted_images(args.backbone, args.input_size) as seen:
                    start = time.perf_counter()
                    grid.fit(X, y)
                    times[name].append(time.perf_counter() - start)
                images[name] = sum(seen)
                best[name] = f"{grid.best_params_['cnnfeaturetransformer__layer']} ({grid.best_score_:.3f})"
    median = {name: statistics.median(values) for name, values in times.items()}
    table(
        ["GridSearchCV", "best s", "median s", "images into network", "per image", "best layer (score)"],
        [
            [
                name,
                f"{min(times[name]):.1f}",
                f"{median[name]:.1f}",
                images[name],
                f"{images[name] / n:.1f}",
                best[name],
            ]
            for name in variants
        ],
    )
    print(
        f"  median time, no cache / cache + cache_layers: {median[variants[0]] / median[variants[2]]:.1f}x; "
        f"cache alone / cache + cache_layers: {median[variants[1]] / median[variants[2]]:.1f}x"
    )


# -- part (b): curves ----------------------------------------------------------------


def part_curves(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    candidates = candidate_layers(args.backbone, args.input_size)
    layers = candidates  # without EfficientNet's bn2, whose average is the penultimate code
    common = dict(backbone=args.backbone, input_size=args.input_size, batch_size=args.batch_size, progress=False)

    classifier = None if args.classifier == "default" else ridge()
    datasets = {
        f"textures (like ImageNet): brick/grass/gravel, {args.curve_patch_size} px patches": textures(
            args.n_curve, args.curve_patch_size
        ),
        "digits (unlike ImageNet): sklearn 8x8, upscaled": digits(args.n_curve),
    }
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    summaries = []
    for label, (X, y) in datasets.items():
        start = time.perf_counter()
        search = LayerSearchCV(CNNFeatureTransformer(**common), layers=layers, classifier=classifier, cv=5).fit(X, y)
        seconds = time.perf_counter() - start
        penultimate = list(search.cv_results_["layer"]).index("penultimate")
        scores = search.cv_results_["mean_test_score"]
        print(
            f"\n  {label}: {len(X)} images, {len(set(y.tolist()))} classes, {args.input_size} px; "
            f"{seconds:.0f} s (extraction {search.extraction_time_:.1f} s)"
        )
        print(search.summary())
        print(
            f"  best {search.best_layer_} {search.best_score_:.3f}; penultimate {scores[penultimate]:.3f} "
            f"(rank {search.cv_results_['rank_test_score'][penultimate]} of {len(layers)}, "
            f"{search.best_score_ - scores[penultimate]:.3f} below the best)"
        )
        search.plot(ax=ax, label=f"{label} (n={len(X)})")
        summaries.append((label.split(" ")[0], search.best_layer_, search.best_score_ - scores[penultimate]))
    name = "ridge classifier (alpha by leave-one-out)" if classifier is not None else "default classifier"
    ax.set_title(
        f"Pretrained {args.backbone} at {args.input_size} px, frozen: which layer's codes classify best\n"
        f"(5-fold accuracy of a {name} on each layer's codes)",
        fontsize=10,
    )
    ax.set_ylabel("cross-validated accuracy (mean +/- std, 5 folds)")
    ax.legend(loc="best", fontsize=8)
    fig.savefig(args.figure, dpi=120)
    print(f"\n  figure: {args.figure}")
    for dataset, best, gap in summaries:
        print(f"  {dataset}: best layer {best}; penultimate {gap:.3f} below it")


# -- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("--parts", default="ab", help="'a' (cost), 'b' (curves) or 'ab' (default)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--input-size", type=int, default=96, help="network input size, px (default 96)")
    parser.add_argument("--batch-size", type=int, default=8, help="(default 8, as the transformer)")
    parser.add_argument("--n", type=int, default=192, help="part (a1): texture patches (default 192)")
    parser.add_argument("--grid-n", type=int, default=96, help="part (a2): texture patches (default 96)")
    parser.add_argument("--patch-size", type=int, default=64, help="part (a): patch size, px (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="part (a): interleaved rounds (default 5)")
    parser.add_argument("--grid-cv", type=int, default=3, help="part (a): GridSearchCV folds (default 3)")
    parser.add_argument("--n-curve", type=int, default=300, help="part (b): images per dataset (default 300)")
    parser.add_argument(
        "--curve-patch-size",
        type=int,
        default=24,
        help="part (b): texture patch size, px (default 24: at 32 and more every layer scores about 1.0)",
    )
    parser.add_argument("--classifier", choices=["ridge", "default"], default="ridge", help="part (b)'s classifier")
    parser.add_argument("--figure", type=Path, default=HERE / "layer_curves.png")
    args = parser.parse_args()

    started = time.perf_counter()
    import sklearn

    print(machine_line(sklearn))
    if "a" in args.parts:
        part_cost(args)
    if "b" in args.parts:
        part_curves(args)
    print(f"\ntotal {time.perf_counter() - started:.0f} s (load average at the end {load_average()})")


if __name__ == "__main__":
    main()
