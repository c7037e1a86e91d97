"""Regression and multi-label targets: held-out scores of frozen-code probes (and fine-tuning) per input size.

    python benchmarks/bench_targets.py                    # 400 training, 200 test images, 64 and 128 px
    python benchmarks/bench_targets.py --train 200 --test 100 --sizes 64
    python benchmarks/bench_targets.py --finetune         # also CNNRegressor, multi-label CNNClassifier

The sets come from photos that ship with pip (scikit-image's textures),
written as PNG files in a temporary folder and read back as paths, as a
user's folder would be:

- **regression**: :func:`skcnn.datasets.make_texture_mixtures` with
  ``n_outputs=1`` (the share of the crop that is brick, in [0, 1]) and
  ``n_outputs=4`` (the share of each of the four textures);
- **multi-label**: :func:`skcnn.datasets.make_texture_collages` (which of
  four textures a crop holds, one to three of them).

Training images are cut from the left halves of the photos
(``split="train"``), test images from the right halves (``split="test"``):
they never share a pixel. Images are ``--image-size`` px (128); each row
resizes them to its input size.

Rows, each fitted on the training files and scored on the test files:

- ``constant``: ``DummyRegressor()`` (the training mean) or a
  ``DummyClassifier`` per label (its most frequent value): the floor;
- ``frozen probe``: ``CNNFeatureTransformer(input_size=size)`` (the default
  EfficientNet-Lite0, penultimate codes) -> ``StandardScaler`` -> ``RidgeCV``
  (regression) or ``OneVsRestClassifier(LogisticRegression)`` (multi-label);
- with ``--finetune``, where ``skcnn.CNNRegressor`` exists: ``CNNRegressor``
  and a multi-label ``CNNClassifier`` (``max_epochs=--epochs``, the row's
  input size, ``random_state=0``).

Scores: R^2 (averaged over the outputs) and mean absolute error for
regression; subset accuracy (every label right), hamming score (the share of
labels right) and macro F1 for multi-label; and the seconds of fit + predict
(the first row at a size includes loading the network and, on the ONNX
Runtime path, its export at that size).

``--inspect``: planted errors in the training files of ``brick share`` and
``which textures`` at the first input size, found by
:mod:`skcnn.inspection` with the frozen probe (5-fold, out of fold): 10% of
the brick shares replaced by a uniform draw, the share of them among the
first 10% rows of ``top_losses``; one label of 10% of the collages flipped,
the precision and recall of ``label_issues`` and the share of flipped
images among as many first rows of ``top_losses``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image
from reporting import machine_line, table
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, mean_absolute_error, r2_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.multioutput import MultiOutputClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skcnn
from skcnn import CNNFeatureTransformer
from skcnn.datasets import make_texture_collages, make_texture_mixtures
from skcnn.inspection import label_issues, top_losses

#: The ridge penalties RidgeCV chooses from (leave-one-out, on the training codes).
ALPHAS = np.logspace(-2, 4, 13)


def written(images: np.ndarray, folder: str) -> list[str]:
    """The images as PNG files in ``folder``; their paths."""
    os.makedirs(folder)
    paths = []
    for i, image in enumerate(images):
        path = os.path.join(folder, f"{i:05d}.png")
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


#: The tasks: name -> (kind, the function that makes its images and targets).
TASKS = {
    "brick share": ("regression", lambda **kw: make_texture_mixtures(n_outputs=1, **kw)),
    "4 shares": ("regression", lambda **kw: make_texture_mixtures(n_outputs=4, **kw)),
    "which textures": ("multilabel", make_texture_collages),
}


def task_sets(n_train: int, n_test: int, image_size: int, folder: str, names=tuple(TASKS)) -> dict:
    """Each task's training and test files and targets: name -> (kind, X_train, y_train, X_test, y_test)."""
    tasks = {}
    for name in names:
        kind, make = TASKS[name]
        split = {}
        for part, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
            X, y = make(n_samples=n, patch_size=image_size, split=part, random_state=seed, return_X_y=True)
            split[part] = (written(X, os.path.join(folder, name.replace(" ", "_"), part)), y)
        tasks[name] = (kind, *split["train"], *split["test"])
    return tasks


def models(kind: str, size: int, finetune: bool, epochs: int) -> dict:
    """The rows of one task at one input size: name -> unfitted estimator of image files."""
    codes = CNNFeatureTransformer(input_size=size, progress=False)
    if kind == "regression":
        rows = {
            "constant": DummyRegressor(),
            "frozen probe": make_pipeline(codes, StandardScaler(), RidgeCV(alphas=ALPHAS)),
        }
    else:
        rows = {
            "constant": MultiOutputClassifier(DummyClassifier(strategy="most_frequent")),
            "frozen probe": make_pipeline(
                codes, StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=2000))
            ),
        }
    if finetune and hasattr(skcnn, "CNNRegressor"):
        # Flips and 90-degree turns keep a texture's share and which textures show; a crop may not.
        params = dict(input_size=size, max_epochs=epochs, augment="dihedral", random_state=0, progress=False)
        rows["fine-tuned"] = skcnn.CNNRegressor(**params) if kind == "regression" else skcnn.CNNClassifier(**params)
    return rows


def scores(kind: str, y_test: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    if kind == "regression":
        return {"R^2": r2_score(y_test, predicted), "MAE": mean_absolute_error(y_test, predicted)}
    predicted = np.asarray(predicted).astype(int)
    return {
        "subset acc": accuracy_score(y_test, predicted),
        "hamming score": 1 - hamming_loss(y_test, predicted),
        "macro F1": f1_score(y_test, predicted, average="macro", zero_division=0),
    }


def inspect_planted(tasks: dict, size: int, fraction: float = 0.1) -> None:
    """Planted target and label errors in the training files, and how many the inspection finds first."""
    rng = np.random.default_rng(0)
    _, X, y, _, _ = tasks["brick share"]
    planted = rng.choice(len(y), size=int(fraction * len(y)), replace=False)
    noisy = y.copy()
    noisy[planted] = rng.uniform(0, 1, len(planted))
    errors = np.abs(noisy[planted] - y[planted])
    model = models("regression", size, False, 0)["frozen probe"]
    start = time.perf_counter()
    first = top_losses(model, X, noisy, cv=5)["position"].head(len(planted))
    found = len(set(first) & set(planted)) / len(planted)
    print(f"brick share, {len(planted)} of {len(y)} targets replaced (mean error {errors.mean():.3f}): "
          f"{found:.1%} of the first {len(planted)} rows of out-of-fold top_losses "
          f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
    _, X, Y, _, _ = tasks["which textures"]
    planted = rng.choice(len(Y), size=int(fraction * len(Y)), replace=False)
    noisy = Y.copy()
    noisy[planted, rng.integers(0, Y.shape[1], len(planted))] ^= 1  # one label added or dropped
    model = models("multilabel", size, False, 0)["frozen probe"]
    start = time.perf_counter()
    flagged = set(label_issues(model, X, noisy, cv=5)["position"])
    first = set(top_losses(model, X, noisy, cv=5)["position"].head(len(planted)))
    hits = len(flagged & set(planted))
    print(f"which textures, one label of {len(planted)} of {len(Y)} images flipped: label_issues flagged "
          f"{len(flagged)}, precision {hits / max(len(flagged), 1):.1%}, recall {hits / len(planted):.1%}; "
          f"out-of-fold top_losses: {len(first & set(planted)) / len(planted):.1%} of the first {len(planted)} "
          f"rows ({time.perf_counter() - start:.0f} s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=400, help="training images per task")
    parser.add_argument("--test", type=int, default=200, help="test images per task")
    parser.add_argument("--image-size", type=int, default=128, help="side of the generated images, px")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="the networks' input sizes")
    parser.add_argument("--finetune", action="store_true", help="also CNNRegressor / multi-label CNNClassifier")
    parser.add_argument("--epochs", type=int, default=8, help="max_epochs of the fine-tuned rows")
    parser.add_argument("--inspect", action="store_true", help="also find planted errors with skcnn.inspection")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), help="the tasks to run")
    args = parser.parse_args()
    print(machine_line(skcnn))
    if args.finetune and not hasattr(skcnn, "CNNRegressor"):
        print("--finetune: this skcnn has no CNNRegressor; frozen rows only")
    start_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-targets-") as folder:
        tasks = task_sets(args.train, args.test, args.image_size, folder, args.tasks)
        print(f"{args.train} training and {args.test} test files per task, {args.image_size} px PNG")
        for task, (kind, X_train, y_train, X_test, y_test) in tasks.items():
            rows = []
            for size in args.sizes:
                for name, model in models(kind, size, args.finetune, args.epochs).items():
                    start = time.perf_counter()
                    predicted = model.fit(X_train, y_train).predict(X_test)
                    seconds = time.perf_counter() - start
                    measured = scores(kind, y_test, predicted)
                    rows.append([name, size, *(f"{value:.3f}" for value in measured.values()), f"{seconds:.0f}"])
                    header = ["model", "input px", *measured, "seconds"]
                    print(f"  {task} | {name} @ {size} px: {measured} in {seconds:.0f} s", flush=True)
            print(f"\n{task} ({kind}):")
            table(header, rows)
            print()
        if args.inspect:
            inspect_planted(tasks, args.sizes[0])
    print(f"total {time.perf_counter() - start_all:.0f} s")


if __name__ == "__main__":
    main()
