"""
Data like ImageNet: a linear classifier on the penultimate codes
================================================================

The transfer-learning rule for a small target set similar to the source data
(photos): keep the pretrained network frozen, take its top codes (the input
of its classifier head) and train a linear classifier on them. Here the
target is scikit-image's CC0 texture photos (brick, grass, gravel): patches
from the left half of each photo train, patches from the right half test.
The packaged ImageNet-trained EfficientNet-Lite0 gives the codes; an early
layer (``blocks.0``, right after the stem), the same network with random
weights and the raw pixels are the baselines.

This is the other column of the rule's size x similarity table: the example
on digits (data unlike ImageNet) finds an earlier layer best.
"""

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from skcnn import CNNFeatureTransformer, advise_layer
from skcnn.datasets import load_texture_patches

X_train, y_train = load_texture_patches("train", n_per_class=40, patch_size=32)
X_test, y_test = load_texture_patches("test", n_per_class=40, patch_size=32)
print(
    f"{len(X_train)} training and {len(X_test)} test patches of {X_train.shape[1]} px, "
    f"classes {sorted(set(y_train.tolist()))}"
)

# %%
# What the rule says
# ------------------
# ``advise_layer`` measures the similarity from the network's batch-norm
# statistics; gray texture patches this small lie just above its threshold.
print(advise_layer(X_train, y_train, input_size=96))


# %%
# Pretrained codes against the baselines
# --------------------------------------
# Each set of features goes into the same standardised logistic regression.
# ``weights=None`` is the same network with random weights: the difference
# to the pretrained penultimate codes is what ImageNet training adds.
def flatten(images):
    return images.reshape(len(images), -1).astype("float32")


features = {
    "raw pixels": FunctionTransformer(flatten),
    "random-init efficientnet_lite0, penultimate": CNNFeatureTransformer(weights=None, input_size=96),
    "pretrained efficientnet_lite0, early (blocks.0)": CNNFeatureTransformer(layer="blocks.0", input_size=96),
    "pretrained efficientnet_lite0, penultimate": CNNFeatureTransformer(layer="penultimate", input_size=96),
}
rows = []
for name, transformer in features.items():
    start = time.perf_counter()
    model = make_pipeline(transformer, StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    model.fit(X_train, y_train)
    accuracy = model.score(X_test, y_test)
    width = model[:-2].transform(X_test[:1]).shape[1]
    rows.append(
        {"features": name, "dimension": width, "held-out accuracy": accuracy, "seconds": time.perf_counter() - start}
    )
print(pd.DataFrame(rows).round({"held-out accuracy": 3, "seconds": 1}).to_string(index=False))

# %%
# By layer and training size
# --------------------------
# Held-out accuracy of each layer's codes with 5 to 40 training patches per
# texture. The codes of all three layers come from one forward pass per
# image (``cache_layers``); every later pipeline reads them from the cache.
#
# With enough patches the penultimate codes classify every test patch; with
# a handful, the mid-level ``blocks.4`` may do better on textures, which are
# what mid-level features describe. The rule is where to start;
# ``LayerSearchCV`` (see the example on digits) checks it on the labels.
layers = ["blocks.0", "blocks.4", "penultimate"]
scratch = tempfile.TemporaryDirectory()  # removed when the example ends
codes = CNNFeatureTransformer(input_size=96, cache=Path(scratch.name) / "codes.h5", cache_layers=layers)
classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
sizes = [5, 10, 40]
table = pd.DataFrame(index=pd.Index(sizes, name="training patches per class"), columns=layers, dtype=float)
for n in sizes:
    rows = np.concatenate([np.flatnonzero(y_train == texture)[:n] for texture in np.unique(y_train)])
    for layer in layers:
        model = make_pipeline(clone(codes).set_params(layer=layer), clone(classifier))
        table.loc[n, layer] = model.fit(X_train[rows], y_train[rows]).score(X_test, y_test)
print(table.round(3).to_string())
