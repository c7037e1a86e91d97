"""An exported model against the fitted one: file size, installed size, images/s, cold start.

    python benchmarks/bench_export.py
    python benchmarks/bench_export.py --n 100

A pipeline ``CNNFeatureTransformer()`` (EfficientNet-Lite0, 224 px) +
``StandardScaler`` + ``LogisticRegression`` fitted on ``--n`` JPEG files
(800 x 600 crops of scikit-image's photos, labelled by photo), exported
with :func:`skcnn.export.to_onnx`. Measured in this one run:

- the ``.onnx`` file's size, and the pickle's;
- the installed size of what each needs: the serving side is numpy,
  Pillow, onnxruntime and what they require, plus skcnn itself; the full
  side is skcnn with every requirement (torch, torchvision, timm, ...). Sizes
  are the files pip recorded for each distribution in this environment;
- images/s of ``OnnxImageClassifier.predict`` and of the fitted model's
  ``predict`` on the same files, twice each, alternating;
- cold start: a fresh process from ``import`` to the first prediction of
  one file, for each (median of three).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import joblib
import numpy as np
from PIL import Image
from reporting import machine_line
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skcnn
from skcnn import CNNFeatureTransformer
from skcnn.datasets import load_photo_crops
from skcnn.export import to_onnx
from skcnn.serving import OnnxImageClassifier

PHOTOS = ("astronaut", "coffee", "rocket", "chelsea", "retina", "immunohistochemistry")


def make_jpegs(folder: Path, n: int) -> tuple[list[str], np.ndarray]:
    crops, photo = load_photo_crops(128, photos=PHOTOS)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(crops), size=n, replace=len(crops) < n)
    paths = []
    for i, row in enumerate(rows):
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(crops[row]).resize((800, 600), Image.BICUBIC).save(path, quality=90)
        paths.append(str(path))
    return paths, photo[rows]


def _requirement_names(name: str) -> list[str]:
    requires = metadata.requires(name) or []
    return [re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r]


def installed_mib(roots: list[str]) -> float:
    """Size of the files pip installed for ``roots`` and everything they require (not extras)."""
    seen, todo, total = set(), list(roots), 0
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            files = metadata.files(name) or []
        except metadata.PackageNotFoundError:
            continue
        total += sum(f.size or 0 for f in files)
        todo += _requirement_names(name)
    return total / 2**20


def cold_start(code: str, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    print(machine_line(skcnn))
    folder = Path(tempfile.mkdtemp(prefix="skcnn-bench-export-"))
    paths, labels = make_jpegs(folder, args.n)
    model = make_pipeline(CNNFeatureTransformer(progress=False), StandardScaler(), LogisticRegression(max_iter=3000))
    model.fit(paths, labels)
    joblib.dump(model, folder / "model.pkl")
    onnx_path = to_onnx(model, folder / "model.onnx")
    served = OnnxImageClassifier(onnx_path)
    onnx_mib, pickle_mib = onnx_path.stat().st_size / 2**20, (folder / "model.pkl").stat().st_size / 2**20
    print(f"files: model.onnx {onnx_mib:.1f} MiB, model.pkl {pickle_mib:.2f} MiB")
    skcnn_own = sum(f.size or 0 for f in metadata.files("skcnn") or []) / 2**20
    serving = installed_mib(["numpy", "pillow", "onnxruntime"]) + skcnn_own
    full = installed_mib(["skcnn"])
    print(
        f"installed: serving (numpy, Pillow, onnxruntime and their requirements, and skcnn) {serving:.0f} MiB; "
        f"full skcnn {full:.0f} MiB; ratio {serving / full:.3f}"
    )
    rates: dict[str, list[float]] = {"served": [], "fitted": []}
    agree = float((served.predict(paths) == model.predict(paths)).mean())
    proba = float(np.abs(served.predict_proba(paths) - model.predict_proba(paths)).max())
    for _ in range(2):
        for name, predict in (("served", served.predict), ("fitted", model.predict)):
            start = time.perf_counter()
            predict(paths)
            rates[name].append(len(paths) / (time.perf_counter() - start))
    served_rate, fitted_rate = max(rates["served"]), max(rates["fitted"])
    print(
        f"predict on {len(paths)} files of 800 x 600: served {served_rate:.1f} img/s, fitted {fitted_rate:.1f} "
        f"img/s, ratio {served_rate / fitted_rate:.3f}; labels agree {agree:.3f}, max |probability difference| "
        f"{proba:.2e}"
    )
    first = paths[0]
    served_start = cold_start(
        f"from skcnn.serving import OnnxImageClassifier; OnnxImageClassifier({str(onnx_path)!r}).predict([{first!r}])"
    )
    fitted_start = cold_start(f"import joblib; joblib.load({str(folder / 'model.pkl')!r}).predict([{first!r}])")
    print(
        f"cold start to the first prediction: served {served_start:.2f} s, fitted {fitted_start:.2f} s, "
        f"ratio {served_start / fitted_start:.3f}"
    )


if __name__ == "__main__":
    main()
