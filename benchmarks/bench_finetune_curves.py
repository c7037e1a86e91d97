"""Learning curves: the best frozen layer against ``CNNClassifier``.

    pip install --no-deps animal-mnist
    python benchmarks/bench_finetune_curves.py             # runs what is missing, then plots
    python benchmarks/bench_finetune_curves.py --plot-only
    python benchmarks/bench_finetune_curves.py --datasets digits --sizes 25 100 1000 \
        --out benchmarks/finetune_curves_digits.jsonl      # one set; the figure is named after --out

Three data sets, all 64 px into packaged EfficientNet-Lite0:

- **unlike ImageNet**: animal-mnist silhouettes (10 classes of 1,000; 100
  per class held out to test, so the largest size is 900 per class);
- **natural photos**: 32 px patches of five of scikit-image's colour photos
  (astronaut, cat, coffee, rocket, motorcycle), labelled by photo. Each photo
  is cut into vertical strips 64 px wide; training patches come from the
  even strips, test patches (100 per class) from the odd ones, so train and
  test never share a pixel;
- **scans unlike ImageNet**: scikit-learn's 8 x 8 handwritten digits
  (``skcnn.datasets.load_digit_images``; 50 per class held out, so at most
  120 per class to train on).

At each size (images per class) and seed (which images, and the models'
``random_state``), three models are fit on the same images and scored on
the same held-out ones:

- ``frozen``: ``LayerSearchCV`` (3-fold) over the default candidate layers,
  standardised codes into a logistic regression with ``C`` by inner CV, refit
  on the best layer: the best that frozen codes and a linear classifier give;
- ``auto``: ``CNNClassifier()`` with its defaults, ``max_epochs=6``:
  below ``advise_layer``'s "fine-tuning pays from" size, the linear probe
  on the layer a 3-fold layer search finds best; from it, as ``all``;
- ``all``: ``CNNClassifier(unfreeze="all")``, the whole network fine-tuned
  with a head on the penultimate codes, ``max_epochs=6``.

Each result is one JSON line in ``--out``; points already there are not run
again, so an interrupted run goes on where it stopped.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_finetune import animal_mnist
from reporting import cpu_name

from skcnn import CNNClassifier, CNNFeatureTransformer, LayerSearchCV
from skcnn.datasets import load_digit_images
from skcnn.frozen.advice import FINE_TUNING_PAYS_FROM

HERE = Path(__file__).parent
TEST_PER_CLASS = 100
STRIP = 64  # px: photos are cut into strips this wide, alternately train and test
PATCH = 32
INPUT_SIZE = 64


def _photos() -> dict:
    from skimage import data

    return {
        "astronaut": data.astronaut(),
        "cat": data.chelsea(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "motorcycle": data.stereo_motorcycle()[0],
    }


def _strip_patches(photo: np.ndarray, parity: int, n: int, rng) -> list[np.ndarray]:
    strips = np.arange(parity, photo.shape[1] // STRIP, 2)
    out = []
    for _ in range(n):
        top = rng.integers(0, photo.shape[0] - PATCH + 1)
        left = rng.choice(strips) * STRIP + rng.integers(0, STRIP - PATCH + 1)
        out.append(photo[top : top + PATCH, left : left + PATCH])
    return out


def photo_patches(per_class: int, seed: int = 0):
    """Training patches from the even strips, test patches from the odd ones."""
    rng = np.random.default_rng(seed)
    splits = {0: ([], []), 1: ([], [])}
    for name, photo in _photos().items():
        for parity, n in ((0, per_class), (1, TEST_PER_CLASS)):
            patches = _strip_patches(photo, parity, n, rng)
            splits[parity][0].extend(patches)
            splits[parity][1].extend([name] * n)
    (X, y), (X_test, y_test) = [(np.stack(images), np.asarray(labels)) for images, labels in splits.values()]
    order = rng.permutation(len(y))
    return X[order], y[order], X_test, y_test


DIGITS_TEST_PER_CLASS = 50
DIGITS_MAX_PER_CLASS = 120  # the rarest digit has 174 scans, 50 of them held out


def digits(per_class: int, seed: int = 0):
    """Digits drawn with ``seed``; the test scans are others of the same draw."""
    n = min(per_class, DIGITS_MAX_PER_CLASS)
    X, y = load_digit_images(n_per_class=n, random_state=seed)
    X_test, y_test = load_digit_images("test", n_per_class=n, test_per_class=DIGITS_TEST_PER_CLASS, random_state=seed)
    return X, y, X_test, y_test


DATASETS = {
    "animal-mnist silhouettes (unlike ImageNet)": lambda per_class, seed: animal_mnist(
        min(per_class, 1000 - TEST_PER_CLASS), TEST_PER_CLASS, seed
    ),
    "photo patches (natural photos, 32 px crops)": photo_patches,
    "digits (8 x 8 scans, unlike ImageNet)": digits,
}


def _frozen(X, y, X_test, y_test, seed: int, cache: str) -> dict:
    # The logistic regression on one view, as recorded in RESULTS.md (the search's defaults before 0.13).
    codes = CNNFeatureTransformer(input_size=INPUT_SIZE, progress=False, cache=cache)
    search = LayerSearchCV(codes, classifier="logistic", ttas=None, cv=3)
    start = time.perf_counter()
    search.fit(X, y)
    return {
        "seconds": time.perf_counter() - start,
        "accuracy": search.score(X_test, y_test),
        "layer": search.best_layer_,
        "cv": dict(zip(search.cv_results_["layer"], map(float, search.cv_results_["mean_test_score"]), strict=True)),
    }


def _finetuned(X, y, X_test, y_test, seed: int, cache: str, unfreeze: str) -> dict:
    model = CNNClassifier(
        input_size=INPUT_SIZE, max_epochs=6, unfreeze=unfreeze, random_state=seed, progress=False, cache=cache
    )
    start = time.perf_counter()
    model.fit(X, y)
    return {
        "seconds": time.perf_counter() - start,
        "accuracy": model.score(X_test, y_test),
        "layer": model.strategy_["layer"],
        "unfreeze": model.strategy_["unfreeze"],
        "probe_score": model.probe_score_,
        "epochs": model.n_epochs_,
        "best_epoch": model.best_epoch_,
    }


MODELS = ("frozen", "auto", "all")


def _fit(model: str, data: tuple, seed: int, cache: str) -> dict:
    if model == "frozen":
        return _frozen(*data, seed, cache)
    return _finetuned(*data, seed, cache, model)


def run(sizes, seeds_small: int, models, datasets, out: Path, cache_dir: str) -> None:
    done = {(r["dataset"], r["per_class"], r["seed"], r["model"]) for r in read(out)}
    for dataset in datasets:
        load = DATASETS[dataset]
        cache = os.path.join(cache_dir, f"{dataset.split()[0]}.h5")
        for per_class in sizes:
            for seed in range(seeds_small if per_class <= 100 else 1):
                data = load(per_class, seed)
                n_per_class = len(data[1]) // len(np.unique(data[1]))
                for model in models:
                    if (dataset, n_per_class, seed, model) in done:
                        continue
                    result = {"dataset": dataset, "per_class": n_per_class, "seed": seed, "model": model}
                    result.update(_fit(model, data, seed, cache))
                    print(json.dumps(result), flush=True)
                    done.add((dataset, n_per_class, seed, model))  # digits cap the size: 400 and 1000 are one
                    with open(out, "a") as f:
                        f.write(json.dumps(result) + "\n")


def read(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


LABELS = {
    "frozen": "frozen codes, best layer (LayerSearchCV)",
    "auto": "CNNClassifier() (defaults; from 200 per class the same fit as 'all')",
    "all": "CNNClassifier(unfreeze='all')",
}


def summary(results: list[dict]) -> dict:
    """``{dataset: {model: {per_class: (mean, std, n)}}}``."""
    table: dict = {}
    for r in results:
        points = table.setdefault(r["dataset"], {}).setdefault(LABELS[r["model"]], {})
        points.setdefault(r["per_class"], []).append(r["accuracy"])
    return {
        dataset: {
            model: {n: (float(np.mean(a)), float(np.std(a)), len(a)) for n, a in sorted(points.items())}
            for model, points in models.items()
        }
        for dataset, models in table.items()
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summary(results)
    fig, axes = plt.subplots(1, len(table), figsize=(5.5 * len(table), 4.2), squeeze=False)
    for ax, (dataset, models) in zip(axes[0], table.items(), strict=True):
        for model, points in models.items():
            sizes = list(points)
            mean = np.array([points[n][0] for n in sizes])
            std = np.array([points[n][1] for n in sizes])
            ax.errorbar(sizes, mean, yerr=std, marker="o", capsize=3, label=model)
        ax.axvline(FINE_TUNING_PAYS_FROM, color="gray", linestyle=":", label="unfreeze='auto': 'all' from here")
        ax.set_xscale("log")
        ax.set_xlabel("training images per class")
        ax.set_ylabel("held-out accuracy")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"EfficientNet-Lite0 at {INPUT_SIZE} px: frozen codes against fine-tuning")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_table(results: list[dict]) -> None:
    """One Markdown table per data set: images per class x model, mean +/- std (draws)."""
    for dataset, models in summary(results).items():
        sizes = sorted({n for points in models.values() for n in points})
        print(f"\n{dataset}\n\n| images per class | " + " | ".join(models) + " |")
        print("| ---: |" + " ---: |" * len(models))
        for n in sizes:
            cells = [_cell(points.get(n)) for points in models.values()]
            print(f"| {n} | " + " | ".join(cells) + " |")


def _cell(point) -> str:
    if point is None:
        return ""
    mean, std, draws = point
    return f"{mean:.3f} +/- {std:.3f} ({draws})" if draws > 1 else f"{mean:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 100, 400, 1000])
    parser.add_argument("--seeds", type=int, default=3, help="seeds at sizes of 100 per class or fewer (1 above)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    short = {name.split()[0]: name for name in DATASETS}  # "animal-mnist", "photo", "digits"
    parser.add_argument("--datasets", nargs="+", choices=list(short), default=list(short))
    parser.add_argument("--out", type=Path, default=HERE / "finetune_curves.jsonl")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    print(f"machine: {cpu_name()}\ndate: {datetime.date.today()}")
    if not args.plot_only:
        with tempfile.TemporaryDirectory() as cache_dir:
            run(args.sizes, args.seeds, args.models, [short[d] for d in args.datasets], args.out, cache_dir)
    results = read(args.out)
    print_table(results)
    plot(results, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
