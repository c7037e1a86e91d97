"""Small local evidence: frozen codes at today's search against the layer x pooling x size search.

    python benchmarks/bench_defects.py                      # the shipped defect set, written as PNG files
    python benchmarks/bench_defects.py --train 400 --test 300 --tta
    pip install elpv-dataset && python benchmarks/bench_defects.py --elpv   # a real published set
    python benchmarks/bench_defects.py --elpv --finetune --params '{"input_size": 300, "crop": false}'

The shipped set (:func:`skcnn.datasets.make_surface_defects`): 300 px
close-ups of scikit-image's texture photos, most flawless, the others with
a crack, a spot or a scratch over 0.5-3% of the image; training and test
images are two seeds' draws, written as PNG files and read back as paths
(as a user's folder would be). ``--elpv``: the solar-cell
electroluminescence set of Deitsch et al. (2,624 gray 300 px cells, four
defect probabilities as classes, the largest 57%), split 75/25 stratified
with seed 0.

Rows, each a ``LayerSearchCV`` fitted on the training files and scored on
the test files:

- ``defaults``: ``LayerSearchCV()``, layers x (avg, GeM) x (224, native)
  x (one view, and the views of the flips and rotations measured to keep
  the class) by the logistic regression, then an RBF SVM on the three
  best codes;
- ``no svm``: the same search by the logistic regression alone
  (``classifier="logistic"``);
- ``0.12 defaults``: nor the measured views (``ttas=None``): the defaults
  of skcnn 0.12;
- ``layers only``: the search of skcnn < 0.9, layers at the weights' 224 px
  resize and centre crop, average pooling (``poolings=["avg"],
  input_sizes=[None]``, ``classifier="logistic"``, ``ttas=None``);
- ``nested C``: ``no svm``'s search with the logistic regression of skcnn
  <= 0.13, whose ``C`` a nested 3-fold cross-validation tunes in each fold
  (``classifier=default_classifier()``), where the search now tunes it on
  its own folds: its seconds against ``no svm``'s are the saving;
- ``defaults+tta``: the same searching ``ttas=[None, "dihedral"]`` too
  (codes of each image, or averaged over its 8 flips and rotations), with
  ``--tta``;
- ``CNNClassifier()``: ``CNNClassifier(random_state=0)`` at its defaults,
  with ``--finetune`` (instead of the searches), or with the parameters
  ``--params`` gives as JSON (``--params '{"input_size": 300, "crop":
  false, "augment": "dihedral"}'``): its strategy and the seconds of the
  whole fit (``tta="auto"``: the views it chose, in its strategy); then
  the same fitted model's predictions with one view and each ``tta`` its
  input takes (``set_params``, no new fit), and their seconds.

The searches share a code cache: the first row's seconds include the
network's, the others' are mostly their classifiers'. Accuracy and
balanced accuracy (the mean per-class recall), and the search's choice.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
from PIL import Image
from reporting import machine_line
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import train_test_split

import skcnn
from skcnn import CNNClassifier, CNNFeatureTransformer, LayerSearchCV
from skcnn.datasets import make_surface_defects
from skcnn.frozen.search import default_classifier


def written(images: np.ndarray, labels: np.ndarray, folder: str) -> list[str]:
    """The images as PNG files in ``folder``; their paths."""
    paths = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = os.path.join(folder, f"{i:05d}_{label}.png")
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def shipped_set(n_train: int, n_test: int, folder: str):
    X_train, y_train = make_surface_defects(n_train, random_state=0)
    X_test, y_test = make_surface_defects(n_test, random_state=1)
    os.makedirs(os.path.join(folder, "train"))
    os.makedirs(os.path.join(folder, "test"))
    return (
        written(X_train, y_train, os.path.join(folder, "train")),
        y_train,
        written(X_test, y_test, os.path.join(folder, "test")),
        y_test,
    )


def elpv_set(folder: str):
    from elpv_dataset.utils import load_dataset

    images, probabilities, _ = load_dataset()
    labels = np.round(probabilities * 3).astype(int)
    paths = written(images, labels, folder)
    train, test = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=0)
    return [paths[i] for i in train], labels[train], [paths[i] for i in test], labels[test]


def searches(tta: bool, cache: str) -> dict[str, LayerSearchCV]:
    """The searches, in the order run: the first computes the codes, the others read them from ``cache``."""
    codes = CNNFeatureTransformer(cache=cache)
    rows = {
        "defaults": LayerSearchCV(codes),
        "no svm": LayerSearchCV(codes, classifier="logistic"),
        "0.12 defaults": LayerSearchCV(codes, classifier="logistic", ttas=None),
        "layers only": LayerSearchCV(codes, classifier="logistic", poolings=["avg"], input_sizes=[None], ttas=None),
        # The logistic regression of skcnn <= 0.13, C tuned by 3 inner folds in each fold, beside "no svm".
        "nested C": LayerSearchCV(codes, classifier=default_classifier()),
    }
    if tta:
        rows["defaults+tta"] = LayerSearchCV(codes, ttas=[None, "dihedral"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=400, help="shipped set: training images")
    parser.add_argument("--test", type=int, default=300, help="shipped set: test images")
    parser.add_argument("--elpv", action="store_true", help="the ELPV solar-cell set (pip install elpv-dataset)")
    parser.add_argument("--tta", action="store_true", help="also the defaults with tta='dihedral'")
    parser.add_argument("--finetune", action="store_true", help="CNNClassifier(random_state=0) instead")
    parser.add_argument(
        "--params", type=json.loads, default={}, help="more CNNClassifier parameters, as JSON: '{\"input_size\": 300}'"
    )
    args = parser.parse_args()
    print(machine_line(skcnn))
    with tempfile.TemporaryDirectory() as folder:
        X_train, y_train, X_test, y_test = elpv_set(folder) if args.elpv else shipped_set(args.train, args.test, folder)
        counts = dict(zip(*np.unique(y_train, return_counts=True), strict=True))
        print(f"{'ELPV' if args.elpv else 'shipped defects'}: {len(X_train)} training, {len(X_test)} test files; "
              f"training classes {counts}")  # fmt: skip
        print(f"{'model':<14} {'accuracy':>8} {'balanced':>8} {'seconds':>7}  choice")
        scored = []
        finetuned = {f"CNNClassifier({_call(args.params)})": CNNClassifier(random_state=0, **args.params)}
        models = finetuned if args.finetune else searches(args.tta, os.path.join(folder, "codes.h5"))
        for name, model in models.items():
            start = time.perf_counter()
            predicted = model.fit(X_train, y_train).predict(X_test)
            seconds = time.perf_counter() - start
            if args.finetune:
                choice = f"{model.strategy_}, kept epoch {model.best_epoch_} of {model.n_epochs_}"
                scores = " ".join(f"{epoch['validation_score']:.3f}" for epoch in model.history_)
                choice += f"; validation scores from epoch 0: {scores}"
                views = [epoch["validation_score_views"] for epoch in model.history_]
                if not np.isnan(views).all():
                    choice += f"; with the views tta='auto' weighed: {' '.join(f'{v:.3f}' for v in views)}"
            else:
                best = model.best_params_
                choice = f"{best['layer']}, {best['pooling']}, input {best['input_size']}, crop {best['crop']}"
                choice += f", tta {best['tta']}, {model.cv_results_['classifier'][model.best_index_]}"
                if model.symmetries_ is not None:
                    choice += f" (measured to keep the class: {', '.join(model.symmetries_) or 'nothing'})"
            print(
                f"{name:<14} {accuracy_score(y_test, predicted):>8.3f} "
                f"{balanced_accuracy_score(y_test, predicted):>8.3f} {seconds:>7.0f}  {choice}",
                flush=True,
            )
            scored.append(model)
        if args.finetune:
            with_tta(scored[0], X_test, y_test)


def _call(params: dict) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in params.items())


def with_tta(model: CNNClassifier, X_test: list, y_test: np.ndarray) -> None:
    """The fitted model's test accuracy with one view and each test-time augmentation its input takes
    (no new fit)."""
    square = model.preprocessing_["crop_size"][0] == model.preprocessing_["crop_size"][1]
    given = model.tta
    for tta in (None, "flips", "dihedral") if square else (None, "flips"):
        start = time.perf_counter()
        predicted = model.set_params(tta=tta).predict(X_test)
        seconds = time.perf_counter() - start
        print(
            f"  tta={tta!r:<10} {accuracy_score(y_test, predicted):>8.3f} "
            f"{balanced_accuracy_score(y_test, predicted):>8.3f} {seconds:>7.0f}  (prediction alone)",
            flush=True,
        )
    model.set_params(tta=given)


if __name__ == "__main__":
    main()
