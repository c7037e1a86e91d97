"""``skcnn demo``: transfer learning on real texture photos, in about a minute.

A linear classifier is trained on four kinds of features of the same
patches and scored on patches from the other half of each photo: raw
pixels, codes of a randomly initialised network, and codes of the
pretrained network from an early layer and from the penultimate layer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from .datasets import load_texture_patches
from .transformer import CNNFeatureTransformer

BACKBONE = "efficientnet_lite0"
EARLY_LAYER = "blocks.2"


@dataclass(frozen=True)
class DemoSettings:
    n_per_class: int = 50
    patch_size: int = 48
    input_size: int = 160


QUICK = DemoSettings(n_per_class=8, patch_size=32, input_size=64)


def _flatten_pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1) / 255.0


def feature_makers(input_size: int) -> dict[str, object]:
    """The four feature extractors compared, by the row name of the table."""

    def codes(**params):
        return CNNFeatureTransformer(backbone=BACKBONE, input_size=input_size, **params)

    return {
        "raw pixels": FunctionTransformer(_flatten_pixels),
        f"random-init {BACKBONE}, penultimate": codes(weights=None),
        f"pretrained {BACKBONE}, early ({EARLY_LAYER})": codes(layer=EARLY_LAYER),
        f"pretrained {BACKBONE}, penultimate": codes(),
    }


def run(settings: DemoSettings = DemoSettings(), print_fn=print) -> dict[str, float]:
    """Train and score each feature kind; print and return the accuracies."""
    data = {
        split: load_texture_patches(split, n_per_class=settings.n_per_class, patch_size=settings.patch_size)
        for split in ("train", "test")
    }
    (X_train, y_train), (X_test, y_test) = data["train"], data["test"]
    print_fn(
        f"Texture patches from scikit-image (brick, grass, gravel): {len(X_train)} train "
        f"(left halves), {len(X_test)} test (right halves), {settings.patch_size} px, "
        f"network input {settings.input_size} px.\n"
    )
    print_fn(f"{'features':<48} {'accuracy':>8} {'seconds':>8}")
    scores = {}
    for name, features in feature_makers(settings.input_size).items():
        start = time.perf_counter()
        model = make_pipeline(features, StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
        scores[name] = model.fit(X_train, y_train).score(X_test, y_test)
        print_fn(f"{name:<48} {scores[name]:>8.3f} {time.perf_counter() - start:>8.1f}")
    print_fn(
        f"\nChance level: {1 / len(set(y_train)):.3f}. Classifier: standardised "
        "LogisticRegression(C=0.1) on each kind of features."
    )
    return scores
