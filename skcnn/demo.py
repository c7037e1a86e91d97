"""``skcnn demo``: what the size x similarity table predicts, on real images, in about a minute.

Two small data sets, each scored on images the models never saw:

- **like ImageNet**, texture photo patches: a linear classifier on raw
  pixels, on codes of a randomly initialised network, and on codes of the
  pretrained network from an early and from the penultimate layer. The
  pretrained codes win, and the penultimate ones are as good as any.
- **unlike ImageNet**, 8 x 8 handwritten digits: raw pixels, the
  penultimate codes, the codes of an earlier layer, which beat them (the
  penultimate layer holds ImageNet's object parts, not strokes), and
  ``CNNClassifier``: with its defaults (for this small set, a head on the
  searched earlier layer's frozen codes) and with every layer fine-tuned.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from .datasets import load_digit_images, load_texture_patches
from .finetuning.classifier import CNNClassifier
from .frozen.transformer import CNNFeatureTransformer

BACKBONE = "efficientnet_lite0"
EARLY_LAYER = "blocks.2"
#: The layer that holds strokes rather than object parts; what
#: ``advise_layer`` advises for the digits (``benchmarks/RESULTS.md``).
STROKE_LAYER = "blocks.4"
AUTO = "CNNClassifier()"
FINETUNED = "CNNClassifier(unfreeze='all')"


@dataclass(frozen=True)
class DemoSettings:
    n_per_class: int = 50
    patch_size: int = 48
    input_size: int = 160
    digits_per_class: int = 50
    digits_test_per_class: int | None = None
    digits_input_size: int = 64
    finetune_epochs: int = 3


QUICK = DemoSettings(
    n_per_class=8,
    patch_size=32,
    input_size=64,
    digits_per_class=6,
    digits_test_per_class=6,
    digits_input_size=32,
    finetune_epochs=1,
)


def _flatten_pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1) / 255.0


def _linear(features) -> object:
    return make_pipeline(features, StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))


def _codes(input_size: int, **params) -> CNNFeatureTransformer:
    return CNNFeatureTransformer(backbone=BACKBONE, input_size=input_size, **params)


def feature_makers(input_size: int) -> dict[str, object]:
    """The four feature extractors compared on data like ImageNet, by row name."""
    return {
        "raw pixels": FunctionTransformer(_flatten_pixels),
        f"random-init {BACKBONE}, penultimate": _codes(input_size, weights=None),
        f"pretrained {BACKBONE}, early ({EARLY_LAYER})": _codes(input_size, layer=EARLY_LAYER),
        f"pretrained {BACKBONE}, penultimate": _codes(input_size),
    }


def _classifier(input_size: int, epochs: int, **params) -> CNNClassifier:
    return CNNClassifier(
        backbone=BACKBONE, input_size=input_size, max_epochs=epochs, random_state=0, progress=False, **params
    )


def unlike_models(input_size: int, epochs: int) -> dict[str, object]:
    """The models compared on data unlike ImageNet, by row name."""
    return {
        "raw pixels": _linear(FunctionTransformer(_flatten_pixels)),
        f"pretrained {BACKBONE}, penultimate": _linear(_codes(input_size)),
        f"pretrained {BACKBONE}, earlier ({STROKE_LAYER})": _linear(_codes(input_size, layer=STROKE_LAYER)),
        AUTO: _classifier(input_size, epochs),
        FINETUNED: _classifier(input_size, epochs, unfreeze="all"),
    }


def _strategy(model: CNNClassifier) -> str:
    what = "head only" if model.strategy_["unfreeze"] == "head" else "trained"
    return f" ({model.strategy_['layer']}, {what}; kept epoch {model.best_epoch_})"


def _table(models: dict, data, print_fn: Callable) -> dict[str, float]:
    (X_train, y_train), (X_test, y_test) = data
    print_fn(f"{'model':<72} {'accuracy':>8} {'seconds':>8}")
    scores = {}
    for name, model in models.items():
        start = time.perf_counter()
        scores[name] = model.fit(X_train, y_train).score(X_test, y_test)
        detail = _strategy(model) if isinstance(model, CNNClassifier) else ""
        print_fn(f"{name + detail:<72} {scores[name]:>8.3f} {time.perf_counter() - start:>8.1f}")
    print_fn(f"Chance level: {1 / len(set(y_train.tolist())):.3f}.\n")
    return scores


def run(settings: DemoSettings = DemoSettings(), print_fn=print) -> dict[str, dict[str, float]]:
    """Train and score every model on both data sets; print and return the accuracies."""
    textures = [
        load_texture_patches(split, n_per_class=settings.n_per_class, patch_size=settings.patch_size)
        for split in ("train", "test")
    ]
    print_fn(
        f"1. Like ImageNet: texture patches from scikit-image photos (brick, grass, gravel), "
        f"{len(textures[0][1])} train (left halves), {len(textures[1][1])} test (right halves), "
        f"{settings.patch_size} px, network input {settings.input_size} px. A standardised "
        "LogisticRegression(C=0.1) on each kind of features.\n"
    )
    like = {name: _linear(features) for name, features in feature_makers(settings.input_size).items()}
    scores = {"like ImageNet": _table(like, textures, print_fn)}
    digits = [
        load_digit_images(split, n_per_class=settings.digits_per_class, test_per_class=settings.digits_test_per_class)
        for split in ("train", "test")
    ]
    print_fn(
        f"2. Unlike ImageNet: scikit-learn's 8 x 8 handwritten digits, {len(digits[0][1])} train, "
        f"{len(digits[1][1])} test, network input {settings.digits_input_size} px. The same classifier, "
        f"and {BACKBONE} fine-tuned for at most {settings.finetune_epochs} epochs.\n"
    )
    models = unlike_models(settings.digits_input_size, settings.finetune_epochs)
    scores["unlike ImageNet"] = _table(models, digits, print_fn)
    like, unlike = scores["like ImageNet"], scores["unlike ImageNet"]
    print_fn(
        "The table predicts: small data like ImageNet, the penultimate codes; small data unlike it, an earlier "
        "layer's codes; large data, fine-tuning.\n"
        f"Here: like ImageNet, penultimate {like[f'pretrained {BACKBONE}, penultimate']:.3f} "
        f"(early layer {like[f'pretrained {BACKBONE}, early ({EARLY_LAYER})']:.3f}); unlike ImageNet, "
        f"{STROKE_LAYER} {unlike[f'pretrained {BACKBONE}, earlier ({STROKE_LAYER})']:.3f} against penultimate "
        f"{unlike[f'pretrained {BACKBONE}, penultimate']:.3f}; {AUTO} {unlike[AUTO]:.3f}, every layer fine-tuned "
        f"{unlike[FINETUNED]:.3f} (epoch 0 is the linear probe fine-tuning starts from)."
    )
    return scores
