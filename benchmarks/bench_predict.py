"""Prediction speed: ``CNNClassifier.predict`` against the equivalent frozen pipeline.

    python benchmarks/bench_predict.py                    # 200 small JPEGs, 8 phone photos, 3 rounds
    python benchmarks/bench_predict.py --n-small 100 --n-photos 4 --rounds 2

A head-only ``CNNClassifier`` (packaged EfficientNet-Lite0 with its pip
weights, ``layer="penultimate"``, 224 px, defaults otherwise) and
``make_pipeline(CNNFeatureTransformer(layer="penultimate"),
LogisticRegression())`` are fitted on the same training files; both then
predict the same files, in this one process, in ``--rounds`` interleaved
rounds, no code cache. The best round of each is printed, and the ratio
pipeline time / classifier time (goal >= 1.0). Beside them, for
reference, the classifier's prediction as it was before it took the
transformer's runtime: the fitted network run eagerly by torch in fp32.

Two sets of files: ``--n-small`` JPEGs of 64-300 px (crops of scikit-image's
bundled photos, quality 90) and ``--n-photos`` 12 MP phone photos (4032 x
3024, :func:`bench_throughput.make_phone_jpegs`). Each contender predicts
once before the rounds: the classifier's first call exports its network to
ONNX (once per machine and weights), timed apart as "first call".
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_throughput import PHOTOS, make_jpegs, make_phone_jpegs
from reporting import machine_line, table
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from skcnn import CNNClassifier, CNNFeatureTransformer
from skcnn.decoding import loading
from skcnn.network import arithmetic

LAYER = "penultimate"


def eager_fp32_predict(model: CNNClassifier, paths: list[str]) -> np.ndarray:
    """The classifier's prediction before it took the transformer's runtime: eager torch, fp32."""
    network = model.module_
    logits = np.empty((len(paths), len(model.classes_)), dtype=np.float32)
    with torch.inference_mode():
        for done, batch in loading.iter_batches(
            paths, range(len(paths)), model._recipe_of_weights, model.batch_size, [],
            num_workers=loading.resolve_workers("auto"), decode=model.decode,
        ):  # fmt: skip
            logits[done] = network(batch).numpy()
    return model.classes_[logits.argmax(axis=1)]


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=42, help="training files (500-1000 px), 7 classes")
    parser.add_argument("--n-small", type=int, default=200)
    parser.add_argument("--n-photos", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import onnxruntime

    print(machine_line(onnxruntime))
    print(f"native bf16: {arithmetic.cpu_has_native_bf16()}")
    with tempfile.TemporaryDirectory(prefix="skcnn-bench-predict-") as folder:
        folder = Path(folder)
        (folder / "train").mkdir()
        (folder / "photos").mkdir()
        train = make_jpegs(folder / "train", args.n_train, seed=0)
        labels = np.asarray([PHOTOS[i % len(PHOTOS)] for i in range(len(train))])
        small = make_jpegs(folder, args.n_small, seed=1, sides=(64, 300), min_fraction=0.5, prefix="small_")
        sets = {
            f"{args.n_small} JPEGs, 64-300 px": small,
            f"{args.n_photos} phone photos, 12 MP": make_phone_jpegs(folder / "photos", args.n_photos),
        }
        classifier = CNNClassifier(layer=LAYER, unfreeze="head", progress=False, random_state=0).fit(train, labels)
        pipeline = make_pipeline(
            CNNFeatureTransformer(backbone="efficientnet_lite0", layer=LAYER, progress=False),
            LogisticRegression(max_iter=1000),
        ).fit(train, labels)
        predictor = classifier._prediction()
        print(
            f"classifier: {predictor.runtime}, {predictor.inference.precision}, batch_size {classifier.batch_size} "
            "(prediction batches of at most 8 on a CPU); "
            f"pipeline: {pipeline[0].extractor_.runtime}, {pipeline[0].extractor_.precision}, "
            f"batch_size {pipeline[0].batch_size}"
        )
        contenders = {
            "CNNClassifier.predict": classifier.predict,
            "pipeline.predict": pipeline.predict,
            "eager fp32 (before)": lambda paths: eager_fp32_predict(classifier, paths),
        }
        rows = []
        for name, paths in sets.items():
            first = {}
            for contender, predict in contenders.items():
                first[contender], _ = timed(lambda predict=predict, paths=paths: predict(paths))
            agree = np.mean(classifier.predict(paths) == eager_fp32_predict(classifier, paths))
            best = dict.fromkeys(contenders, np.inf)
            for _ in range(args.rounds):
                for contender, predict in contenders.items():
                    seconds, _ = timed(lambda predict=predict, paths=paths: predict(paths))
                    best[contender] = min(best[contender], seconds)
            n = len(paths)
            for contender in contenders:
                rows.append(
                    [
                        name,
                        contender,
                        f"{first[contender]:.2f}",
                        f"{best[contender]:.2f}",
                        f"{n / best[contender]:.1f}",
                        f"{best['pipeline.predict'] / best[contender]:.2f}",
                    ]
                )
            print(f"{name}: labels equal to the eager fp32 pass's on {agree:.1%} of the images")
    print()
    table(["images", "predict", "first call s", "best s", "img/s", "pipeline s / this s"], rows)


if __name__ == "__main__":
    main()
