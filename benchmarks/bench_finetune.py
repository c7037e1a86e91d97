"""Fine-tuning against frozen codes on data unlike ImageNet (animal-mnist silhouettes).

    pip install --no-deps animal-mnist        # 10,000 28 x 28 silhouettes, 10 classes, in gzip pickles
    python benchmarks/bench_finetune.py --per-class 200 --unfreeze auto all

Trains on ``--per-class`` images of each class (seeded shuffle) and scores
on 100 other images per class: a linear probe (standardised penultimate
codes of the same network into a logistic regression with ``C`` tuned by
cross-validation, skcnn's default search classifier) against
``CNNClassifier`` at 64 px for ``--max-epochs`` epochs, for each
``--unfreeze``. Prints accuracy, seconds and training images per second.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import os
import pickle
import time

import numpy as np
from reporting import cpu_name
from sklearn.pipeline import make_pipeline

from skcnn import CNNClassifier, CNNFeatureTransformer
from skcnn.frozen.search import default_classifier


def animal_mnist(per_class: int, test_per_class: int = 100, seed: int = 0):
    import animal_mnist as package

    folder = os.path.join(os.path.dirname(package.__file__), "data", "Animal_MNIST")
    with gzip.open(os.path.join(folder, "animal_data_version_3.gz")) as f:
        X = np.asarray(pickle.load(f))
    with gzip.open(os.path.join(folder, "animal_label_version_3.gz")) as f:
        y = np.asarray(pickle.load(f))
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        train += rows[:per_class].tolist()
        test += rows[per_class : per_class + test_per_class].tolist()
    train, test = rng.permutation(train), rng.permutation(test)
    return X[train], y[train], X[test], y[test]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, nargs="+", default=[200])
    parser.add_argument("--unfreeze", nargs="+", default=["auto", "all"])
    parser.add_argument("--max-epochs", type=int, default=6)
    parser.add_argument("--input-size", type=int, default=64)
    args = parser.parse_args()
    print(f"machine: {cpu_name()}\ndate: {datetime.date.today()}")
    print("per class  model                                   accuracy  seconds  train img/s")
    for per_class in args.per_class:
        X, y, X_test, y_test = animal_mnist(per_class)
        start = time.perf_counter()
        probe = make_pipeline(
            CNNFeatureTransformer(input_size=args.input_size, progress=False), default_classifier()
        ).fit(X, y)
        seconds = time.perf_counter() - start
        accuracy = probe.score(X_test, y_test)
        print(f"{per_class:9d}  {'linear probe, penultimate codes':38s}  {accuracy:8.3f}  {seconds:7.1f}")
        for unfreeze in args.unfreeze:
            model = CNNClassifier(
                input_size=args.input_size,
                max_epochs=args.max_epochs,
                unfreeze=unfreeze,
                random_state=0,
                progress=False,
            )
            start = time.perf_counter()
            model.fit(X, y)
            seconds = time.perf_counter() - start
            trained = sum(len(y) * 0.9 for _ in model.history_[1:])  # epoch 0 is the probe
            training_seconds = sum(epoch["seconds"] for epoch in model.history_[1:])
            label = f"CNNClassifier, unfreeze={model.strategy_['unfreeze']!r}, bn={model.strategy_['batchnorm']}"
            print(
                f"{per_class:9d}  {label:38s}  {model.score(X_test, y_test):8.3f}  {seconds:7.1f}  "
                f"{trained / training_seconds:11.1f}  (epochs {model.n_epochs_}, best {model.best_epoch_})"
            )


if __name__ == "__main__":
    main()
