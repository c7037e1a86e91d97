"""
Where the model fails: label errors, worst images, duplicates, activation maps
==============================================================================

A score says how often a model is wrong, not where. ``skcnn.inspection``
takes a pipeline whose first step is a ``CNNFeatureTransformer`` (or a
``CNNClassifier``) and answers with a table or a picture: which training
labels are likely wrong (``label_issues``, by cleanlab's confident learning
on out-of-fold probabilities), which images the model gets most wrong
(``top_losses``), where in an image it found its evidence
(``class_activation_maps``, exact for a linear head on average-pooled
codes), and which test images are near copies of training images
(``find_duplicates``), which make a test score look better than it is.

The faults are planted, so that the findings can be checked: scikit-learn's
8 x 8 digits with 10% of the training labels changed
(``skcnn.datasets.flip_labels``), crops of scikit-image's photos with
re-encoded, resized and cropped copies (``near_copies``), and texture
patches beside flat grey (``load_half_textures``).
"""

# sphinx_gallery_thumbnail_number = 3

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import ConfusionMatrixDisplay
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skcnn import CNNFeatureTransformer
from skcnn.datasets import flip_labels, load_digit_images, load_half_textures, load_photo_crops, near_copies
from skcnn.inspection import find_duplicates, label_issues, plot_duplicates, plot_top_losses, top_losses

X_train, y_true = load_digit_images("train", n_per_class=40)
X_test, y_test = load_digit_images("test", test_per_class=20)
y_train, flipped = flip_labels(y_true, 0.1, random_state=0)
print(f"{len(X_train)} training digits, {len(flipped)} of their labels flipped; {len(X_test)} held out")

# Codes of an earlier layer (digits are unlike ImageNet), average-pooled:
# the class activation maps of a linear head on them are exact.
model = make_pipeline(
    CNNFeatureTransformer(layer="blocks.4", input_size=64),
    StandardScaler(),
    LogisticRegression(C=0.1, max_iter=3000),
)

# %%
# Likely label errors
# -------------------
# Each training image is scored by a model fit on the other folds; confident
# learning then flags the images whose given label those probabilities
# doubt, least likely first. The network runs once, not once per fold.
issues = label_issues(model, X_train, y_train, cv=3)
caught = np.isin(issues["position"], flipped).sum()
print(f"cleanlab flags {len(issues)} of {len(X_train)} images; {caught} of them were among the {len(flipped)} flipped")
print(issues.head(10).round(3).to_string(index=False))

# %%
# The worst held-out images, and where the model looked
# -----------------------------------------------------
# Fitted on the noisy labels. Each image is the network's input (the digit
# upscaled to 64 px), overlaid with the map of the class it predicted;
# titles read "given label / predicted", then the probability of the given
# label.
model.fit(X_train, y_train)
losses = top_losses(model, X_test, y_test)
print(f"held-out accuracy {model.score(X_test, y_test):.3f}")
print(losses.head().round(3).to_string(index=False))

# %%
plot_top_losses(losses, X_test, k=9, model=model)
plt.show()

# %%
# The confusion matrix of the held-out digits, from the same table.
ConfusionMatrixDisplay.from_predictions(losses["label"], losses["predicted"], colorbar=False)
plt.show()

# %%
# What the planted errors cost
# ----------------------------
# The same pipeline fit on the true labels (which a user does not have), on
# the noisy ones, and on the noisy ones without the images cleanlab flagged.
# A flagged image is a candidate to look at, not a verdict: dropping them
# all also drops correct labels, and leaves the flips it missed.
kept = np.setdiff1d(np.arange(len(X_train)), issues["position"])
costs = pd.DataFrame(
    {
        "training labels": ["true", "noisy (10% flipped)", "noisy, flagged images dropped"],
        "held-out accuracy": [
            clone(model).fit(X_train, y_true).score(X_test, y_test),
            model.score(X_test, y_test),
            clone(model).fit(X_train[kept], y_train[kept]).score(X_test, y_test),
        ],
    }
)
print(costs.round(3).to_string(index=False))

# %%
# Where the evidence lies
# -----------------------
# On digits the maps are coarse (4 x 4 at this input size). Images with a
# texture in one half and flat grey in the other say whether the maps point
# at the evidence: a model fit on such images should find each class in the
# textured half, whichever side it is on.
X_half, y_half, _ = load_half_textures(10, size=128, random_state=0)
X_half_test, y_half_test, _ = load_half_textures(3, size=128, random_state=1)
textures = make_pipeline(CNNFeatureTransformer(layer="blocks.4", input_size=128), LogisticRegression(max_iter=2000))
textures.fit(X_half, y_half)
plot_top_losses(top_losses(textures, X_half_test, y_half_test), X_half_test, k=6, model=textures)
plt.show()

# %%
# Near copies shared by training and test
# ---------------------------------------
# The training set holds crops of scikit-image's photos; the test set holds
# a JPEG re-encoded, a resized and a cropped copy of every fourth training
# crop, and crops of the same photos that are not in training (other
# pictures of the same scenes, not copies). ``find_duplicates`` compares
# codes of a spatial pyramid of a mid-level layer, where copies stand apart
# from other crops of the same scene. Photos of varied content only: most
# crops of the retina photo (its black surround) and of the Hubble deep
# field (dark sky) look alike, and would crowd the pairs.
photos = "astronaut coffee rocket camera coins immunohistochemistry chelsea brick grass gravel".split()
crops, _ = load_photo_crops(128, photos=photos)
train_photos = [crop for i, crop in enumerate(crops) if i % 4 != 1]
rng = np.random.default_rng(0)
test_photos, planted = [], set()
for i in range(0, len(train_photos), 4):
    for copy in near_copies(train_photos[i], rng):
        planted.add((i, len(test_photos)))
        test_photos.append(copy)
test_photos += crops[1::4]
pairs = find_duplicates(train_photos, test_photos)
pairs["planted"] = [pair in planted for pair in zip(pairs["index"], pairs["other_index"], strict=True)]
print(
    f"{len(train_photos)} training crops, {len(test_photos)} test images ({len(planted)} planted copies): "
    f"{len(pairs)} pairs found, {pairs['planted'].sum()} of them planted"
)
print(pairs.head().round(3).to_string(index=False))

# %%
# Four of the pairs found, from the most similar to the least.
spread = np.linspace(0, len(pairs) - 1, 4).round().astype(int)
plot_duplicates(pairs.iloc[spread], train_photos, test_photos)
plt.show()

# %%
# The pairs found that were not planted. In these photos they are pictures
# that do look alike (plain sky, neighbouring crops of one structure): the
# threshold measures likeness, and a pair above it is worth a look before
# the test score is trusted.
unplanted = pairs[~pairs["planted"]]
if len(unplanted):
    plot_duplicates(unplanted, train_photos, test_photos, k=3)
    plt.show()
