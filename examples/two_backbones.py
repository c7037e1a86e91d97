"""
Two networks' codes concatenated vs each network alone
======================================================

An old recipe for CNN codes concatenates the codes of two ImageNet networks
(AlexNet and VGG, at the time) and trains one classifier on them: two
networks trained differently describe an image differently, and one
classifier on both codes can beat either alone. ``CNNFeatureTransformer`` does it with a
list of backbones, each run with its own preprocessing. Here: the packaged
EfficientNet-Lite0 and EfficientNet-Lite2, on scikit-learn's 8 x 8 digits
upscaled to 64 px, with the same classifier on each set of codes and the
same held-out digits. Two layers are compared: the penultimate codes and
``blocks.4`` (the layer a layer search picks for digits, see the example on
earlier layers).

The codes go to an HDF5 code cache in a temporary folder with
``cache_layers=["blocks.4", "penultimate"]``: each network runs once per
image, and every later configuration, the concatenations included, reads its
codes from the cache.
"""

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.linear_model import RidgeClassifierCV
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skcnn import CNNFeatureTransformer

digits = load_digits()
images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # values 0-16 -> 0-255
X_train, X_test, y_train, y_test = train_test_split(
    images, digits.target, train_size=300, test_size=300, stratify=digits.target, random_state=0
)
print(f"{len(X_train)} training digits, {len(X_test)} held out")

LAYERS = ["blocks.4", "penultimate"]
BACKBONES = {
    "lite0": "efficientnet_lite0",
    "lite2": "efficientnet_lite2",
    "lite0 + lite2": ["efficientnet_lite0", "efficientnet_lite2"],
}


def network_runs(cnn):
    """Images run through the network(s) in the last transform (with several
    backbones ``cache_info_`` is a dict by backbone)."""
    info = cnn.cache_info_
    return sum(i.computed for i in info.values()) if isinstance(info, dict) else info.computed


# %%
# Each network alone, and both
# ----------------------------
# The last column counts the images the networks ran on in the fit and the
# score of that row: only the first row of each network computes.
rows = []
with tempfile.TemporaryDirectory() as folder:
    cache = Path(folder) / "codes.h5"
    for layer in ["penultimate", "blocks.4"]:
        for name, backbone in BACKBONES.items():
            start = time.perf_counter()
            cnn = CNNFeatureTransformer(backbone=backbone, layer=layer, input_size=64, cache=cache, cache_layers=LAYERS)
            model = make_pipeline(cnn, StandardScaler(), RidgeClassifierCV(alphas=np.logspace(-1, 5, 7)))
            model.fit(X_train, y_train)
            computed = network_runs(cnn)  # images the networks ran on in fit ...
            accuracy = model.score(X_test, y_test)
            computed += network_runs(cnn)  # ... and in score
            rows.append(
                {
                    "layer": layer,
                    "backbone": name,
                    "dimension": cnn.n_features_out_,
                    "held-out accuracy": accuracy,
                    "seconds": time.perf_counter() - start,
                    "network runs (images)": computed,
                }
            )
print(pd.DataFrame(rows).round({"held-out accuracy": 3, "seconds": 1}).to_string(index=False))
