"""Parity of an exported model with the fitted one, by kind of source image.

    python benchmarks/bench_parity.py
    python benchmarks/bench_parity.py --n-per-class 12

For each kind of source, a pipeline ``CNNFeatureTransformer()``
(EfficientNet-Lite0, 224 px: resize to 256, bicubic) +
``LogisticRegression`` is fitted on image files of that kind, exported with
:func:`skcnn.export.to_onnx` and served by
:class:`skcnn.serving.OnnxImageClassifier`. Printed per source:

- the network input's pixels: the share of crop pixels (all channels) where
  the served crop differs from the fitted model's, and the largest
  difference in levels;
- the probabilities: the largest ``|served - fitted|`` over all rows and
  classes, the share of rows with a difference above 1e-3 (the documented
  tolerance), and the share of labels that agree.

Sources: scikit-learn's 8 x 8 digits upscaled (bilinear) to 28 px and to
64 px gray PNG files (MNIST-like: a small source upscaled about 9x and 4x
by the network's resize), 128 px crops of scikit-image's photos reduced to
64 px RGB PNG files, and 160 px crops of the photos as JPEG files (some
reshaped to 200 x 130: downscaled, not square).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from reporting import machine_line, table
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import skcnn
from skcnn import CNNFeatureTransformer
from skcnn.datasets import load_digit_images, load_photo_crops
from skcnn.export import to_onnx
from skcnn.images import load_image
from skcnn.serving import OnnxImageClassifier

TOLERANCE = 1e-3
PHOTOS = ("astronaut", "coffee", "rocket", "chelsea", "retina", "immunohistochemistry")


def digit_files(folder: Path, side: int, n_per_class: int) -> tuple[list[str], np.ndarray]:
    images, labels = load_digit_images(n_per_class=n_per_class)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"digit{side}_{i:04d}.png"
        Image.fromarray(image).resize((side, side), Image.BILINEAR).save(path)
        paths.append(str(path))
    return paths, labels


def small_photo_files(folder: Path, n: int) -> tuple[list[str], np.ndarray]:
    crops, photo = load_photo_crops(128, photos=PHOTOS)
    rows = np.random.default_rng(0).permutation(len(crops))[:n]
    paths = []
    for i, row in enumerate(rows):
        path = folder / f"photo64_{i:04d}.png"
        Image.fromarray(crops[row]).resize((64, 64), Image.BICUBIC).save(path)
        paths.append(str(path))
    return paths, photo[rows]


def photo_files(folder: Path, n: int) -> tuple[list[str], np.ndarray]:
    crops, photo = load_photo_crops(160, photos=PHOTOS)
    rows = np.random.default_rng(0).permutation(len(crops))[:n]
    paths = []
    for i, row in enumerate(rows):
        image = Image.fromarray(crops[row])
        if i % 3 == 1:
            image = image.resize((200, 130), Image.BICUBIC)
        path = folder / f"photo_{i:04d}.jpg"
        image.save(path, quality=88)
        paths.append(str(path))
    return paths, photo[rows]


def crop_difference(transformer: CNNFeatureTransformer, served: OnnxImageClassifier, paths: list[str]):
    """Share of crop values that differ between the fitted model and the server, and the largest difference."""
    extractor = transformer.extractor_
    recipe = extractor.preprocessing(extractor.load())
    differing, total, largest = 0, 0, 0
    for path in paths:
        fitted = (
            recipe.crop(load_image(path, None, recipe.min_decoded_side(transformer.decode))).numpy().transpose(1, 2, 0)
        )
        fitted = np.broadcast_to(fitted, (*fitted.shape[:2], 3)).astype(np.int16)
        diff = np.abs(served.crop(path).astype(np.int16) - fitted)
        differing, total, largest = differing + int((diff > 0).sum()), total + diff.size, max(largest, int(diff.max()))
    return differing / total, largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-per-class", type=int, default=10, help="digits per class (10 classes)")
    parser.add_argument("--n-photos", type=int, default=100)
    args = parser.parse_args()
    print(machine_line(skcnn))
    folder = Path(tempfile.mkdtemp(prefix="skcnn-bench-parity-"))
    sources = {
        "28 px gray PNG (digits, upscaled)": digit_files(folder, 28, args.n_per_class),
        "64 px gray PNG (digits, upscaled)": digit_files(folder, 64, args.n_per_class),
        "64 px RGB PNG (photo crops)": small_photo_files(folder, args.n_photos),
        "160 px JPEG (photo crops, some 200 x 130)": photo_files(folder, args.n_photos),
    }
    rows = []
    for name, (paths, labels) in sources.items():
        model = make_pipeline(CNNFeatureTransformer(progress=False), LogisticRegression(max_iter=3000))
        model.fit(paths, labels)
        served = OnnxImageClassifier(to_onnx(model, folder / "model.onnx"))
        share, largest = crop_difference(model[0], served, paths)
        delta = np.abs(served.predict_proba(paths) - model.predict_proba(paths)).max(axis=1)
        agree = float((served.predict(paths) == model.predict(paths)).mean())
        rows.append(
            [name, len(paths), f"{share:.2%}", largest, f"{delta.max():.2e}", f"{(delta > TOLERANCE).mean():.1%}",
             f"{agree:.3f}"]
        )  # fmt: skip
    table(
        ["source", "images", "crop values differing", "max levels", "max |dp|", "rows |dp| > 1e-3", "labels agree"],
        rows,
    )


if __name__ == "__main__":
    main()
