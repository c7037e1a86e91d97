"""
Ship a fitted model as one ONNX file, and predict without torch
===============================================================

A fitted pipeline pickles, but the pickle needs torch, torchvision, timm,
scikit-learn and skcnn on the machine that loads it, at matching versions.
``skcnn.export.to_onnx`` writes it as one ONNX file instead: the network
(normalisation, the tapped layers, ReLU and pooling) and the scikit-learn
steps after it (here a ``StandardScaler`` and a logistic regression,
converted by ``skl2onnx``), joined into one graph that takes uint8 image
crops. ``skcnn.serving.OnnxImageClassifier`` runs that file with numpy,
Pillow and ONNX Runtime alone, decoding and cropping images as the fitted
model does, from the recipe stored in the file's metadata.

Here a pipeline is fitted on JPEG files of texture patches from
scikit-image's CC0 photos, exported, and served on the held-out files.
"""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skcnn import CNNFeatureTransformer
from skcnn.datasets import load_texture_patches
from skcnn.export import to_onnx
from skcnn.serving import OnnxImageClassifier

folder = Path(tempfile.mkdtemp())


def write_jpegs(images: np.ndarray, prefix: str) -> list[str]:
    paths = [folder / f"{prefix}{i:03d}.jpg" for i in range(len(images))]
    for path, image in zip(paths, images, strict=True):
        Image.fromarray(image).save(path, quality=90)
    return [str(path) for path in paths]


train_images, y_train = load_texture_patches("train", n_per_class=20, patch_size=96)
test_images, y_test = load_texture_patches("test", n_per_class=20, patch_size=96)
train, test = write_jpegs(train_images, "train"), write_jpegs(test_images, "test")

model = make_pipeline(
    CNNFeatureTransformer(layer="blocks.4", input_size=96),
    StandardScaler(),
    LogisticRegression(C=0.1, max_iter=2000),
).fit(train, y_train)
print(f"fitted on {len(train)} JPEG files; held-out accuracy {model.score(test, y_test):.3f}")

# %%
# Export
# ------
# Where the model was fitted (``pip install 'skcnn[export]'`` adds
# ``skl2onnx``); most of the time goes to torch's ONNX exporter.
path = to_onnx(model, folder / "model.onnx")
print(f"{path.name}: {path.stat().st_size / 2**20:.1f} MiB")

# %%
# Serve
# -----
# Anywhere: ``pip install numpy pillow onnxruntime`` and
# ``pip install --no-deps skcnn`` are the whole environment. The file says
# what it holds and how its images are to be decoded and cropped.
served = OnnxImageClassifier(path)
for key, value in served.metadata_.items():
    print(f"{key}: {json.dumps(value)}")

# %%
# The served model against the fitted one, on the held-out files: the same
# labels, and probabilities equal to within float rounding (the resize is
# Pillow's in serving, torch's in the fitted model).
fitted_probabilities = model.predict_proba(test)
served_probabilities = served.predict_proba(test)
served_labels = served.predict(test)
print(f"labels agree on {(served_labels == model.predict(test)).mean():.1%} of {len(test)} held-out images")
print(f"largest difference of a probability: {np.abs(served_probabilities - fitted_probabilities).max():.1e}")
print(f"held-out accuracy, served: {(served_labels == y_test).mean():.3f}")

shutil.rmtree(folder)
