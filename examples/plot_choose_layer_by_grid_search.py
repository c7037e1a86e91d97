"""
Choose the layer and pooling of the codes by cross-validation
=============================================================

``CNNFeatureTransformer`` is an ordinary scikit-learn transformer, so its
``layer`` and ``pooling`` are hyperparameters like any other: a
``GridSearchCV`` over them picks the codes that classify best. Here: texture
patches cut from scikit-image's CC0 photos (brick, grass, gravel), the
packaged ImageNet-trained EfficientNet-Lite0, and a linear SVM on the
standardised codes.

A grid of 4 layers x 2 poolings with 3 folds is 25 fits, each transforming
its images. With a code cache whose ``cache_layers`` are the candidate
layers, an image missing from the cache has the codes of all four layers
computed and stored in one forward pass: the network runs once per image and
pooling, and every other fit reads the cache.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from skcnn import CNNFeatureTransformer, CodeCache
from skcnn.datasets import load_texture_patches

# Patches from the left half of each photo train, from the right half test:
# no pixel is shared.
X_train, y_train = load_texture_patches("train", n_per_class=30, patch_size=48)
X_test, y_test = load_texture_patches("test", n_per_class=30, patch_size=48)
print(f"{len(X_train)} training and {len(X_test)} test patches of {X_train.shape[1]} px")

# %%
# The grid search
# ---------------
LAYERS = ["blocks.1", "blocks.3", "blocks.5", "penultimate"]
scratch = tempfile.TemporaryDirectory()  # removed when the example ends
cache = Path(scratch.name) / "codes.h5"
pipe = make_pipeline(
    CNNFeatureTransformer(input_size=96, cache=cache, cache_layers=LAYERS),
    StandardScaler(),
    LinearSVC(C=0.01),
)
grid = GridSearchCV(
    pipe,
    {"cnnfeaturetransformer__layer": LAYERS, "cnnfeaturetransformer__pooling": ["avg", "max"]},
    cv=3,
)
grid.fit(X_train, y_train)

results = pd.DataFrame(grid.cv_results_["params"]).rename(columns=lambda name: name.split("__")[1])
results["mean accuracy"] = grid.cv_results_["mean_test_score"]
results["std"] = grid.cv_results_["std_test_score"]
print(results.round(3).to_string(index=False))

# %%
# The same scores as a figure, one line per pooling.
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
for pooling, rows in results.groupby("pooling"):
    ax.errorbar(rows["layer"], rows["mean accuracy"], yerr=rows["std"], marker="o", capsize=3, label=pooling)
ax.set(xlabel="layer of efficientnet_lite0", ylabel="cross-validated accuracy (3 folds)")
ax.legend(title="pooling")
plt.show()

# %%
# The best setting, refit on all training patches, on the held-out ones:
print(f"best: {grid.best_params_}")
print(f"held-out accuracy of the best pipeline: {grid.score(X_test, y_test):.3f}")

# %%
# What the cache holds
# --------------------
# One configuration per layer and pooling. Each holds the codes of the 90
# training patches, computed for all four layers in one forward pass per
# image and pooling; those of the best pipeline's pooling also hold the 90
# held-out patches, which its score ran through the network once.
# Without the cache, each of the 25 fits would run the network on its
# images again.
configs = pd.DataFrame(
    [
        {"layer": c.attrs["layer"], "pooling": c.attrs["pooling"], "images": c.n_codes, "width": c.width}
        for c in CodeCache(cache).configs()
    ]
)
print(configs.to_string(index=False))
