"""
Data unlike ImageNet: codes from an earlier layer beat the penultimate ones
===========================================================================

The transfer-learning rule for a small target set dissimilar to the source
data (digits, X-rays, microscopy): the top layers of an ImageNet network hold
features specific to its 1000 object classes, so take codes from an earlier
layer. ``advise_layer`` applies the rule with measured inputs (the number of
images per class, and a similarity to ImageNet read off the network's own
batch-norm statistics); ``LayerSearchCV`` checks it on the labels: it taps
every candidate layer of the packaged ImageNet-trained EfficientNet-Lite0
(one per stage, from ``blocks.0`` to ``penultimate``) in one forward pass
per image, cross-validates a linear classifier on each layer's codes and
keeps the best.

The data are scikit-learn's 8 x 8 handwritten digits, upscaled to 64 px and
repeated over three channels by the transformer.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import RidgeClassifierCV
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skcnn import CNNFeatureTransformer, LayerSearchCV, advise_layer

digits = load_digits()
images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # values 0-16 -> 0-255
X_train, X_test, y_train, y_test = train_test_split(
    images, digits.target, train_size=300, test_size=300, stratify=digits.target, random_state=0
)
print(f"{len(X_train)} training digits, {len(X_test)} held out")

# %%
# What the rule says
# ------------------
print(advise_layer(X_train, y_train, input_size=64))

# %%
# What the labels say
# -------------------
# A ridge classifier tunes its regularisation by fast leave-one-out; the
# search's default classifier (logistic regression with ``C`` tuned over the
# search's folds, then an RBF SVM on the best codes) gives the same picture
# but takes minutes on a CPU. The
# cache keeps every candidate's codes for the comparisons below. The layers
# alone are searched here, average-pooled (the search's default also tries
# GeM pooling of each, for evidence that is small and local).
scratch = tempfile.TemporaryDirectory()  # removed when the example ends
cache = Path(scratch.name) / "codes.h5"
codes = CNNFeatureTransformer(input_size=64, cache=cache)
classifier = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=np.logspace(-1, 5, 7)))
search = LayerSearchCV(codes, classifier=classifier, poolings=["avg"], cv=5).fit(X_train, y_train)
print(f"codes of {len(search.cv_results_['layer'])} layers from one extraction ({search.extraction_time_:.1f} s)\n")
print(search.summary())

# %%
# Cross-validated accuracy against depth: the curve peaks before the top.
search.plot()
plt.show()

# %%
# On the held-out digits
# ----------------------
# The best layer against the penultimate one, and how that depends on the
# number of training images per class. Every pipeline reads its codes from
# the cache (``cache_layers`` stores all candidates the first time a test
# image is seen), so the table costs classifier fits only.
layers = list(search.cv_results_["layer"])
sizes = [5, 10, 30]
table = pd.DataFrame(index=pd.Index(sizes, name="training images per class"), columns=layers, dtype=float)
for n in sizes:
    rows = np.concatenate([np.flatnonzero(y_train == digit)[:n] for digit in range(10)])
    for layer in layers:
        transformer = clone(codes).set_params(layer=layer, cache_layers=layers)
        model = make_pipeline(transformer, clone(classifier)).fit(X_train[rows], y_train[rows])
        table.loc[n, layer] = model.score(X_test, y_test)
print(f"best layer by cross-validation: {search.best_layer_}; held-out accuracy:")
print(table.round(3).to_string())
