"""Which flips and rotations keep the class: what ``CNNClassifier(augment="auto")`` measures, per data set.

    python benchmarks/bench_symmetry.py
    pip install --no-deps animal-mnist elpv-dataset && python benchmarks/bench_symmetry.py

For each set, the penultimate codes of packaged EfficientNet-Lite0 at 128 px
(fp32) of up to 256 images, as they are and horizontally flipped,
vertically flipped and turned by 90 degrees; then
``skcnn.codes.invariance.label_preserving`` (a probe fit on one half,
scored on the other half's originals and views, both ways) and the policy
``augment="auto"`` takes from it. Sets: texture patches (brick, grass,
gravel), the shipped surface defects, handwritten digits, and where
installed, animal-mnist silhouettes and the ELPV solar cells.
"""

from __future__ import annotations

import numpy as np
import torch
from reporting import machine_line

import skcnn
from skcnn import CNNFeatureTransformer
from skcnn.codes.invariance import label_preserving, policy_for, symmetries_kept
from skcnn.datasets import load_digit_images, load_texture_patches, make_surface_defects
from skcnn.decoding.symmetry import GENERATORS

SAMPLE = 256


def data_sets():
    rng = np.random.default_rng(0)
    X, y = load_texture_patches(n_per_class=SAMPLE // 3, patch_size=64)
    yield "textures", X, y
    yield "surface defects", *make_surface_defects(SAMPLE, random_state=0)
    X, y = load_digit_images("train")
    rows = rng.choice(len(X), SAMPLE, replace=False)
    yield "digits", np.asarray(X)[rows], np.asarray(y)[rows]
    try:
        from bench_finetune import animal_mnist

        X, y, _, _ = animal_mnist(per_class=SAMPLE // 10)
        yield "animal-mnist", np.asarray(X), np.asarray(y)
    except Exception as exc:  # not installed
        print(f"animal-mnist left out: {exc}")
    try:
        from elpv_dataset.utils import load_dataset

        images, probabilities, _ = load_dataset()
        rows = rng.choice(len(images), SAMPLE, replace=False)
        yield "ELPV solar cells", images[rows], np.round(probabilities[rows] * 3).astype(int)
    except ImportError as exc:
        print(f"ELPV left out: {exc}")


def turned(images: np.ndarray, view) -> np.ndarray:
    """``view`` (on the last two axes) of gray (N, H, W) or colour (N, H, W, C) images."""
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if tensor.ndim == 4:
        return np.ascontiguousarray(view(tensor.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy())
    return np.ascontiguousarray(view(tensor).numpy())


def main() -> None:
    print(machine_line(skcnn))
    print(f"{'set':<18} {'original':>8} {'hflip':>7} {'vflip':>7} {'rot90':>7}  kept -> augment='auto' policy")
    for name, X, y in data_sets():
        transformer = CNNFeatureTransformer(input_size=128, precision="fp32", progress=False).fit(X)
        codes = transformer.transform(X)
        views = {symmetry: transformer.transform(turned(X, view)) for symmetry, view in GENERATORS.items()}
        targets = np.unique(y, return_inverse=True)[1]
        accuracies = label_preserving(codes, targets, views)
        kept = symmetries_kept(accuracies, len(targets))
        original = next(iter(accuracies.values()))[1]
        row = " ".join(f"{accuracies[symmetry][0]:>7.3f}" for symmetry in GENERATORS)
        print(f"{name:<18} {original:>8.3f} {row}  {sorted(kept)} -> {policy_for(kept)!r}", flush=True)


if __name__ == "__main__":
    main()
