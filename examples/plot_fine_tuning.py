"""
Fine-tuning with CNNClassifier: a linear probe first, then every layer
======================================================================

Frozen codes and a linear classifier are the first move of transfer
learning; ``CNNClassifier`` is the second: it trains the network itself,
with a new head, as a scikit-learn classifier. It follows LP-FT (linear
probe, then fine-tune): the new head starts as a *linear probe*, a
logistic regression on the frozen codes (``C`` tuned by cross-validation)
folded into one ``Linear`` layer, so that training starts from the
frozen-codes baseline instead of a random head that would send large,
random gradients into the pretrained layers. That started network is epoch
0, scored on a stratified validation split; then the unfrozen layers train
(pretrained layers at a tenth of the head's learning rate, warmup and
cosine decay), and the epoch that scores best on the validation split is
kept, epoch 0 included: fine-tuning that does not beat the probe leaves the
probe.

Here: scikit-learn's 8 x 8 handwritten digits (data unlike ImageNet), 50
per class, upscaled to 32 px, the packaged ImageNet-trained
EfficientNet-Lite0 with every layer unfrozen, and four epochs on the CPU.
"""

import matplotlib.pyplot as plt
import pandas as pd

from skcnn import CNNClassifier
from skcnn.datasets import load_digit_images

# Disjoint draws: the test split holds every digit the training split left out.
X_train, y_train = load_digit_images("train", n_per_class=50)
X_test, y_test = load_digit_images("test")
print(f"{len(X_train)} training and {len(X_test)} held-out digits")

# %%
# Fine-tune every layer
# ---------------------
# ``augment="auto"`` would measure that flips change digits and train on
# random crops alone; a half-cropped digit may still be another digit, so
# augmentation is turned off here (``augment`` also takes a policy name or a
# ``torchvision`` transform).
# ``strategy_`` says what trained and why ("as given": nothing was left to
# ``"auto"``).
tuned = CNNClassifier(
    input_size=32, layer="penultimate", unfreeze="all", augment=None, max_epochs=4, random_state=0
).fit(X_train, y_train)
print(tuned.strategy_)
print(f"validation accuracy of the started network (epoch 0, the probe): {tuned.probe_score_:.3f}")
print(f"kept: the weights of epoch {tuned.best_epoch_} of {tuned.n_epochs_}")

# %%
# ``history_`` has one row per epoch, from epoch 0, the probe it started
# from (its training loss is the probe's on the codes it was fit on; the
# learning rates of the parameter groups at the end of each epoch are left
# out here).
print(pd.DataFrame(tuned.history_).drop(columns="learning_rates").set_index("epoch").round(3).to_string())

# %%
# The same history as a figure; epoch 0 is the probe the network started
# from, and the dotted line marks the epoch kept.
tuned.plot_history()
plt.show()

# %%
# Against the linear probe alone
# ------------------------------
# ``unfreeze="head"`` is the frozen-codes baseline: the probe fit on every
# training image, no epochs. Both models are scored on the held-out digits.
probe = CNNClassifier(input_size=32, layer="penultimate", unfreeze="head", random_state=0).fit(X_train, y_train)
scores = pd.DataFrame(
    {
        "model": ["linear probe (unfreeze='head')", "fine-tuned (unfreeze='all')"],
        "held-out accuracy": [probe.score(X_test, y_test), tuned.score(X_test, y_test)],
    }
)
print(scores.round(3).to_string(index=False))

# %%
# With 50 images per class the gain, where there is one, is small and the
# validation split that judges the epochs holds 5 images per class: below
# ``skcnn.frozen.advice.FINE_TUNING_PAYS_FROM`` (200) images per class,
# ``unfreeze="auto"`` trains the head alone.
