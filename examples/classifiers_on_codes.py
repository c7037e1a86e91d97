"""Which classifier on the codes: linear SVM, logistic regression, naive Bayes.

The seeds train a linear SVM or a softmax (logistic regression) classifier on
CNN codes, and mention even a Bayes classifier. Here all three run on the
same codes of the packaged ImageNet-trained EfficientNet-Lite0, from two
layers (``blocks.4`` and the penultimate layer), on scikit-learn's 8 x 8
digits upscaled to 64 px; accuracy is measured on held-out digits.

The codes are computed once: the first pipeline stores them in an HDF5
cache (in a temporary folder; ``cache_layers`` stores both layers in the
same forward pass), and every other pipeline reads them from there. The last
column shows it: images the network ran on during that pipeline's fit and
score.

About 10 seconds on a quiet 2-core CPU (under a minute while other
processes load it):

    python examples/classifiers_on_codes.py
"""

import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from skcnn import CNNFeatureTransformer

digits = load_digits()
images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # values 0-16 -> 0-255
X_train, X_test, y_train, y_test = train_test_split(
    images, digits.target, train_size=300, test_size=300, stratify=digits.target, random_state=0
)
LAYERS = ["blocks.4", "penultimate"]
CLASSIFIERS = {
    "LinearSVC": lambda: make_pipeline(StandardScaler(), LinearSVC(C=0.01)),
    "LogisticRegression": lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)),
    "GaussianNB": lambda: GaussianNB(),
}

print(f"{len(X_train)} training digits, {len(X_test)} held out\n")
print(f"{'layer':<12} {'classifier':<19} {'held-out accuracy':>18} {'seconds':>8}  network runs (images)")
with tempfile.TemporaryDirectory() as folder:
    cache = Path(folder) / "codes.h5"
    for layer in LAYERS:
        for name, classifier in CLASSIFIERS.items():
            start = time.perf_counter()
            cnn = CNNFeatureTransformer(layer=layer, input_size=64, cache=cache, cache_layers=LAYERS)
            model = make_pipeline(cnn, classifier()).fit(X_train, y_train)
            computed = cnn.cache_info_.computed
            accuracy = model.score(X_test, y_test)
            computed += cnn.cache_info_.computed
            print(f"{layer:<12} {name:<19} {accuracy:>18.3f} {time.perf_counter() - start:>8.1f}  {computed}")
