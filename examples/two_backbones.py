"""Two networks' codes concatenated vs each network alone.

The seeds concatenate the codes of two ImageNet networks (AlexNet + VGG) and
train one classifier on them. Here: the packaged EfficientNet-Lite0 and
EfficientNet-Lite2 (each with its own preprocessing), on scikit-learn's
8 x 8 digits upscaled to 64 px, with the same classifier on each set of
codes and the same held-out digits. Two layers are compared: the
penultimate codes and ``blocks.4`` (the layer a layer search picks for
digits, see ``dissimilar_data_earlier_layers.py``).

The codes go to an HDF5 cache in a temporary folder with
``cache_layers=["blocks.4", "penultimate"]``: each network runs once per
image, and every later configuration, the concatenations included, reads
its codes from the cache.

About 15 seconds on a quiet 2-core CPU (a minute or two while other
processes load it):

    python examples/two_backbones.py
"""

import tempfile
import time
from pathlib import Path

import numpy as np
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


print(f"{len(X_train)} training digits, {len(X_test)} held out\n")
print(
    f"{'layer':<12} {'backbone':<14} {'dimension':>9} {'held-out accuracy':>18} {'seconds':>8}  network runs (images)"
)
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
            print(
                f"{layer:<12} {name:<14} {cnn.n_features_out_:>9} {accuracy:>18.3f} "
                f"{time.perf_counter() - start:>8.1f}  {computed}"
            )
