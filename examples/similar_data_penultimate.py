"""Data like ImageNet: a linear classifier on the penultimate codes.

The seeds' rule for a small target set similar to the source data (photos):
keep the pretrained network frozen, take its top codes (the input of the
classifier head) and train a linear classifier on them. Here the target is
scikit-image's CC0 texture photos (brick, grass, gravel): patches from the
left half of each photo train, patches from the right half test. The
packaged ImageNet-trained EfficientNet-Lite0 gives the codes; an early layer
(``blocks.0``, right after the stem), the same network with random weights
and the raw pixels are the baselines.

About 10 seconds on a quiet 2-core CPU (a minute or two while other
processes load it):

    python examples/similar_data_penultimate.py
"""

import time

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from skcnn import CNNFeatureTransformer
from skcnn.datasets import load_texture_patches

X_train, y_train = load_texture_patches("train", n_per_class=40, patch_size=32)
X_test, y_test = load_texture_patches("test", n_per_class=40, patch_size=32)
print(
    f"{len(X_train)} training and {len(X_test)} test patches of {X_train.shape[1]} px, "
    f"classes {sorted(set(y_train.tolist()))}"
)


def flatten(images):
    return images.reshape(len(images), -1).astype("float32")


features = {
    "raw pixels": FunctionTransformer(flatten),
    "random-init efficientnet_lite0, penultimate": CNNFeatureTransformer(weights=None, input_size=96),
    "pretrained efficientnet_lite0, early (blocks.0)": CNNFeatureTransformer(layer="blocks.0", input_size=96),
    "pretrained efficientnet_lite0, penultimate": CNNFeatureTransformer(layer="penultimate", input_size=96),
}

print(f"\n{'features':<48} {'dimension':>9} {'held-out accuracy':>18} {'seconds':>8}")
for name, transformer in features.items():
    start = time.perf_counter()
    model = make_pipeline(transformer, StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    model.fit(X_train, y_train)
    accuracy = model.score(X_test, y_test)
    width = model[:-2].transform(X_test[:1]).shape[1]
    print(f"{name:<48} {width:>9} {accuracy:>18.3f} {time.perf_counter() - start:>8.1f}")
