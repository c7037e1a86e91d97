"""Decode time of a grid search of ``CNNClassifier``, with and without the shared store.

    python benchmarks/bench_grid_decode.py
    python benchmarks/bench_grid_decode.py --n 120 --folds 2

``GridSearchCV(CNNClassifier(unfreeze="all", max_epochs=1), {"learning_rate":
[1e-3, 3e-3]}, cv=--folds)`` on paths to ``--n`` 12 MP camera-like JPEGs
(4032 x 3024, from ``bench_decode_drift.camera_photo``; labelled by source
photo), twice in this one process:

- **shared**: as skcnn runs it. Every fit (each fold's clone, then the
  refit) takes its training crops from the store of decoded images, so each
  image is decoded once in the whole search;
- **no store**: the store is emptied before each fit
  (:func:`skcnn.clear_decoded_images`), so every fit decodes its images
  again, as before the store.

Decode time is the time ``fit`` spends getting its crops (decoding the
missing ones included); scoring each fold's held-out images is the same in
both and counted only in the wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_decode_drift import camera_photo, sources
from reporting import machine_line
from sklearn.model_selection import GridSearchCV, StratifiedKFold

import skcnn
from skcnn import CNNClassifier, clear_decoded_images
from skcnn.finetuning import classifier as classifier_module

SIZE = (4032, 3024)
N_CLASSES = 4


def make_jpegs(folder: Path, n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` camera-like JPEGs of the first :data:`N_CLASSES` sources, labelled by source (made once)."""
    rng = np.random.default_rng(seed)
    photos = sources()[:N_CLASSES]
    paths, labels = [], []
    for i in range(n):
        label = i % N_CLASSES
        path = folder / f"{i:04d}.jpg"
        if not path.exists():
            camera_photo(photos[label], SIZE, rng, grain=2.0).save(path, quality=90)
        paths.append(str(path))
        labels.append(label)
    return paths, labels


class Timed:
    """Wraps the store's entry point in the classifier: seconds and images in each call."""

    def __init__(self):
        self.seconds, self.calls = 0.0, 0
        self.original = classifier_module.decoded_images

    def __call__(self, images, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.original(images, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


class DecodesEveryFit(CNNClassifier):
    """``CNNClassifier`` whose every fit finds the store empty."""

    def fit(self, X, y, sample_weight=None):
        clear_decoded_images()
        return super().fit(X, y, sample_weight=sample_weight)


def search(estimator, paths, labels, folds: int) -> tuple[float, float, int]:
    timed = Timed()
    classifier_module.decoded_images = timed
    try:
        grid = GridSearchCV(
            estimator,
            {"learning_rate": [1e-3, 3e-3]},
            cv=StratifiedKFold(folds, shuffle=True, random_state=0),
        )
        start = time.perf_counter()
        grid.fit(paths, labels)
        return time.perf_counter() - start, timed.seconds, timed.calls
    finally:
        classifier_module.decoded_images = timed.original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "skcnn-bench-12mp")
    args = parser.parse_args()
    print(machine_line(skcnn))
    args.folder.mkdir(parents=True, exist_ok=True)
    paths, labels = make_jpegs(args.folder, args.n)
    params = dict(unfreeze="all", input_size=args.input_size, max_epochs=1, batch_size=16, random_state=0,
                  progress=False)  # fmt: skip
    rows = []
    for name, estimator in (("no store", DecodesEveryFit(**params)), ("shared", CNNClassifier(**params))):
        clear_decoded_images()
        wall, decode, fits = search(estimator, paths, labels, args.folds)
        rows.append((name, wall, decode, fits))
        print(f"{name:>9}: {fits} fits, decode {decode:6.1f} s, grid search {wall:6.1f} s", flush=True)
    (_, wall_none, decode_none, _), (_, wall_shared, decode_shared, _) = rows
    print(
        f"{args.n} photos of {SIZE[0]} x {SIZE[1]}, {args.folds} folds x 2 learning rates + refit: "
        f"decode time shared / no store = {decode_shared / decode_none:.3f}, "
        f"grid search time shared / no store = {wall_shared / wall_none:.3f}"
    )


if __name__ == "__main__":
    main()
