"""Data unlike ImageNet: codes from an earlier layer beat the penultimate ones.

The seeds' rule for a small target set dissimilar to the source data
(digits, X-rays, microscopy): the top layers of an ImageNet network hold
features specific to its 1000 object classes, so take codes from an earlier
layer. ``LayerSearchCV`` checks the rule on the data: it taps every
candidate layer of the packaged ImageNet-trained EfficientNet-Lite0 (one per
stage, from ``blocks.0`` to ``penultimate``) in one forward pass per image,
cross-validates a linear classifier on each layer's codes and keeps the
best. The data are scikit-learn's 8 x 8 handwritten digits, upscaled to
64 px and repeated over three channels by the transformer.

About 10 seconds on a quiet 2-core CPU (a minute or two while other
processes load it):

    python examples/dissimilar_data_earlier_layers.py
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import RidgeClassifierCV
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skcnn import CNNFeatureTransformer, LayerSearchCV

digits = load_digits()
images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # values 0-16 -> 0-255
X_train, X_test, y_train, y_test = train_test_split(
    images, digits.target, train_size=300, test_size=300, stratify=digits.target, random_state=0
)

# A ridge classifier tunes its regularisation by fast leave-one-out; the
# default classifier (logistic regression with C tuned by nested
# cross-validation) gives the same picture but takes minutes on a CPU.
classifier = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=np.logspace(-1, 5, 7)))
search = LayerSearchCV(CNNFeatureTransformer(backbone="efficientnet_lite0", input_size=64), classifier=classifier, cv=5)
search.fit(X_train, y_train)

print(
    f"{len(X_train)} training digits, {len(X_test)} held out; codes of {len(search.cv_results_['layer'])} "
    f"layers from one extraction ({search.extraction_time_:.1f} s)\n"
)
print(search.summary())

penultimate = make_pipeline(CNNFeatureTransformer(layer="penultimate", input_size=64), classifier)
penultimate.fit(X_train, y_train)
print("\nheld-out accuracy")
print(f"  best layer ({search.best_layer_}): {search.score(X_test, y_test):.3f}")
print(f"  penultimate:{' ' * (len(search.best_layer_) + 2)} {penultimate.score(X_test, y_test):.3f}")
